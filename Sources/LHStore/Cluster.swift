import Foundation

/// A store shared by the servers of a cluster (PostgreSQL): which WfRuns
/// this server may write now, and where the others are written. A store
/// that is not shared (SQLite) does not conform: its server owns all.
///
/// Commands for a WfRun go to the owner of its partition (forwarded by the
/// server that received them); metadata is written by the owner of
/// partition 0, so two servers never mint the same WfSpec version. Reads
/// are served by every server from the shared store.
public protocol LHClusterMembership: AnyObject, Sendable {
    /// This server's member id (one per process start).
    var memberId: String { get }
    /// Whether this server may commit for `wfRunId` now.
    func owns(wfRunId: String) -> Bool
    /// Whether this server writes metadata (it owns partition 0).
    var ownsMetadata: Bool { get }
    /// The advertised address (HOST:PORT) of the live member owning
    /// `wfRunId`'s partition (nil: the metadata writer's); nil when no live
    /// member owns it (a failover is under way) or it is this server. Never
    /// blocks (callable on an event loop): the owners as last read.
    func ownerAddress(of wfRunId: String?) -> String?
    /// Reads the owners again in the background (after a forward to a stale
    /// owner failed).
    func refreshOwners()
}
