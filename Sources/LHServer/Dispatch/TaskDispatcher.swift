import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import LHWireProto
import Logging
import Synchronization

/// Per-TaskDef queues and the workers subscribed to them. A TaskRun attempt
/// is handed to a worker only within that worker's capacity, and becomes
/// TASK_RUNNING (durably) before the worker sees it: either in the very
/// transaction that made it ready (``reserveDirect``, when a worker has room
/// and nothing of its TaskDef waits), or through the queue and a job of its
/// own (``TaskStarting``).
final class TaskDispatcher: Sendable {
    private let state = Mutex(DispatchState())
    private let logger: Logger
    private let starter: any TaskStarting

    init(starter: any TaskStarting, logger: Logger) {
        self.starter = starter
        self.logger = logger
    }

    func enqueue(_ task: QueuedTask) {
        let key = DispatchState.key(task.wfRunId, task.taskGuid)
        let ready = state.withLock { s -> [(QueuedTask, TaskReservation)] in
            guard s.queuedKeys.insert(key).inserted else { return [] }
            s.queues[task.taskDef, default: TaskQueue()].append(task)
            return s.assignable(task.taskDef)
        }
        handOver(ready)
    }

    func withdraw(wfRunId: String, guid: String, taskDef: String) {
        let key = DispatchState.key(wfRunId, guid)
        state.withLock { s in
            guard s.queuedKeys.remove(key) != nil else { return }
            s.queues[taskDef]?.removeAll { $0.wfRunId == wfRunId && $0.taskGuid == guid }
        }
    }

    func removeAll(of wfRunId: String) {
        state.withLock { s in
            for def in s.queues.keys {
                s.queues[def]?.removeAll { $0.wfRunId == wfRunId }
            }
            s.queuedKeys = s.queuedKeys.filter { !$0.hasPrefix("\(wfRunId)/") }
        }
    }

    /// Forgets the queued TaskRuns of the WfRuns `picked` selects (their
    /// partitions went to another server).
    func removeAll(where picked: @escaping (String) -> Bool) {
        state.withLock { s in
            for def in s.queues.keys {
                s.queues[def]?.removeAll { picked($0.wfRunId) }
            }
            s.queuedKeys = s.queuedKeys.filter { key in
                guard let slash = key.lastIndex(of: "/") else { return true }
                return !picked(String(key[..<slash]))
            }
        }
    }

    /// Sends `envelope` to every worker of our protocol (a cluster's
    /// members changed).
    func broadcast(_ envelope: Lhwire_Envelope) {
        let pushes = state.withLock { s in s.workers.values.map(\.push) }
        for case .wire(let responder) in pushes { responder.yield(envelope) }
    }

    /// Number of TaskRuns waiting for a worker, per TaskDef.
    func queueDepths() -> [String: Int] { state.withLock { $0.queues.mapValues(\.count) } }

    /// The worker id a connection subscribed with (nil: it has not subscribed).
    func workerId(connection: ObjectIdentifier) -> String? {
        state.withLock { $0.workers[connection]?.id }
    }

    /// Number of connected workers (connections and polling streams), per TaskDef.
    func workerCounts() -> [String: Int] {
        state.withLock { s in
            var counts: [String: Int] = [:]
            for w in s.workers.values { counts[w.taskDef, default: 0] += 1 }
            return counts
        }
    }

    /// `holding`: the keys of attempts the worker still holds from an earlier
    /// connection; they take its room until it reports them.
    func subscribe(
        connection: ObjectIdentifier, workerId: String, taskDef: String, capacity: Int, push: LHResponder,
        holding: [String] = []
    ) {
        let ready = state.withLock { s -> [(QueuedTask, TaskReservation)] in
            if s.workers[connection] == nil { s.order[taskDef, default: []].append(connection) }
            s.workers[connection] = DispatchState.Worker(
                id: workerId, taskDef: taskDef, capacity: max(1, capacity), holding: Set(holding), push: .wire(push))
            return s.assignable(taskDef)
        }
        logger.info(
            "worker subscribed",
            metadata: ["lh.worker": "\(workerId)", LHLog.taskDef: "\(taskDef)", "lh.capacity": "\(capacity)"])
        handOver(ready)
    }

    /// A gRPC `PollTask` stream serving `taskDef`: a worker whose room is its
    /// credit (``addCredit(connection:)``), not its reports.
    func subscribePoller(connection: ObjectIdentifier, workerId: String, taskDef: String, push: WorkerPush) {
        state.withLock { s in
            if s.workers[connection] == nil { s.order[taskDef, default: []].append(connection) }
            s.workers[connection] = DispatchState.Worker(
                id: workerId, taskDef: taskDef, capacity: 0, push: push, credit: 0)
        }
        logger.info("gRPC worker polling", metadata: ["lh.worker": "\(workerId)", LHLog.taskDef: "\(taskDef)"])
    }

