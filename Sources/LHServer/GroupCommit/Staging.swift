import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire

/// The changes of one WfRun's jobs in a group commit, before they are
/// durable. A job reads and changes WfRuns only through it, with named
/// operations (``apply(_:to:)``, ``delete(_:)``, ``dequeue(wfRunId:taskGuid:)``,
/// ``cancelTimer(wfRunId:key:)``, the orphan-event operations); the write
/// batch they fill is the group commit's own and is written nowhere else.
struct Staging: Sendable {
    /// A TaskRun attempt handed to a worker in the transaction that made it ready.
    struct Delivery: Sendable {
        var reservation: TaskReservation
        var wfRunId: String
        var taskGuid: String
        var attempt: Int32
        /// When the report that made it ready reached the server (metrics).
        var reportArrivedAt: Date?
    }

    private(set) var states: [String: WfRunState] = [:]
    private(set) var batch = LHWriteBatch()
    private(set) var effects: [(String, LHEffect)] = []
    private(set) var deleted: Set<String> = []
    /// TaskRun attempts made TASK_RUNNING in this staging, for the workers
    /// whose room they took; sent once the commit is durable.
    private(set) var deliveries: [Delivery] = []
    /// What this staging's jobs did, for the metrics once durable.
    private(set) var tally = Tally()
    let now: Date
    let metadata: MetadataCache
    private let store: any LHStorage
    private let loadState: @Sendable (String) throws -> WfRunState?
    /// Orphan events of the group commits still being written.
    private let pendingOrphans: [Littlehorse_ExternalEvent]
    private let reservations: (any DirectReservations)?
    /// The connection of the worker whose report the current job carries:
    /// attempts the job makes ready go to that worker first.
    var reportingWorker: ObjectIdentifier?
    /// When that report reached the server (task-to-next-task latency).
    var reportArrivedAt: Date?

    init(
        now: Date, metadata: MetadataCache, store: any LHStorage, pendingOrphans: [Littlehorse_ExternalEvent] = [],
        reservations: (any DirectReservations)? = nil, loadState: @escaping @Sendable (String) throws -> WfRunState?
    ) {
        self.now = now
        self.metadata = metadata
        self.store = store
        self.pendingOrphans = pendingOrphans
        self.reservations = reservations
        self.loadState = loadState
    }

    /// The WfRun as this group commit sees it: its own changes, then what is
    /// being written, then what is stored. Nil when it does not exist.
    mutating func state(_ id: String) throws -> WfRunState? {
        if deleted.contains(id) { return nil }
        if let s = states[id] { return s }
        guard let s = try loadState(id) else { return nil }
        states[id] = s
        batch.stored[id] = s
        return s
    }

    /// Applies one engine command to a WfRun.
    mutating func apply(_ command: LHCommand, to id: String) throws {
        guard var state = try state(id) else { throw LHError(.notFound, "WfRun '\(id)' not found") }
        guard let spec = metadata.wfSpec(state.wfRun.wfSpecID) else {
            let v = state.wfRun.wfSpecID
            throw LHError(.internal, "WfSpec \(v.name) v\(v.majorVersion).\(v.revision) of WfRun '\(id)' is missing")
        }
        let before = state
        let effects = try LHError.mapping {
            try WorkflowEngine.apply(command, to: &state, context: metadata.context(for: spec), now: now)
        }
        tally.observe(command, before: before, after: state, now: now)
        save(id, state, effects)
    }

    /// Saves a WfRun's new state and the effects of the command that made it.
    mutating func save(_ id: String, _ state: WfRunState, _ effects: [LHEffect]) {
        var state = state
        var effects = effects
        for case .dispatchTask(_, _, let attempt) in effects { tally.dispatched(attempt: attempt) }
        if reservations != nil { handOverDirectly(id, &state, &effects) }
        tally.observe(from: states[id], to: state)
        states[id] = state
        batch.wfRuns[id] = state
        for effect in effects {
            self.effects.append((id, effect))
            switch effect {
            case .dispatchTask(let guid, let def, let attempt):
                batch.enqueued.append(QueuedTask(wfRunId: id, taskGuid: guid, taskDef: def, attempt: attempt))
            case .withdrawTask(let guid, _):
                batch.dequeued.append((id, guid))
            case .scheduleTimer(let at, let key):
                batch.timersSet.append(StoredTimer(wfRunId: id, key: key, due: at))
            case .cancelTimer(let key):
                batch.timersCancelled.append((id, key))
            case .wfRunTerminated:
                break
            }
        }
    }

