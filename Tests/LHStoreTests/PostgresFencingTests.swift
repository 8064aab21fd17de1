import Foundation
import LHEngine
import LHPostgresStore
import LHProto
import Logging
import NIOCore
import PostgresNIO
import Synchronization
import Testing

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
        let claimedByA = try await a.query("SELECT p, epoch FROM lh_claim('A', 1)", logger: Self.logger)
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
            return try await b.query("SELECT p, epoch FROM lh_claim('B', 60)", logger: Self.logger)
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

    /// A second server on the same database opens as a standby while the
    /// first lives: it owns nothing, reads what the first wrote, names the
    /// first as the owner, and takes over at once when the first leaves.
    @Test func aStandbyReadsAndTakesOverWhenTheOwnerLeaves() async throws {
        if PostgresFixture.skipped(#function) { return }
        let url = try await PostgresFixture.freshDatabase()
        // A long lease: a standby that waited for it would take 21 s.
        var options = PostgresStore.Options(url: url)
        options.partitions = 8
        options.leaseTTL = 20
        options.address = "127.0.0.1:7001"
        let first = try PostgresStore.open(options, logger: Self.logger)
        #expect(first.ownsAll && first.ownsMetadata)
        try first.commit(Self.batch("kept"))
        options.address = "127.0.0.1:7002"
        let second = try PostgresStore.open(options, logger: Self.logger)
        defer { second.close() }
        #expect(!second.ownsAll && !second.ownsMetadata && !second.owns(wfRunId: "kept"))
        #expect(second.ownerAddress(of: "kept") == "127.0.0.1:7001")
        #expect(second.ownerAddress(of: nil) == "127.0.0.1:7001")
        #expect(first.ownerAddress(of: "kept") == nil, "the owner forwards to itself")
        // Reads from any member: the first's commit, and one made after the
        // standby opened (no id filter of the standby may hide it).
        #expect(try second.wfRun("kept") != nil)
        try first.commit(Self.batch("later"))
        #expect(try second.wfRun("later") != nil)
        do {
            try second.commit(Self.batch("not-mine"))
            Issue.record("a standby committed")
        } catch let error as StoreError {
            #expect(error.message.contains("does not own partition"), "\(error)")
        }
        #expect(!second.isFenced, "a refused write of a standby is not a fence")
        let told = Box<[String]>([])
        let ticks = Box(0)
        let takeover = Task {
            try await second.waitForOwnership(waiting: { line in told.update { $0.append(line) } }) {
                ticks.update { $0 += 1 }
            }
        }
        // Ticks every half second (slower when the machine is loaded).
        let waitStart = Date()
        while (ticks.value < 2 || told.value.isEmpty) && Date().timeIntervalSince(waitStart) < 20 {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(told.value.first?.contains(first.memberId) == true, "\(told.value)")
        #expect(told.value.first?.contains("127.0.0.1:7001") == true, "\(told.value)")
        #expect(ticks.value >= 2, "the standby's tick ran \(ticks.value) times in 20 s")
        #expect(!second.ownsAll, "the standby took over while the owner lived")
        let start = Date()
        first.close()
        try await takeover.value
        // Quick, even on a loaded machine (5.7 s seen under the full suite):
        // far from the lease.
        #expect(Date().timeIntervalSince(start) < 12, "the standby waited for the lease after a graceful leave")
        #expect(second.ownsAll && second.owns(wfRunId: "kept"))
        #expect(try second.wfRun("kept") != nil)
        try second.commit(Self.batch("now-mine"))
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
