import Foundation
import LHEngine
import LHProto
import LHStore
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization

/// The store on PostgreSQL (`lh-server --store postgres://...`): the same
/// store protocol as the embedded SQLite store, for servers that share one
/// database.
///
/// Every WfRun belongs to one of a fixed number of partitions (a hash of its
/// id; the count is fixed when the database is first used). A server is a
/// *member* with a lease on PostgreSQL's clock; it writes only the
/// partitions it claimed, and every write is *fenced*: one `lh_commit` call
/// per group commit share-locks the member's row and checks its lease and
/// partition epochs first, so a server that lost its partitions (killed,
/// paused, cut off) can never commit again. Each live member owns a fair
/// share of the partitions (``rebalance()``): a joining member takes its
/// share from members over theirs (they release after their commits in
/// flight), and the partitions of a member that left (SIGTERM) or whose
/// lease ran out (kill -9) are claimed by the others. Every member serves
/// reads and forwards commands to the owner (``LHClusterMembership``).
public final class PostgresStore: LHStorage, LHClusterMembership, Sendable, CustomStringConvertible {
    public struct Options: Sendable {
        public var url: String
        /// Partitions of a new cluster (a database used before keeps its own
        /// count; another count is refused).
        public var partitions = 64
        /// Seconds a member's lease runs; renewed every fifth of it.
        public var leaseTTL = 5.0
        /// What other members and operators see as this server's address
        /// (HOST:PORT). One whose port is 0 (bound later) is recorded empty
        /// until `advertise` names the bound port: peers never forward to a
        /// port nothing listens on, they wait for the address instead.
        public var address = ""
        /// Whether a member takes only its fair share (⌈partitions / live
        /// members⌉) and releases the rest; false: the first member owns
        /// every partition and the others wait as standbys.
        public var fairShare = true
        public init(url: String) { self.url = url }
    }

    public let settings: PostgresSettings
    public var description: String { "postgres://\(settings.where) (member \(memberId))" }

    /// This process's member id (new at every start).
    public let memberId: String
    public let partitionCount: Int
    let options: Options
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    /// Group commits and metadata (one statement each).
    let writer: PGLink
    /// Reads, spread over a few connections.
    let readers: [PGLink]
    private let nextReader = Atomic<Int>(0)
    /// Lease renewal and claims, on a connection of their own so that they
    /// never wait behind a commit.
    let membership: PGLink
    /// The partitions this member owns and the epoch it claimed each at.
    let epochs = Mutex<[Int32: Int64]>([:])
    private let orphanIds = Mutex<Set<String>>([])
    private let wfRunIds = Mutex(IdFilter())
    /// The partitions this member serves: owned, loaded by the server
    /// (their queues and timers, and the id filters here) and not being
    /// released. Only for these are the id filters complete (a lookup of an
    /// id they lack is answered without PostgreSQL).
    private let served = Mutex<Set<Int32>>([])
    /// The live members as last read (this one included).
    private let liveMembers = Mutex<[LHClusterMember]>([])
    /// Claimed from a member that died (not released) and not served yet.
    private let fromDead = Mutex<Set<Int32>>([])
    /// Live owners' advertised addresses by partition (read at every claim
    /// tick and after a forward to a stale owner failed).
    private let owners = Mutex<[Int32: String]>([:])
    /// Partitions owned by each live member (this one included), as last read.
    private let ownedByMember = Mutex<[String: Int]>([:])
    private let state = Mutex(Lifecycle())
    private let fenced = Atomic<Bool>(false)

    struct Lifecycle {
        var closed = false
        var stepDown: (@Sendable (String) -> Void)?
    }

    /// Connects, migrates, joins as a member and claims its share of the
    /// partitions no live member owns (all of them for the first member).
    /// The server loads what it claimed (``load(partitions:)``, then
    /// ``serve(partitions:)``) and calls ``rebalance()`` from then on.
    public static func open(_ options: Options, logger: Logger) throws -> PostgresStore {
        let settings: PostgresSettings
        do {
            settings = try PostgresSettings(url: options.url)
        } catch let error as PostgresSettingsError {
            throw StoreError(.invalidArgument, error.description)
        }
        let store = try PostgresStore(options, settings: settings, logger: logger)
        do {
            try store.migrate()
            try store.join()
            _ = try store.claim()
            store.readOwners()
        } catch {
            store.close(leaving: false)
            throw error
        }
        return store
    }

