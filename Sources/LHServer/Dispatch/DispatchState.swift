import Foundation
import LHStore

/// The dispatcher's queues and workers: which worker has room for which
/// TaskDef, in turn. A value: the dispatcher holds it under one lock.
struct DispatchState {
    struct Worker {
        var id: String
        var taskDef: String
        var capacity: Int
        var holding: Set<String> = []  // "<wfRunId>/<guid>"
        let push: WorkerPush
        /// A gRPC poller's credit: its PollTaskRequests not yet answered.
        /// nil for a worker of our protocol, whose room is its capacity less
        /// what it holds until it reports.
        var credit: Int? = nil
    }

    var queues: [String: TaskQueue] = [:]
    var queuedKeys: Set<String> = []
    var workers: [ObjectIdentifier: Worker] = [:]
    var order: [String: [ObjectIdentifier]] = [:]
    var nextWorker: [String: Int] = [:]

    static func key(_ wfRunId: String, _ guid: String) -> String { "\(wfRunId)/\(guid)" }

    /// A worker of `taskDef` with room, in turn; its room is taken for `key`.
    /// `prefer`: this worker's connection first, if it takes `taskDef` and has room.
    mutating func reserve(_ taskDef: String, key: String, prefer: ObjectIdentifier? = nil) -> TaskReservation? {
        if let id = prefer, workers[id]?.taskDef == taskDef, take(id, key) {
            return reservation(id, key)
        }
        guard let list = order[taskDef], !list.isEmpty else { return nil }
        let start = nextWorker[taskDef, default: 0]
        for i in 0..<list.count {
            let id = list[(start + i) % list.count]
            guard take(id, key) else { continue }
            nextWorker[taskDef] = (start + i + 1) % list.count
            return reservation(id, key)
        }
        return nil
    }

    /// Takes the worker's room for `key`, if it has room. (In place through
    /// one index: a copy of the worker would copy its whole set.)
    private mutating func take(_ id: ObjectIdentifier, _ key: String) -> Bool {
        guard let i = workers.index(forKey: id) else { return false }
        if let credit = workers.values[i].credit {
            guard credit > 0 else { return false }
            workers.values[i].credit = credit - 1
            return true
        }
        guard workers.values[i].holding.count < workers.values[i].capacity else { return false }
        workers.values[i].holding.insert(key)
        return true
    }

    private func reservation(_ id: ObjectIdentifier, _ key: String) -> TaskReservation {
        let w = workers[id]!
        return TaskReservation(connection: id, workerId: w.id, taskDef: w.taskDef, key: key, push: w.push)
    }

    /// Gives a reservation's room back; false when the worker is gone or did
    /// not hold it.
    mutating func giveBack(_ r: TaskReservation) -> Bool {
        guard workers[r.connection] != nil else { return false }
        if let credit = workers[r.connection]!.credit {
            workers[r.connection]!.credit = credit + 1
            return true
        }
        return workers[r.connection]!.holding.remove(r.key) != nil
    }

    /// Queued attempts of `taskDef` for workers with room.
    mutating func assignable(_ taskDef: String) -> [(QueuedTask, TaskReservation)] {
        var out: [(QueuedTask, TaskReservation)] = []
        while queues[taskDef]?.isEmpty == false {
            guard let task = queues[taskDef]?.peekFirst(),
                let r = reserve(taskDef, key: Self.key(task.wfRunId, task.taskGuid))
            else { break }
            _ = queues[taskDef]!.popFirst()
            queuedKeys.remove(r.key)
            out.append((task, r))
        }
        return out
    }
}
