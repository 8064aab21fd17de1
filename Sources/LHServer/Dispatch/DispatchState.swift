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
        let push: LHResponder
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
        // No `let w = workers[id]` before the insert: the copy would make it copy the whole set.
        if let id = prefer, workers[id]?.taskDef == taskDef, let held = workers[id]?.holding.count,
            held < workers[id]!.capacity
        {
            workers[id]!.holding.insert(key)
            let w = workers[id]!
            return TaskReservation(connection: id, workerId: w.id, taskDef: taskDef, key: key, push: w.push)
        }
        guard let list = order[taskDef], !list.isEmpty else { return nil }
        let start = nextWorker[taskDef, default: 0]
        for i in 0..<list.count {
            let id = list[(start + i) % list.count]
            guard let held = workers[id]?.holding.count, held < workers[id]!.capacity else { continue }
            nextWorker[taskDef] = (start + i + 1) % list.count
            workers[id]!.holding.insert(key)
            let w = workers[id]!
            return TaskReservation(connection: id, workerId: w.id, taskDef: taskDef, key: key, push: w.push)
        }
        return nil
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