    private init(_ options: Options, settings: PostgresSettings, logger: Logger) throws {
        self.options = options
        self.settings = settings
        self.logger = logger
        partitionCount = options.partitions
        memberId = UUID().uuidString.lowercased()
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let session = ["SET synchronous_commit = on", "SET application_name = 'lh-server'"]
        writer = PGLink(
            settings, name: "writer", group: group, logger: logger,
            session: session + ["SET statement_timeout = '30s'"])
        let group = self.group
        readers = (0..<3).map {
            PGLink(settings, name: "reader-\($0)", group: group, logger: logger, session: session)
        }
        membership = PGLink(
            settings, name: "membership", group: group, logger: logger,
            session: session + ["SET statement_timeout = '10s'", "SET lock_timeout = '5s'"])
        do {
            _ = try writer.connection()
        } catch let error as PGError {
            try? group.syncShutdownGracefully()
            throw StoreError(.unreadable, "cannot reach PostgreSQL: \(error.message)")
        }
    }

    /// What to do when this member has lost its partitions (another took
    /// over): lh-server exits so that it can come back as a new member.
    public func onStepDown(_ handler: @escaping @Sendable (String) -> Void) {
        state.withLock { $0.stepDown = handler }
    }

    /// Whether this member lost its partitions: every write is refused.
    public var isFenced: Bool { fenced.load(ordering: .acquiring) }

    func stepDown(_ reason: String) {
        guard !fenced.exchange(true, ordering: .acquiringAndReleasing) else { return }
        epochs.withLock { $0 = [:] }
        logger.critical(
            "this server lost its partitions to another member and steps down: \(reason)",
            metadata: ["lh.member": "\(memberId)"])
        state.withLock { $0.stepDown }?(reason)
    }

    /// Leaves the cluster: on a graceful stop (`leaving`) its partitions are
    /// handed over at once instead of after its lease.
    public func close(leaving: Bool = true) {
        let wasClosed = state.withLock { s -> Bool in
            defer { s.closed = true }
            return s.closed
        }
        if wasClosed { return }
        if leaving && !isFenced {
            do {
                try membership.query(
                    """
                    WITH me AS (UPDATE lh_members SET state = 'left', ended_at = now() WHERE id = \(memberId) AND state = 'live' RETURNING id)
                    UPDATE lh_partitions SET owner = NULL WHERE owner IN (SELECT id FROM me)
                    """, doing: "leaving the cluster")
                logger.notice("left the cluster; its partitions are free", metadata: ["lh.member": "\(memberId)"])
            } catch {
                logger.warning("could not leave the cluster (others take over after the lease): \(error)")
            }
        }
        writer.close()
        for r in readers { r.close() }
        membership.close()
        try? group.syncShutdownGracefully()
    }

    deinit {
        if !state.withLock({ $0.closed }) { try? group.syncShutdownGracefully() }
    }