    /// Deletes a WfRun with everything of it.
    mutating func delete(_ id: String) {
        states[id] = nil
        batch.wfRuns[id] = nil
        deleted.insert(id)
        batch.deletedWfRuns.insert(id)
    }

    /// Takes a queued attempt out of its TaskDef's stored queue.
    mutating func dequeue(wfRunId: String, taskGuid: String) {
        batch.dequeued.append((wfRunId, taskGuid))
    }

    /// Removes a stored timer (it fired).
    mutating func cancelTimer(wfRunId: String, key: LHTimerKey) {
        batch.timersCancelled.append((wfRunId, key))
    }

    /// The events stored for a WfRun that does not exist (yet), including
    /// those of group commits still being written and of this one.
    func orphanEvents(of wfRunId: String) throws -> [Littlehorse_ExternalEvent] {
        try store.orphanEvents(of: wfRunId) + pendingOrphans.filter { $0.id.wfRunID.id == wfRunId }
            + batch.orphanEvents.filter { $0.id.wfRunID.id == wfRunId }
    }

    /// Stores an event for a WfRun that does not exist (yet).
    mutating func storeOrphanEvent(_ event: Littlehorse_ExternalEvent) {
        batch.orphanEvents.append(event)
    }

    /// The WfRun now exists and has consumed its orphan events: they are
    /// removed from the store in this group commit.
    mutating func claimOrphanEvents(of wfRunId: String) {
        batch.orphanEvents.removeAll { $0.id.wfRunID.id == wfRunId }
        batch.claimedOrphansOf.insert(wfRunId)
    }

    /// Makes the stored forms of this staging's WfRuns (run in the batch's
    /// parallel lanes, not in the serial commit).
    mutating func prepareWrites() {
        try? store.prepareWrites(of: &batch)
    }

    /// Attempts this command made ready go straight to a worker with room:
    /// TASK_RUNNING in this same transaction (one command less, one commit
    /// less before the worker sees it). The others are queued as usual.
    private mutating func handOverDirectly(_ id: String, _ state: inout WfRunState, _ effects: inout [LHEffect]) {
        guard let reservations, effects.contains(where: { if case .dispatchTask = $0 { true } else { false } }),
            let spec = metadata.wfSpec(state.wfRun.wfSpecID)
        else { return }
        let context = metadata.context(for: spec)
        var out: [LHEffect] = []
        for effect in effects {
            guard case .dispatchTask(let guid, let def, let attempt) = effect,
                let r = reservations.reserveDirect(taskDef: def, wfRunId: id, guid: guid, prefer: reportingWorker)
            else {
                out.append(effect)
                continue
            }
            var started = state
            do {
                let command = LHCommand.taskStarted(taskGuid: guid, attempt: attempt, workerId: r.workerId)
                out += try WorkflowEngine.apply(command, to: &started, context: context, now: now)
                tally.startedAttempt(guid, attempt, in: started, now: now)
                state = started
                deliveries.append(
                    Delivery(
                        reservation: r, wfRunId: id, taskGuid: guid, attempt: attempt,
                        reportArrivedAt: reportArrivedAt))
            } catch {
                reservations.release(r)
                out.append(effect)
            }
        }
        effects = out
    }

    /// Gives back the room of deliveries made after the first `kept` (the
    /// job that made them failed and its changes are undone).
    func releaseDeliveries(after kept: Int) {
        for d in deliveries.dropFirst(kept) { reservations?.release(d.reservation) }
    }
}

/// What the group commit needs of the dispatcher: a worker's room for an
/// attempt a job just made ready (direct hand-over), and giving it back.
protocol DirectReservations: Sendable {
    /// A worker's room when one has room and nothing of `taskDef` is queued
    /// before it; `prefer` gets it first when it takes `taskDef` and has room.
    func reserveDirect(taskDef: String, wfRunId: String, guid: String, prefer: ObjectIdentifier?) -> TaskReservation?
    /// A reservation that was not used (its command failed or was not stored).
    func release(_ reservation: TaskReservation)
}
