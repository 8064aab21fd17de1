import Foundation

/// A store shared by the servers of a cluster (PostgreSQL): which WfRuns
/// this server may write now, and where the others are written. A store
/// that is not shared (SQLite) does not conform: its server owns all.
///
/// Each WfRun belongs to one partition (a fixed hash of its id); each live
/// server owns a fair share of the partitions (⌈partitions / live servers⌉
/// at most), claimed and released at run time (``rebalance()``). Commands
/// for a WfRun go to the owner of its partition (forwarded by the server
/// that received them); metadata is written by the owner of partition 0, so
/// two servers never mint the same WfSpec version. Reads are served by every
/// server from the shared store.
public protocol LHClusterMembership: AnyObject, Sendable {
    /// This server's member id (one per process start).
    var memberId: String { get }
    /// The number of partitions of the cluster.
    var partitionCount: Int { get }
    /// The partition of a WfRun.
    func partition(of wfRunId: String) -> Int32
    /// Whether this server serves `wfRunId` now: it owns the partition and
    /// has loaded it (``serve(partitions:)``), and is not releasing it.
    func owns(wfRunId: String) -> Bool
    /// Whether this server writes metadata (it serves partition 0).
    var ownsMetadata: Bool { get }
    /// The partitions this server serves now.
    var servedPartitions: Set<Int32> { get }
    /// The advertised address (HOST:PORT) of the live member owning
    /// `wfRunId`'s partition (nil: the metadata writer's); nil when no live
    /// member owns it (a failover is under way) or it is this server. Never
    /// blocks (callable on an event loop): the owners as last read.
    func ownerAddress(of wfRunId: String?) -> String?
    /// Reads the owners again in the background (after a forward to a stale
    /// owner failed).
    func refreshOwners()
    /// Reads the owners again now (blocking: off the cooperative pool).
    func readOwners()
    /// The live members as last read (this one included), for workers,
    /// which connect to every member. Never blocks.
    var members: [LHClusterMember] { get }
    /// Partitions owned by each live member id, as last read (this one's:
    /// those it serves now). Never blocks. For operators (the dashboard).
    var partitionsByMember: [String: Int] { get }

    /// Seconds between two ``rebalance()`` calls.
    var rebalanceInterval: Double { get }
    /// One round of the ownership protocol (blocking: call it off the
    /// cooperative pool): renews, claims ownerless partitions up to this
    /// server's fair share, and says what to load and what to give back.
    func rebalance() -> LHOwnershipPlan
    /// What the server must hold in memory for `partitions` (blocking):
    /// their queued TaskRuns and their timers (attempt timeouts included);
    /// also makes the store's own lookups of these partitions exact.
    func load(partitions: [Int32]) throws -> LHPartitionLoad
    /// The partitions were loaded: commands for them are served from now on.
    func serve(partitions: [Int32])
    /// Stops serving `partitions` (the first step of a release): commands
    /// for them are refused or forwarded from now on.
    func stopServing(partitions: [Int32])
    /// Gives `partitions` back (blocking): once this returns, this server
    /// never writes them again, and another member may claim them.
    func release(partitions: [Int32]) throws
}

/// A live member of a cluster.
public struct LHClusterMember: Sendable, Equatable {
    public var id: String
    /// Our protocol's address (HOST:PORT; empty until the member listens).
    public var address: String
    /// The gRPC address (HOST:PORT; empty: no gRPC listener).
    public var grpcAddress: String

    public init(id: String, address: String, grpcAddress: String) {
        self.id = id
        self.address = address
        self.grpcAddress = grpcAddress
    }
}

/// What one ``LHClusterMembership/rebalance()`` asks of the server.
public struct LHOwnershipPlan: Sendable {
    /// Partitions owned and not served yet (just claimed, or a load that
    /// failed before): to load, then serve.
    public var toLoad: [Int32] = []
    /// Of `toLoad`, those a dead member owned (it did not release them):
    /// its workers may hold their attempts without the new owner knowing.
    public var fromDeadMembers: [Int32] = []
    /// Partitions over this server's fair share: to release.
    public var toRelease: [Int32] = []
    /// Live members (this one included).
    public var liveMembers = 1
    /// Partitions owned.
    public var owned = 0

    public init() {}
}

/// What a server loads when it takes partitions.
public struct LHPartitionLoad: Sendable {
    public var queued: [QueuedTask]
    public var timers: [StoredTimer]

    public init(queued: [QueuedTask], timers: [StoredTimer]) {
        self.queued = queued
        self.timers = timers
    }
}

/// Blocking work (a store's calls) on a thread outside Swift's cooperative
/// pool, awaited.
public func lhOffPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try work() }) }
    }
}

/// Blocking work outside Swift's cooperative pool, awaited.
public func lhOffPool<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(returning: work()) }
    }
}