    /// Creates the database `url` names (when missing), connecting to the
    /// server's `postgres` database to do it: for tests and benchmarks,
    /// which give each run a database of its own.
    public static func createDatabase(_ url: String) throws {
        let settings = try PostgresSettings(url: url)
        let database = settings.connection.database ?? "postgres"
        guard database.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
            throw StoreError(.invalidArgument, "database names made here are letters, digits and _: '\(database)'")
        }
        var admin = settings
        admin.connection.database = "postgres"
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let link = PGLink(admin, name: "create", group: group, logger: Logger(label: "lh.pg"))
        defer { link.close() }
        do {
            let exists = try link.query(
                "SELECT 1 FROM pg_database WHERE datname = \(database)", doing: "looking for \(database)")
            if Array(exists).isEmpty {
                try link.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(database)"), doing: "creating \(database)")
            }
        } catch let error as PGError {
            throw StoreError(.unreadable, error.message)
        }
    }

    // MARK: - Partitions

    /// The partition of a WfRun: FNV-1a (64 bits) of its id's UTF-8 bytes,
    /// modulo the partition count. Fixed forever: it decides where rows live.
    public static func partition(of id: String, count: Int) -> Int32 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in id.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return Int32(hash % UInt64(count))
    }

    public func partition(of id: String) -> Int32 { Self.partition(of: id, count: partitionCount) }

    // MARK: - Schema

    func migrate() throws {
        let link = PGLink(settings, name: "migrate", group: group, logger: logger)
        defer { link.close() }
        do {
            try link.transaction(doing: "migrating the schema") { db in
                try db.query("SELECT pg_advisory_xact_lock(7404)", doing: "locking the schema")
                try db.query(
                    "CREATE TABLE IF NOT EXISTS lh_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                    doing: "creating lh_migrations")
                let applied = Set(
                    try db.query("SELECT name FROM lh_migrations", doing: "reading lh_migrations").map {
                        try $0.decode(String.self)
                    })
                let known = Set(PostgresSchema.migrations.map(\.name))
                let unknown = applied.subtracting(known)
                if !unknown.isEmpty {
                    throw StoreError(
                        .newerFormat,
                        "the database \(settings.where) was written by a newer lh-server (unknown migrations: \(unknown.sorted().joined(separator: ", "))); refusing to start so as not to damage it"
                    )
                }
                for m in PostgresSchema.migrations where !applied.contains(m.name) {
                    for statement in m.statements {
                        try db.query(PostgresQuery(unsafeSQL: statement), doing: "migration \(m.name): \(statement)")
                    }
                    try db.query("INSERT INTO lh_migrations (name) VALUES (\(m.name))", doing: "recording \(m.name)")
                    logger.notice("PostgreSQL schema migrated", metadata: ["lh.migration": "\(m.name)"])
                }
                let cluster = try db.query("SELECT partitions, format FROM lh_cluster", doing: "reading lh_cluster")
                    .map { try $0.decode((Int32, Int32).self) }
                if let (partitions, format) = cluster.first {
                    if format > PostgresSchema.format {
                        throw StoreError(
                            .newerFormat,
                            "the database \(settings.where) has format \(format), this lh-server reads format \(PostgresSchema.format); refusing to start"
                        )
                    }
                    if Int(partitions) != partitionCount {
                        throw StoreError(
                            .invalidArgument,
                            "the cluster in \(settings.where) was created with \(partitions) partitions, this server was started with --partitions \(partitionCount); start it with --partitions \(partitions)"
                        )
                    }
                } else {
                    let count = Int32(partitionCount)
                    try db.query(
                        "INSERT INTO lh_cluster (id, partitions, format) VALUES (1, \(count), \(Int32(PostgresSchema.format)))",
                        doing: "creating the cluster")
                    try db.query(
                        "INSERT INTO lh_partitions (p) SELECT generate_series(0, \(count) - 1)",
                        doing: "creating the partitions")
                }
            }
        } catch let error as StoreError {
            throw error
        } catch let error as PGError {
            throw StoreError(.unreadable, "cannot prepare the database \(settings.where): \(error.message)")
        }
    }

    // MARK: - Membership

    func join() throws {
        let address = Self.portIsKnown(options.address) ? options.address : ""
        do {
            try membership.query(
                """
                INSERT INTO lh_members (id, address, lease_until, state)
                VALUES (\(memberId), \(address), now() + make_interval(secs => \(options.leaseTTL)), 'live')
                """, doing: "joining the cluster")
        } catch let error as PGError {
            throw StoreError(.unreadable, "cannot join the cluster in \(settings.where): \(error.message)")
        }
        // Members that ended a week ago are forgotten (one row per process
        // start would otherwise pile up); nothing refers to them any more.
        do {
            try membership.query(
                """
                DELETE FROM lh_members m WHERE m.state <> 'live' AND m.ended_at < now() - interval '7 days'
                AND NOT EXISTS (SELECT 1 FROM lh_partitions l WHERE l.owner = m.id)
                """, doing: "forgetting members that ended a week ago")
        } catch {
            logger.warning("cannot forget old members: \(error)")
        }
        let thread = Thread { [weak self] in self?.renewLeases() }
        thread.name = "lh.pg.lease"
        thread.start()
    }

    /// Whether `address` (HOST:PORT) names a port other than 0.
    static func portIsKnown(_ address: String) -> Bool {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            return false
        }
        return port != 0
    }

    /// Records the address this server listens on (once it is bound: a
    /// standby's messages and operators show it).
    public func advertise(_ address: String, grpcAddress: String = "") {
        do {
            try membership.query(
                "UPDATE lh_members SET address = \(address), grpc_address = \(grpcAddress) WHERE id = \(memberId)",
                doing: "recording the address")
        } catch {
            logger.warning("cannot record this server's address: \(error)")
        }
        readOwners()
    }

    /// Renews the lease every fifth of its length until the store closes;
    /// steps down when PostgreSQL says this member is no longer live.
    private func renewLeases() {
        let period = options.leaseTTL / 5
        var failing = false
        while true {
            Thread.sleep(forTimeInterval: period)
            if state.withLock({ $0.closed }) || isFenced { return }
            do {
                let rows = try membership.query(
                    """
                    UPDATE lh_members SET lease_until = now() + make_interval(secs => \(options.leaseTTL))
                    WHERE id = \(memberId) AND state = 'live' RETURNING id
                    """, doing: "renewing the lease")
                if failing {
                    logger.notice("lease renewed again", metadata: ["lh.member": "\(memberId)"])
                    failing = false
                }
                if Array(rows).isEmpty {
                    stepDown("PostgreSQL marked member \(memberId) dead (its lease ran out)")
                    return
                }
            } catch {
                if !failing {
                    logger.warning("cannot renew the lease: \(error)", metadata: ["lh.member": "\(memberId)"])
                }
                failing = true
            }
        }
    }

    /// Whether this member owns every partition.
    public var ownsAll: Bool { epochs.withLock { $0.count } == partitionCount }

    /// Partitions owned now.
    public var ownedCount: Int { epochs.withLock { $0.count } }

    /// Claims ownerless partitions, up to this member's fair share (one
    /// `lh_claim` call); returns how many members are live.
    @discardableResult
    func claim() throws -> Int {
        let rows: [(Int32, Int64, Int32, Bool)]
        do {
            rows = try membership.query(
                """
                SELECT p, epoch, live, from_dead FROM lh_claim(\(memberId), \(options.leaseTTL), \(options.fairShare))
                """,
                doing: "claiming partitions"
            ).map { try $0.decode((Int32, Int64, Int32, Bool).self) }
        } catch let error as PGError {
            if error.sqlState == "LHF01" { stepDown(error.message) }
            throw StoreError(.unreadable, "cannot claim partitions in \(settings.where): \(error.message)")
        }
        let claimed = rows.filter { $0.0 >= 0 }
        let owned = epochs.withLock { e -> Int in
            for (p, epoch, _, _) in claimed { e[p] = epoch }
            return e.count
        }
        fromDead.withLock { d in for (p, _, _, dead) in claimed where dead { d.insert(p) } }
        if !claimed.isEmpty {
            logger.notice(
                "claimed partitions",
                metadata: ["lh.claimed": "\(claimed.count)", "lh.owned": "\(owned)/\(partitionCount)"])
        }
        return Int(rows.first?.2 ?? 1)
    }

    public var rebalanceInterval: Double { min(options.leaseTTL / 4, 0.5) }

    public func rebalance() -> LHOwnershipPlan {
        var plan = LHOwnershipPlan()
        do {
            plan.liveMembers = try claim()
        } catch let error as StoreError {
            // PostgreSQL away: keep serving what can be served, try again.
            logger.warning("\(error.message)")
            plan.liveMembers = max(1, liveMembers.withLock { $0.count })
        } catch {
            logger.warning("cannot claim partitions: \(error)")
        }
        readOwners()
        let owned = epochs.withLock { Set($0.keys) }
        let serving = served.withLock { $0 }
        plan.owned = owned.count
        plan.toLoad = owned.subtracting(serving).sorted()
        plan.fromDeadMembers = fromDead.withLock { d in
            d.formIntersection(owned)
            return d.intersection(plan.toLoad).sorted()
        }
        if options.fairShare {
            let share = (partitionCount + plan.liveMembers - 1) / max(1, plan.liveMembers)
            // Over the share: the highest served partitions go back (partition
            // 0, the metadata writer's, last).
            let excess = owned.count - share
            if excess > 0 {
                plan.toRelease = Array(
                    serving.sorted { ($0 == 0 ? 1 : 0, -$0) < ($1 == 0 ? 1 : 0, -$1) }.prefix(excess))
            }
        }
        return plan
    }

    public func load(partitions: [Int32]) throws -> LHPartitionLoad {
        let parts = partitions.map { Int($0) }
        let ids = try read("reading WfRun ids") { db in
            try db.query("SELECT id FROM wf_runs WHERE partition = ANY(\(parts))", doing: "reading WfRun ids")
                .map { try $0.decode(String.self) }
        }
        wfRunIds.withLock { filter in for id in ids { filter.insert(id) } }
        let orphans = try read("reading orphan events") { db in
            try db.query(
                "SELECT DISTINCT wf_run_id FROM orphan_events WHERE partition = ANY(\(parts))",
                doing: "reading orphan events"
            ).map { try $0.decode(String.self) }
        }
        orphanIds.withLock { $0.formUnion(orphans) }
        return LHPartitionLoad(queued: try queuedTasks(in: parts), timers: try timers(in: parts))
    }

    public func serve(partitions: [Int32]) {
        let owned = epochs.withLock { Set($0.keys) }
        served.withLock { $0.formUnion(partitions.filter { owned.contains($0) }) }
        fromDead.withLock { $0.subtract(partitions) }
    }

    public func stopServing(partitions: [Int32]) {
        served.withLock { $0.subtract(partitions) }
    }

    public func release(partitions: [Int32]) throws {
        stopServing(partitions: partitions)
        // A commit that still names them is refused here from now on.
        epochs.withLock { e in for p in partitions { e[p] = nil } }
        do {
            try membership.query(
                "SELECT lh_release(\(memberId), \(partitions))", doing: "releasing partitions")
        } catch let error as PGError {
            throw StoreError(.unreadable, "cannot release partitions in \(settings.where): \(error.message)")
        }
        logger.notice(
            "released partitions",
            metadata: ["lh.released": "\(partitions.count)", "lh.owned": "\(ownedCount)/\(partitionCount)"])
    }

    public var servedPartitions: Set<Int32> { served.withLock { $0 } }

    public var members: [LHClusterMember] { liveMembers.withLock { $0 } }

    public var partitionsByMember: [String: Int] {
        var counts = ownedByMember.withLock { $0 }
        counts[memberId] = servedPartitions.count
        return counts
    }

    // MARK: - LHClusterMembership

    public func owns(wfRunId: String) -> Bool {
        let p = partition(of: wfRunId)
        return served.withLock { $0.contains(p) }
    }

    public var ownsMetadata: Bool { served.withLock { $0.contains(0) } }

    public func ownerAddress(of wfRunId: String?) -> String? {
        let p = wfRunId.map { partition(of: $0) } ?? 0
        if epochs.withLock({ $0[p] != nil }) { return nil }
        return owners.withLock { $0[p] }
    }

    /// Reads the owners again, on a thread of its own (callers may be on an
    /// event loop); the map changes when the read is done.
    public func refreshOwners() {
        DispatchQueue.global().async { self.readOwners() }
    }

    /// Reads the owners (blocking).
    public func readOwners() {
        do {
            let rows = try membership.query(
                """
                SELECT l.p, m.address, m.id FROM lh_partitions l JOIN lh_members m ON m.id = l.owner
                WHERE m.state = 'live' AND m.lease_until > now()
                """, doing: "reading the owners"
            ).map { try $0.decode((Int32, String, String).self) }
            // Forwarded to: other members' partitions, once they have an address.
            owners.withLock { o in
                o = [:]
                for (p, address, id) in rows where id != memberId && !address.isEmpty { o[p] = address }
            }
            ownedByMember.withLock { counts in
                counts = [:]
                for (_, _, id) in rows { counts[id, default: 0] += 1 }
            }
            let live = try membership.query(
                """
                SELECT id, address, grpc_address FROM lh_members WHERE state = 'live' AND lease_until > now() ORDER BY started_at, id
                """, doing: "reading the members"
            ).map { try $0.decode((String, String, String).self) }
            liveMembers.withLock { m in
                m = live.map { LHClusterMember(id: $0.0, address: $0.1, grpcAddress: $0.2) }
            }
        } catch {
            logger.debug("cannot read the partitions' owners: \(error)")
        }
    }

    /// Whether `id` surely has no row: the filters say so, and they are
    /// complete for its partition.
    private func surelyAbsent(_ id: String, in filter: (String) -> Bool) -> Bool {
        owns(wfRunId: id) && !filter(id)
    }

    func checkOpen() throws {
        if state.withLock({ $0.closed }) { throw StoreError(.failed, "the PostgreSQL store was closed") }
    }

    func reader() -> PGLink {
        readers[nextReader.wrappingAdd(1, ordering: .relaxed).oldValue % readers.count]
    }

    /// Runs a read, its failure as a StoreError.
    func read<T>(_ what: String, _ body: (PGLink) throws -> T) throws -> T {
        try checkOpen()
        do {
            return try body(reader())
        } catch let error as PGError {
            throw StoreError(.failed, error.message)
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.failed, "\(what): \(error)")
        }
    }

    // MARK: - Metadata

    public func taskDefs() throws -> [Littlehorse_TaskDef] {
        try read("reading TaskDefs") { db in
            try db.query("SELECT body FROM task_defs", doing: "reading TaskDefs").map {
                try Littlehorse_TaskDef(serializedBytes: try $0.decode(Data.self))
            }
        }
    }

    public func externalEventDefs() throws -> [Littlehorse_ExternalEventDef] {
        try read("reading ExternalEventDefs") { db in
            try db.query("SELECT body FROM external_event_defs", doing: "reading ExternalEventDefs").map {
                try Littlehorse_ExternalEventDef(serializedBytes: try $0.decode(Data.self))
            }
        }
    }

    public func wfSpecs() throws -> [Littlehorse_WfSpec] {
        try read("reading WfSpecs") { db in
            try db.query("SELECT body FROM wf_specs", doing: "reading WfSpecs").map {
                try Littlehorse_WfSpec(serializedBytes: try $0.decode(Data.self))
            }
        }
    }

    public func put(taskDef: Littlehorse_TaskDef) throws {
        try putMetadata("task_def", taskDef.id.name, 0, 0, try taskDef.serializedBytes())
    }

    public func put(externalEventDef: Littlehorse_ExternalEventDef) throws {
        try putMetadata("external_event_def", externalEventDef.id.name, 0, 0, try externalEventDef.serializedBytes())
    }

    public func put(wfSpec: Littlehorse_WfSpec) throws {
        try putMetadata(
            "wf_spec", wfSpec.id.name, wfSpec.id.majorVersion, wfSpec.id.revision, try wfSpec.serializedBytes())
    }

    private func putMetadata(_ kind: String, _ name: String, _ major: Int32, _ revision: Int32, _ body: Data) throws {
        try write("writing a \(kind)") {
            try writer.query(
                "SELECT lh_put_metadata(\(memberId), \(kind), \(name), \(major), \(revision), \(body))",
                doing: "writing \(kind) \(name)")
        }
    }

    /// Runs a fenced write: a fence failure steps this member down.
    func write(_ what: String, _ body: () throws -> Void) throws {
        try checkOpen()
        if isFenced {
            throw StoreError(
                .refused, "this server lost its partitions to another member (fenced); it writes nothing more")
        }
        do {
            try body()
        } catch let error as PGError {
            if error.sqlState == "LHF01" || error.sqlState == "LHF02" {
                stepDown(error.message)
                throw StoreError(.refused, "fenced: \(error.message)")
            }
            throw StoreError(.failed, error.message)
        }
    }

    // MARK: - WfRuns

    public func wfRun(_ id: String) throws -> WfRunState? {
        if surelyAbsent(id, in: { id in wfRunIds.withLock { $0.mayContain(id) } }) { return nil }
        let body = try read("reading WfRun \(id)") { db in
            try db.query("SELECT body FROM wf_runs WHERE id = \(id)", doing: "reading WfRun \(id)")
                .map { try $0.decode(Data.self) }.first
        }
        guard let body else { return nil }
        return try StoredForm.state(fromBody: body)
    }

    public func orphanEvents(of wfRunId: String) throws -> [Littlehorse_ExternalEvent] {
        if surelyAbsent(wfRunId, in: { id in orphanIds.withLock { $0.contains(id) } }) { return [] }
        return try read("reading orphan events") { db in
            try db.query(
                "SELECT body FROM orphan_events WHERE wf_run_id = \(wfRunId) ORDER BY commit_seq, ord",
                doing: "reading the events of \(wfRunId)"
            ).map { try Littlehorse_ExternalEvent(serializedBytes: try $0.decode(Data.self)) }
        }
    }

    /// One WfRun's writes, made ahead in a processor lane.
    struct Prepared: Sendable {
        var body: Data
        var changes: StoredForm.Changes
    }

    public func prepareWrites(of batch: inout LHWriteBatch) throws {
        for (id, state) in batch.wfRuns where batch.prepared[id] == nil {
            batch.prepared[id] = Prepared(
                body: try StoredForm.body(of: state), changes: StoredForm.changes(of: id, state, in: batch))
        }
    }

    public func commit(_ batches: [LHWriteBatch]) throws {
        var fold = CommitFold()
        for batch in batches where !batch.isEmpty { try fold.add(batch) }
        if fold.isEmpty { return }
        let touched = fold.touchedIds.reduce(into: Set<Int32>()) { $0.insert(partition(of: $1)) }
        let owned = epochs.withLock { e in touched.map { ($0, e[$0]) } }
        if let missing = owned.first(where: { $0.1 == nil }) {
            throw StoreError(.refused, "this server does not own partition \(missing.0)")
        }
        // Before the commit: once it is durable, a lookup must find these.
        wfRunIds.withLock { filter in for id in fold.wfRuns.keys { filter.insert(id) } }
        let query = try fold.query(
            member: memberId, partitions: owned.map { ($0.0, $0.1!) }, partitionOf: partition(of:))
        try write("committing") {
            try writer.query(query, doing: "lh_commit")
        }
        if !fold.orphanClaims.isEmpty || !fold.orphans.isEmpty || !fold.deleted.isEmpty {
            orphanIds.withLock { ids in
                ids.subtract(fold.orphanClaims)
                ids.subtract(fold.deleted)
                for key in fold.orphans.keys { ids.insert(key.wfRunId) }
            }
        }
    }

    public func queuedTasks() throws -> [QueuedTask] {
        try queuedTasks(in: Array(0..<partitionCount))
    }

    func queuedTasks(in parts: [Int]) throws -> [QueuedTask] {
        try read("reading the task queue") { db in
            try db.query(
                """
                SELECT wf_run_id, guid, task_def, attempt FROM task_queue WHERE partition = ANY(\(parts))
                ORDER BY commit_seq, ord
                """,
                doing: "reading the task queue"
            ).map { row in
                let (wf, guid, def, attempt) = try row.decode((String, String, String, Int32).self)
                return QueuedTask(wfRunId: wf, taskGuid: guid, taskDef: def, attempt: attempt)
            }
        }
    }

    public func timers() throws -> [StoredTimer] {
        try timers(in: Array(0..<partitionCount))
    }

    func timers(in parts: [Int]) throws -> [StoredTimer] {
        var timers = try read("reading timers") { db in
            try db.query(
                "SELECT wf_run_id, key, due FROM timers WHERE partition = ANY(\(parts)) ORDER BY due",
                doing: "reading timers"
            ).compactMap {
                row -> StoredTimer? in
                let (wf, key, due) = try row.decode((String, String, Double).self)
                guard let key = LHTimerKey(key) else { return nil }
                return StoredTimer(wfRunId: wf, key: key, due: Date(timeIntervalSince1970: due))
            }
        }
        let running = try read("reading running TaskRuns") { db in
            try db.query(
                """
                SELECT wf_run_id, guid FROM task_runs WHERE status = \(Int32(PostgresSchema.running))
                AND partition = ANY(\(parts))
                """,
                doing: "reading running TaskRuns"
            ).map { row in
                let (wf, guid) = try row.decode((String, String).self)
                return (wfRunId: wf, guid: guid)
            }
        }
        timers += try StoredForm.attemptTimeouts(running: running, wfRun: wfRun)
        return timers
    }

    // MARK: - Search

    public func searchWfRuns(_ r: Littlehorse_SearchWfRunRequest) throws -> LHPage<String> {
        let limit = r.hasLimit && r.limit > 0 ? Int(r.limit) : 100
        let offset = StoredForm.offset(r.hasBookmark ? r.bookmark : nil)
        var q = SQLBuilder("SELECT id FROM wf_runs WHERE wf_spec_name = ")
        q.bind(r.wfSpecName)
        if r.hasWfSpecMajorVersion { q.append(" AND major = "); q.bind(r.wfSpecMajorVersion) }
        if r.hasWfSpecRevision { q.append(" AND revision = "); q.bind(r.wfSpecRevision) }
        if r.hasStatus { q.append(" AND status = "); q.bind(Int32(r.status.rawValue)) }
        if r.hasEarliestStart { q.append(" AND start_time >= "); q.bind(r.earliestStart.date.timeIntervalSince1970) }
        if r.hasLatestStart { q.append(" AND start_time <= "); q.bind(r.latestStart.date.timeIntervalSince1970) }
        q.append(" ORDER BY start_time, id LIMIT ")
        q.bind(Int64(limit + 1))
        q.append(" OFFSET ")
        q.bind(Int64(offset))
        let rows = try read("searching WfRuns") { db in
            try db.query(q.query, doing: "searching WfRuns").map { try $0.decode(String.self) }
        }
        return StoredForm.page(rows, limit: limit, offset: offset)
    }

    public func recentWfRuns(wfSpecName: String?, status: Littlehorse_LHStatus?, since: Date?, limit: Int) throws
        -> [String]
    {
        var q = SQLBuilder("SELECT id FROM wf_runs WHERE true")
        if let wfSpecName { q.append(" AND wf_spec_name = "); q.bind(wfSpecName) }
        if let status { q.append(" AND status = "); q.bind(Int32(status.rawValue)) }
        if let since { q.append(" AND start_time >= "); q.bind(since.timeIntervalSince1970) }
        q.append(" ORDER BY start_time DESC, id DESC LIMIT ")
        q.bind(Int64(max(1, limit)))
        return try read("listing WfRuns") { db in
            try db.query(q.query, doing: "listing WfRuns").map { try $0.decode(String.self) }
        }
    }

    public func wfRunCounts() throws -> [Littlehorse_LHStatus: Int] {
        let rows = try read("counting WfRuns") { db in
            try db.query("SELECT status, count(*) FROM wf_runs GROUP BY status", doing: "counting WfRuns").map {
                try $0.decode((Int32, Int64).self)
            }
        }
        var counts: [Littlehorse_LHStatus: Int] = [:]
        for (status, n) in rows {
            let s = Littlehorse_LHStatus(rawValue: Int(status)) ?? .UNRECOGNIZED(Int(status))
            counts[s, default: 0] += Int(n)
        }
        return counts
    }

    public func searchTaskRuns(_ r: Littlehorse_SearchTaskRunRequest) throws -> LHPage<Littlehorse_TaskRunId> {
        let limit = r.hasLimit && r.limit > 0 ? Int(r.limit) : 100
        let offset = StoredForm.offset(r.hasBookmark ? r.bookmark : nil)
        var q = SQLBuilder("SELECT wf_run_id, guid FROM task_runs WHERE task_def = ")
        q.bind(r.taskDefName)
        if r.hasStatus { q.append(" AND status = "); q.bind(Int32(r.status.rawValue)) }
        if r.hasEarliestStart { q.append(" AND scheduled_at >= "); q.bind(r.earliestStart.date.timeIntervalSince1970) }
        if r.hasLatestStart { q.append(" AND scheduled_at <= "); q.bind(r.latestStart.date.timeIntervalSince1970) }
        q.append(" ORDER BY scheduled_at, wf_run_id, guid LIMIT ")
        q.bind(Int64(limit + 1))
        q.append(" OFFSET ")
        q.bind(Int64(offset))
        let ids = try read("searching TaskRuns") { db in
            try db.query(q.query, doing: "searching TaskRuns").map { row in
                let (wf, guid) = try row.decode((String, String).self)
                return Littlehorse_TaskRunId.with {
                    $0.wfRunID.id = wf; $0.taskGuid = guid
                }
            }
        }
        return StoredForm.page(ids, limit: limit, offset: offset)
    }

    public func searchVariables(_ r: Littlehorse_SearchVariableRequest) throws -> LHPage<Littlehorse_VariableId> {
        let limit = r.hasLimit && r.limit > 0 ? Int(r.limit) : 100
        let offset = StoredForm.offset(r.hasBookmark ? r.bookmark : nil)
        guard let key = StoredForm.valueKey(r.value) else {
            throw StoreError(.invalidArgument, "variables are searched by a STR, INT, DOUBLE, BOOL or WF_RUN_ID value")
        }
        var q = SQLBuilder("SELECT wf_run_id, thread, name FROM variables WHERE name = ")
        q.bind(r.varName)
        q.append(" AND value_key = ")
        q.bind(key)
        if !r.wfSpecName.isEmpty { q.append(" AND wf_spec_name = "); q.bind(r.wfSpecName) }
        q.append(" ORDER BY wf_run_id, thread LIMIT ")
        q.bind(Int64(limit + 1))
        q.append(" OFFSET ")
        q.bind(Int64(offset))
        let ids = try read("searching variables") { db in
            try db.query(q.query, doing: "searching variables").map { row in
                let (wf, thread, name) = try row.decode((String, Int32, String).self)
                return Littlehorse_VariableId.with {
                    $0.wfRunID.id = wf; $0.threadRunNumber = thread; $0.name = name
                }
            }
        }
        return StoredForm.page(ids, limit: limit, offset: offset)
    }
}

/// A statement built piece by piece with numbered parameters.
struct SQLBuilder {
    var sql: String
    var binds = PostgresBindings()
    init(_ sql: String) { self.sql = sql }
    mutating func append(_ text: String) { sql += text }
    mutating func bind<T: PostgresDynamicTypeEncodable>(_ value: T) {
        binds.append(value)
        sql += "$\(binds.count)"
    }
    var query: PostgresQuery { PostgresQuery(unsafeSQL: sql, binds: binds) }
}