    /// One more PollTaskRequest of a poller: room for one more task.
    func addCredit(connection: ObjectIdentifier) {
        let ready = state.withLock { s -> [(QueuedTask, TaskReservation)] in
            guard let credit = s.workers[connection]?.credit, let def = s.workers[connection]?.taskDef else {
                return []
            }
            s.workers[connection]!.credit = credit + 1
            return s.assignable(def)
        }
        handOver(ready)
    }

    /// The worker's connection closed: it gets nothing more. The TaskRuns it
    /// held stay TASK_RUNNING: the worker keeps running them and lists them
    /// when it subscribes again; otherwise they retry when their attempts
    /// time out.
    func disconnected(connection: ObjectIdentifier) {
        let gone = state.withLock { s -> DispatchState.Worker? in
            guard let worker = s.workers.removeValue(forKey: connection) else { return nil }
            s.order[worker.taskDef]?.removeAll { $0 == connection }
            return worker
        }
        if let gone, !gone.holding.isEmpty {
            logger.warning(
                "worker left holding TaskRuns; they retry when their attempts time out",
                metadata: ["lh.worker": "\(gone.id)", "lh.holding": "\(gone.holding.count)"])
        }
    }

    /// A report came in: the worker has room again.
    /// A worker connected to several servers may report on another
    /// connection than the one that delivered (that one was lost): the
    /// room is given back where the attempt was held.
    func reported(connection: ObjectIdentifier, wfRunId: String, guid: String) {
        let ready = state.withLock { s -> [(QueuedTask, TaskReservation)] in
            let key = DispatchState.key(wfRunId, guid)
            if let i = s.workers.index(forKey: connection), s.workers.values[i].holding.remove(key) != nil {
                return s.assignable(s.workers.values[i].taskDef)
            }
            guard let i = s.workers.firstIndex(where: { $0.value.holding.contains(key) }) else {
                return s.workers[connection].map { s.assignable($0.taskDef) } ?? []
            }
            s.workers.values[i].holding.remove(key)
            return s.assignable(s.workers.values[i].taskDef)
        }
        handOver(ready)
    }

    /// Queued attempts with a worker: each becomes TASK_RUNNING in a job of
    /// its own (many share one group commit), then goes to its worker.
    private func handOver(_ ready: [(QueuedTask, TaskReservation)]) {
        for (task, r) in ready {
            starter.startQueuedTask(task, workerId: r.workerId) { result in
                switch result {
                case .success(let scheduled?):
                    r.push.send(scheduled)
                case .success(nil):
                    self.release(r)
                case .failure(let error):
                    // Withdrawn by a halt, deleted, or already handed over: not for a worker.
                    self.release(r)
                    self.logger.debug(
                        "queued TaskRun not handed over",
                        metadata: [LHLog.taskRunId: "\(r.key)", LHLog.error: "\(error)"])
                    self.starter.dropQueuedTask(task)
                }
            }
        }
    }
}

extension TaskDispatcher: DirectReservations {
    /// For a job whose command just made a TaskRun attempt ready: a worker's
    /// room, when one has room and nothing of the TaskDef is queued before it.
    /// `prefer`: the connection of the worker whose report made it ready. It
    /// gets the attempt if it takes that TaskDef and has room, so that the
    /// report's answer and the next task leave in one frame write and the
    /// worker wakes once for both (other workers are not woken at all).
    func reserveDirect(taskDef: String, wfRunId: String, guid: String, prefer: ObjectIdentifier? = nil)
        -> TaskReservation?
    {
        state.withLock { s in
            guard s.queues[taskDef]?.isEmpty ?? true else { return nil }
            return s.reserve(taskDef, key: DispatchState.key(wfRunId, guid), prefer: prefer)
        }
    }

    func release(_ r: TaskReservation) {
        let ready = state.withLock { s -> [(QueuedTask, TaskReservation)] in
            guard s.giveBack(r) else { return [] }
            return s.assignable(r.taskDef)
        }
        handOver(ready)
    }
}

extension TaskDispatcher: EffectSink {
    func carryOut(_ effects: [(String, LHEffect)], deleted: Set<String>) {
        for (id, effect) in effects {
            switch effect {
            case .dispatchTask(let guid, let def, let attempt):
                enqueue(QueuedTask(wfRunId: id, taskGuid: guid, taskDef: def, attempt: attempt))
            case .withdrawTask(let guid, let def):
                withdraw(wfRunId: id, guid: guid, taskDef: def)
            default:
                break
            }
        }
        for id in deleted { removeAll(of: id) }
    }
}
