import Foundation
import LHEngine
import LHProto
import Logging
import NIOCore
import PostgresNIO
import Synchronization
import Testing

@testable import LHPostgresStore
@testable import LHStore

/// Fencing at the SQL level, and what the PostgreSQL store refuses at start.
@Suite struct PostgresFencingTests {
    static let logger = Logger(label: "test")

    static func batch(_ id: String, _ status: Littlehorse_LHStatus = .running) -> LHWriteBatch {
        var b = LHWriteBatch()
        b.wfRuns[id] = WfRunState(
            wfRun: .with {
                $0.id.id = id; $0.status = status
            })
        return b
    }

    /// A takeover waits for a write in flight of the member it replaces, and
    /// then sees it; the old member writes nothing after.
    @Test func aTakeoverWaitsForTheCommitInFlightAndThenSeesIt() async throws {
        if PostgresFixture.skipped(#function) { return }
        let url = try await PostgresFixture.freshDatabase()
        // The schema, then two members by hand (no lease renewal): A owns
        // every partition with a 1 s lease, B is live for a minute.
        let setup = try await PostgresFixture.open(url, partitions: 4)
        setup.close()
        let a = try await PostgresFixture.connect(url)
        let b = try await PostgresFixture.connect(url)
        defer {
            Task {
                try? await a.close()
                try? await b.close()
            }
        }
        try await a.query(
            "INSERT INTO lh_members (id, address, lease_until, state) VALUES ('A', '', now() + interval '1 second', 'live')",
            logger: Self.logger)
        try await a.query(
            "INSERT INTO lh_members (id, address, lease_until, state) VALUES ('B', '', now() + interval '60 seconds', 'live')",
            logger: Self.logger)
        let claimedByA = try await a.query("SELECT p, epoch FROM lh_claim('A', 1, false)", logger: Self.logger)
            .collect().map { try $0.decode((Int32, Int64).self) }
        #expect(claimedByA.count == 4)
        let parts = claimedByA.map(\.0)
        let epochs = claimedByA.map(\.1)

        // A's write in flight: its fence passed (the member row share-locked,
        // as lh_fence's first step; taken without the lease check, which a
        // loaded machine could make late), a row written, not committed yet.
        try await a.query("BEGIN", logger: Self.logger)
        _ = try await a.query("SELECT 1 FROM lh_members WHERE id = 'A' FOR SHARE", logger: Self.logger).collect()
        try await a.query(
            "INSERT INTO wf_runs VALUES ('in-flight', 0, 'spec', 0, 0, 1, 0, '\\x00')", logger: Self.logger)
        // A's lease runs out; B claims: it must wait for A's transaction.
        try await Task.sleep(for: .milliseconds(2_300))
        let done = Flag()
        let claim = Task {
            defer { done.set() }
            return try await b.query("SELECT p, epoch FROM lh_claim('B', 60, true)", logger: Self.logger)
                .collect().map { try $0.decode((Int32, Int64).self) }
        }
        try await Task.sleep(for: .milliseconds(700))
        #expect(!done.isSet, "the takeover did not wait for the write in flight")
        try await a.query("COMMIT", logger: Self.logger)
        let claimedByB = try await claim.value
        #expect(claimedByB.count == 4)
        #expect(claimedByB.allSatisfy { p, e in epochs[parts.firstIndex(of: p)!] + 1 == e })
        let seen = try await b.query("SELECT count(*) FROM wf_runs WHERE id = 'in-flight'", logger: Self.logger)
            .collect().map { try $0.decode(Int64.self) }
        #expect(seen == [1])
        // A is dead: its next write is fenced (LHF01), whatever its epochs.
        do {
            _ = try await a.query("SELECT lh_fence('A', \(parts), \(epochs))", logger: Self.logger).collect()
            Issue.record("a dead member's write was not fenced")
        } catch let error as PSQLError {
            #expect(error.serverInfo?[.sqlState] == "LHF01")
        }
    }

    /// The store itself: once another member took over (the old one marked
    /// dead, as a takeover does), the old store's next commit is refused,
    /// it steps down, and the new owner has every acknowledged write.
    @Test func theOldOwnersNextCommitFailsAndItStepsDown() async throws {
        if PostgresFixture.skipped(#function) { return }
        let url = try await PostgresFixture.freshDatabase()
        let old = try await PostgresFixture.open(url, ttl: 30)
        let steppedDown = Box<String?>(nil)
        old.onStepDown { reason in steppedDown.set(reason) }
        try old.commit(Self.batch("before"))
        try await PostgresFixture.run(url, "UPDATE lh_members SET state = 'dead' WHERE id = '\(old.memberId)'")

        #expect(throws: StoreError.self) { try old.commit(Self.batch("after")) }
        #expect(old.isFenced)
        #expect(steppedDown.value?.contains("dead") == true)
        #expect(throws: StoreError.self) { try old.put(taskDef: .with { $0.id.name = "late" }) }

        let new = try await PostgresFixture.open(url, ttl: 30)
        defer { new.close() }
        #expect(try new.wfRun("before") != nil)
        #expect(try new.wfRun("after") == nil)
        try new.commit(Self.batch("after"))
        #expect(try new.wfRun("after") != nil)
        old.close()
    }

    /// An epoch bumped under the owner (a partition moved) fences its writes to it.
    @Test func aStaleEpochIsFenced() async throws {
        if PostgresFixture.skipped(#function) { return }
        let url = try await PostgresFixture.freshDatabase()
        let store = try await PostgresFixture.open(url, ttl: 30)
        defer { store.close(leaving: false) }
        let p = PostgresStore.partition(of: "moved", count: store.partitionCount)
        try await PostgresFixture.run(url, "UPDATE lh_partitions SET epoch = epoch + 1 WHERE p = \(p)")
        do {
            try store.commit(Self.batch("moved"))
            Issue.record("a write at a stale epoch was not fenced")
        } catch let error as StoreError {
            #expect(error.message.contains("no longer owns"), "\(error)")
        }
        #expect(store.isFenced)
    }

    /// Fair shares: a second member on the same database owns nothing
    /// until the first, at its next round, releases what is over its share
    /// (⌈8 / 2⌉ = 4); then each owns 4, each names the other as the owner of
    /// the other's partitions, reads are served by both, a commit to the
    /// other's partition is refused (not a fence), and when the first
    /// leaves, the second takes its share at its next round.
    @Test func twoMembersShareThePartitionsAndALeaversShareIsTakenOver() async throws {
        if PostgresFixture.skipped(#function) { return }
        let url = try await PostgresFixture.freshDatabase()
        // A long lease: a member that waited for it would take 21 s.
        var options = PostgresStore.Options(url: url)
        options.partitions = 8
        options.leaseTTL = 20
        options.address = "127.0.0.1:7001"
        let first = try PostgresStore.open(options, logger: Self.logger)
        #expect(first.ownsAll)
        first.serve(partitions: Array(0..<8))
        #expect(first.ownsMetadata)
        try first.commit(Self.batch("kept"))
        options.address = "127.0.0.1:7002"
        let second = try PostgresStore.open(options, logger: Self.logger)
        defer { second.close() }
        #expect(second.ownedCount == 0 && !second.ownsMetadata && !second.owns(wfRunId: "kept"))
        #expect(second.ownerAddress(of: nil) == "127.0.0.1:7001")
        #expect(second.members.map(\.address) == ["127.0.0.1:7001", "127.0.0.1:7002"])
        // The second's round: nothing ownerless, nothing to load.
        let early = second.rebalance()
        #expect(early.toLoad.isEmpty && early.toRelease.isEmpty && early.liveMembers == 2)
        // The first's round: 4 over its share, the highest first, never 0 first.
        let over = first.rebalance()
        #expect(over.liveMembers == 2 && over.toLoad.isEmpty)
        #expect(over.toRelease == [7, 6, 5, 4], "\(over.toRelease)")
        try first.release(partitions: over.toRelease)
        #expect(first.ownedCount == 4 && first.ownsMetadata)
        let taken = second.rebalance()
        #expect(taken.toLoad == [4, 5, 6, 7] && taken.toRelease.isEmpty, "\(taken.toLoad)")
        _ = try second.load(partitions: taken.toLoad)
        second.serve(partitions: taken.toLoad)
        _ = first.rebalance()
        // Ids whose partitions are each member's.
        let ids = (0..<200).map { "wf-\($0)" }
        let firsts = ids.first { PostgresStore.partition(of: $0, count: 8) < 4 }!
        let seconds = ids.first { PostgresStore.partition(of: $0, count: 8) >= 4 }!
        #expect(first.owns(wfRunId: firsts) && !first.owns(wfRunId: seconds))
        #expect(second.owns(wfRunId: seconds) && !second.owns(wfRunId: firsts))
        #expect(first.ownerAddress(of: seconds) == "127.0.0.1:7002")
        #expect(second.ownerAddress(of: firsts) == "127.0.0.1:7001")
        #expect(first.ownerAddress(of: firsts) == nil, "the owner forwards to itself")
        try second.commit(Self.batch(seconds))
        try first.commit(Self.batch(firsts))
        // Reads from any member (no id filter may hide another's commit).
        #expect(try second.wfRun("kept") != nil && second.wfRun(firsts) != nil)
        #expect(try first.wfRun(seconds) != nil)
        let another = ids.filter { PostgresStore.partition(of: $0, count: 8) < 4 }[1]
        do {
            try second.commit(Self.batch(another))
            Issue.record("a member committed to another's partition")
        } catch let error as StoreError {
            #expect(error.message.contains("does not own partition"), "\(error)")
        }
        #expect(!second.isFenced, "a refused write to another's partition is not a fence")
        // The first leaves (SIGTERM): the second takes everything at once.
        let start = Date()
        first.close()
        var plan = second.rebalance()
        while plan.toLoad.isEmpty && Date().timeIntervalSince(start) < 12 {
            try await Task.sleep(for: .milliseconds(200))
            plan = second.rebalance()
        }
        #expect(plan.toLoad == [0, 1, 2, 3], "\(plan.toLoad)")
        #expect(Date().timeIntervalSince(start) < 12, "the second waited for the lease after a graceful leave")
        _ = try second.load(partitions: plan.toLoad)
        second.serve(partitions: plan.toLoad)
        #expect(second.ownsAll && second.owns(wfRunId: firsts) && second.ownsMetadata)
        try second.commit(Self.batch("now-mine-" + firsts))
    }

    /// `--single-owner`: the first member keeps every partition while it
    /// lives (no release to a joining member, a hot standby), and the
    /// standby takes them all when it leaves.
    @Test func aSingleOwnerKeepsEveryPartitionAndAStandbyTakesThemAll() async throws {
        if PostgresFixture.skipped(#function) { return }
        let url = try await PostgresFixture.freshDatabase()
        var options = PostgresStore.Options(url: url)
        options.partitions = 8
        options.leaseTTL = 20
        options.fairShare = false
        let first = try PostgresStore.open(options, logger: Self.logger)
        let second = try PostgresStore.open(options, logger: Self.logger)
        defer { second.close() }
        #expect(first.ownsAll && second.ownedCount == 0)
        let kept = first.rebalance()
        #expect(kept.liveMembers == 2 && kept.toRelease.isEmpty && kept.owned == 8)
        #expect(second.rebalance().owned == 0)
        first.close()
        #expect(second.rebalance().toLoad == Array(0..<8))
    }

    /// A server listening on port 0 knows its address only once bound: till
    /// it advertises it, peers see no address for it (no forwarding to
    /// `HOST:0`, which once failed a request of a cluster test), then the
    /// bound one.
    @Test func anAddressOfPortZeroIsLeftOutUntilTheServerAdvertisesItsBoundPort() async throws {
        if PostgresFixture.skipped(#function) { return }
        let url = try await PostgresFixture.freshDatabase()
        var options = PostgresStore.Options(url: url)
        options.partitions = 8
        options.leaseTTL = 20
        options.fairShare = false
        options.address = "127.0.0.1:0"
        let owner = try PostgresStore.open(options, logger: Self.logger)
        defer { owner.close() }
        #expect(owner.ownsAll)
        options.address = "127.0.0.1:7003"
        let standby = try PostgresStore.open(options, logger: Self.logger)
        defer { standby.close() }
        #expect(
            standby.ownerAddress(of: nil) == nil, "an owner at port 0 named: \(standby.ownerAddress(of: nil) ?? "")")
        #expect(standby.members.map(\.address) == ["", "127.0.0.1:7003"])
        owner.advertise("127.0.0.1:7004")
        standby.readOwners()
        #expect(standby.ownerAddress(of: nil) == "127.0.0.1:7004")
        #expect(PostgresStore.portIsKnown("[::1]:2023") && !PostgresStore.portIsKnown("0.0.0.0:0"))
        #expect(!PostgresStore.portIsKnown("localhost"))
    }

    /// A joining member forgets members that ended over a week ago (a row
    /// per process start would pile up), and keeps recent ones.
    @Test func membersThatEndedAWeekAgoAreForgotten() async throws {
        if PostgresFixture.skipped(#function) { return }
        let url = try await PostgresFixture.freshDatabase()
        try await PostgresFixture.open(url).close()
        try await PostgresFixture.run(
            url,
            """
            INSERT INTO lh_members (id, address, lease_until, state, ended_at) VALUES
              ('old', '', now() - interval '8 days', 'dead', now() - interval '8 days'),
              ('recent', '', now() - interval '1 day', 'left', now() - interval '1 day')
            """)
        let store = try await PostgresFixture.open(url)
        defer { store.close() }
        let c = try await PostgresFixture.connect(url)
        defer { Task { try? await c.close() } }
        let ids = try await c.query("SELECT id FROM lh_members WHERE id IN ('old', 'recent')", logger: Self.logger)
            .collect().map { try $0.decode(String.self) }
        #expect(ids == ["recent"])
    }

    @Test func anotherPartitionCountOrANewerSchemaIsRefusedAndLeftAlone() async throws {
        if PostgresFixture.skipped(#function) { return }
        let url = try await PostgresFixture.freshDatabase()
        try await PostgresFixture.open(url, partitions: 8).close()
        do {
            _ = try await PostgresFixture.open(url, partitions: 16)
            Issue.record("another partition count was accepted")
        } catch let error as StoreError {
            #expect(error.message.contains("created with 8 partitions"), "\(error)")
            #expect(error.message.contains("--partitions 16"), "\(error)")
        }
        try await PostgresFixture.run(url, "INSERT INTO lh_migrations (name) VALUES ('v99-from-the-future')")
        do {
            _ = try await PostgresFixture.open(url, partitions: 8)
            Issue.record("a newer schema was accepted")
        } catch let error as StoreError {
            #expect(error.code == .newerFormat)
            #expect(error.message.contains("v99-from-the-future"), "\(error)")
        }
    }

    @Test func anUnreachableDatabaseIsOneClearError() async throws {
        // A port nothing listens on (bound and closed at once).
        let port = 1
        do {
            _ = try await PostgresFixture.open("postgres://lh@127.0.0.1:\(port)/postgres")
            Issue.record("an unreachable database was accepted")
        } catch let error as StoreError {
            #expect(error.message.contains("cannot reach PostgreSQL"), "\(error)")
            #expect(error.message.contains("127.0.0.1:\(port)"), "\(error)")
        }
    }
}

/// A value shared with closures that outlive the test's frame.
final class Box<T: Sendable>: Sendable {
    private let m: Mutex<T>
    init(_ value: T) { m = Mutex(value) }
    var value: T { m.withLock { $0 } }
    func set(_ value: T) { m.withLock { $0 = value } }
    func update(_ change: (inout T) -> Void) { m.withLock { change(&$0) } }
}

final class Flag: Sendable {
    private let box = Box(false)
    func set() { box.set(true) }
    var isSet: Bool { box.value }
}
