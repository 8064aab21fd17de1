import LHEngine
import LHProto

/// What the batch builder and the commit thread share, as one state with
/// the rules of the group-commit pipeline:
///
/// - At most `maxInFlight` group commits are built and not yet finished; the
///   builder waits (``park(_:)``) for the oldest to finish.
/// - The states of group commits still being written (the overlay) are what
///   the next batch's jobs build on; reads never see them.
/// - A failed commit starts a new epoch: batches built on what it held (of
///   its epoch) are refused, and the overlay is dropped, so later batches
///   build on what is stored.
///
/// `Waiter` is what a parked builder is resumed with (a continuation in the
/// server, anything in tests).
struct PipelineState<Waiter> {
    let maxInFlight: Int
    private(set) var epoch: UInt64 = 0
    private(set) var inFlight = 0
    private var overlay: [String: (state: WfRunState?, batch: UInt64)] = [:]
    private var overlayOrphans: [(event: Littlehorse_ExternalEvent, batch: UInt64)] = []
    private var waiter: Waiter?

    init(maxInFlight: Int) { self.maxInFlight = maxInFlight }

    var hasRoom: Bool { inFlight < maxInFlight }

    /// Parks the builder until a group commit finishes; false (not parked)
    /// when there is room already.
    mutating func park(_ waiter: Waiter) -> Bool {
        guard !hasRoom else { return false }
        self.waiter = waiter
        return true
    }

    /// What a new batch builds on.
    func base() -> PipelineBase {
        PipelineBase(epoch: epoch, overlay: overlay, orphans: overlayOrphans.map(\.event))
    }

    /// A batch built on `base` is handed over for writing. True: its states
    /// are what later batches build on and it is in flight. False: a commit
    /// it built on failed meanwhile; it must be refused, not written.
    mutating func accept(
        batch number: UInt64, builtOn epoch: UInt64, states: [(key: String, value: WfRunState)],
        deleted: Set<String>, orphans: [Littlehorse_ExternalEvent]
    ) -> Bool {
        guard epoch == self.epoch else { return false }
        for (id, state) in states { overlay[id] = (state, number) }
        for id in deleted { overlay[id] = (nil, number) }
        for e in orphans { overlayOrphans.append((e, number)) }
        inFlight += 1
        return true
    }

    /// The batch is durable: reads see it in the store (or cache) now, so its
    /// overlay entries go, unless a later batch replaced them. Returns the
    /// parked builder to resume.
    mutating func committed(batch number: UInt64, states: [(key: String, value: WfRunState)], deleted: Set<String>)
        -> Waiter?
    {
        for (id, _) in states where overlay[id]?.batch == number { overlay[id] = nil }
        for id in deleted where overlay[id]?.batch == number { overlay[id] = nil }
        overlayOrphans.removeAll { $0.batch <= number }
        return finished()
    }

    /// The batch's transaction failed: when it is of the current epoch, a
    /// new epoch starts and everything built on it is forgotten. Returns the
    /// parked builder to resume.
    mutating func failed(builtOn epoch: UInt64) -> Waiter? {
        if epoch == self.epoch {
            self.epoch += 1
            overlay = [:]
            overlayOrphans = []
        }
        return finished()
    }

    private mutating func finished() -> Waiter? {
        inFlight -= 1
        defer { waiter = nil }
        return waiter
    }
}

/// What a new batch builds on: the epoch and what is being written.
struct PipelineBase: Sendable {
    var epoch: UInt64
    /// WfRun states being written, with the batch that wrote them; nil: deleted.
    var overlay: [String: (state: WfRunState?, batch: UInt64)]
    var orphans: [Littlehorse_ExternalEvent]
}
