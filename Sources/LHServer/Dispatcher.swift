import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import Logging
import Synchronization

/// Per-TaskDef queues and the workers subscribed to them. A TaskRun attempt
/// is handed to a worker only within that worker's capacity, and becomes
/// TASK_RUNNING (durably) before the worker sees it: either in the very
/// transaction that made it ready (``reserveDirect``, when a worker has room
/// and nothing of its TaskDef waits), or through the queue and a command of
/// its own.
final class TaskDispatcher: Sendable {
    struct Worker {
        var id: String
        var taskDef: String
        var capacity: Int
        var holding: Set<String> = []   // "<wfRunId>/<guid>"
        let push: LHResponder
    }

    /// A worker's room taken for one TaskRun attempt.
    struct Reservation: Sendable {
        let connection: ObjectIdentifier
        let workerId: String
        let taskDef: String
        let key: String
        let push: LHResponder
    }

    struct State {
        var queues: [String: TaskQueue] = [:]
        var queuedKeys: Set<String> = []
        var workers: [ObjectIdentifier: Worker] = [:]
        var order: [String: [ObjectIdentifier]] = [:]
        var nextWorker: [String: Int] = [:]

        /// A worker of `taskDef` with room, in turn; its room is taken for `key`.
        /// `prefer`: this worker's connection first, if it takes `taskDef` and has room.
        mutating func reserve(_ taskDef: String, key: String, prefer: ObjectIdentifier? = nil) -> Reservation? {
            // No `let w = workers[id]` before the insert: the copy would make it copy the whole set.
            if let id = prefer, workers[id]?.taskDef == taskDef, let held = workers[id]?.holding.count, held < workers[id]!.capacity {
                workers[id]!.holding.insert(key)
                let w = workers[id]!
                return Reservation(connection: id, workerId: w.id, taskDef: taskDef, key: key, push: w.push)
            }
            guard let list = order[taskDef], !list.isEmpty else { return nil }
            let start = nextWorker[taskDef, default: 0]
            for i in 0..<list.count {
                let id = list[(start + i) % list.count]
                // Not `if let w = workers[id]`: a copy would make the insert below copy the whole set.
                guard let held = workers[id]?.holding.count, held < workers[id]!.capacity else { continue }
                nextWorker[taskDef] = (start + i + 1) % list.count
                workers[id]!.holding.insert(key)
                let w = workers[id]!
                return Reservation(connection: id, workerId: w.id, taskDef: taskDef, key: key, push: w.push)
            }
            return nil
        }

        /// Queued attempts of `taskDef` for workers with room.
        mutating func assignable(_ taskDef: String) -> [(QueuedTask, Reservation)] {
            var out: [(QueuedTask, Reservation)] = []
            while queues[taskDef]?.isEmpty == false {
                guard let task = queues[taskDef]?.peekFirst(),
                      let r = reserve(taskDef, key: TaskDispatcher.key(task.wfRunId, task.taskGuid))
                else { break }
                _ = queues[taskDef]!.popFirst()
                queuedKeys.remove(r.key)
                out.append((task, r))
            }
            return out
        }
    }

    private let state = Mutex(State())
    private let logger: Logger
    private let processor: CommandProcessor

    init(processor: CommandProcessor, logger: Logger) {
        self.processor = processor
        self.logger = logger
    }

    static func key(_ wfRunId: String, _ guid: String) -> String { "\(wfRunId)/\(guid)" }

    func enqueue(_ task: QueuedTask) {
        let key = Self.key(task.wfRunId, task.taskGuid)
        let ready = state.withLock { s -> [(QueuedTask, Reservation)] in
            guard s.queuedKeys.insert(key).inserted else { return [] }
            s.queues[task.taskDef, default: TaskQueue()].append(task)
            return s.assignable(task.taskDef)
        }
        handOver(ready)
    }

    func withdraw(wfRunId: String, guid: String, taskDef: String) {
        let key = Self.key(wfRunId, guid)
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

    /// Number of TaskRuns waiting for a worker, per TaskDef.
    func queueDepths() -> [String: Int] { state.withLock { $0.queues.mapValues(\.count) } }

    func subscribe(connection: ObjectIdentifier, workerId: String, taskDef: String, capacity: Int,
                   push: LHResponder) {
        let ready = state.withLock { s -> [(QueuedTask, Reservation)] in
            if s.workers[connection] == nil { s.order[taskDef, default: []].append(connection) }
            s.workers[connection] = Worker(id: workerId, taskDef: taskDef, capacity: max(1, capacity), push: push)
            return s.assignable(taskDef)
        }
        logger.info("worker subscribed", metadata: ["lh.worker": "\(workerId)", LHLog.taskDef: "\(taskDef)", "lh.capacity": "\(capacity)"])
        handOver(ready)
    }

    /// The worker's connection closed: it gets nothing more. The TaskRuns it
    /// held stay TASK_RUNNING until their attempts time out.
    func disconnected(connection: ObjectIdentifier) {
        let gone = state.withLock { s -> Worker? in
            guard let worker = s.workers.removeValue(forKey: connection) else { return nil }
            s.order[worker.taskDef]?.removeAll { $0 == connection }
            return worker
        }
        if let gone, !gone.holding.isEmpty {
            logger.warning("worker left holding TaskRuns; they retry when their attempts time out",
                           metadata: ["lh.worker": "\(gone.id)", "lh.holding": "\(gone.holding.count)"])
        }
    }

    /// A report came in: the worker has room again.
    func reported(connection: ObjectIdentifier, wfRunId: String, guid: String) {
        let ready = state.withLock { s -> [(QueuedTask, Reservation)] in
            guard let def = s.workers[connection]?.taskDef else { return [] }
            s.workers[connection]!.holding.remove(Self.key(wfRunId, guid))
            return s.assignable(def)
        }
        handOver(ready)
    }

    /// For a job whose command just made a TaskRun attempt ready: a worker's
    /// room, when one has room and nothing of the TaskDef is queued before it.
    /// `prefer`: the connection of the worker whose report made it ready. It
    /// gets the attempt if it takes that TaskDef and has room, so that the
    /// report's answer and the next task leave in one frame write and the
    /// worker wakes once for both (other workers are not woken at all).
    func reserveDirect(taskDef: String, wfRunId: String, guid: String, prefer: ObjectIdentifier? = nil) -> Reservation? {
        state.withLock { s in
            guard s.queues[taskDef]?.isEmpty ?? true else { return nil }
            return s.reserve(taskDef, key: Self.key(wfRunId, guid), prefer: prefer)
        }
    }

    /// A reservation that was not used (its command failed or was not stored).
    func release(_ r: Reservation) {
        let ready = state.withLock { s -> [(QueuedTask, Reservation)] in
            guard s.workers[r.connection]?.holding.remove(r.key) != nil else { return [] }
            return s.assignable(r.taskDef)
        }
        handOver(ready)
    }

    /// Queued attempts with a worker: each becomes TASK_RUNNING in a job of
    /// its own (many share one group commit), then goes to its worker.
    private func handOver(_ ready: [(QueuedTask, Reservation)]) {
        for (task, r) in ready {
            let processor = self.processor
            let logger = self.logger
            processor.enqueue(key: task.wfRunId, { (staging: inout CommandProcessor.Staging) -> any Sendable in
                try CommandProcessor.apply(.taskStarted(taskGuid: task.taskGuid, attempt: task.attempt, workerId: r.workerId),
                                           to: task.wfRunId, in: &staging)
                staging.batch.dequeued.append((task.wfRunId, task.taskGuid))
                return try staging.state(task.wfRunId)?.scheduledTask(taskGuid: task.taskGuid, attempt: task.attempt) as Littlehorse_ScheduledTask?
            }, done: { result in
                switch result {
                case .success(let scheduled as Littlehorse_ScheduledTask):
                    r.push.yield(Lhwire_Envelope(id: 0, .scheduledTask(scheduled)))
                case .success:
                    self.release(r)
                case .failure(let error):
                    // Withdrawn by a halt, deleted, or already handed over: not for a worker.
                    self.release(r)
                    logger.debug("queued TaskRun not handed over", metadata: [LHLog.taskRunId: "\(r.key)", LHLog.error: "\(error)"])
                    processor.enqueue(key: task.wfRunId, { (staging: inout CommandProcessor.Staging) -> any Sendable in
                        staging.batch.dequeued.append((task.wfRunId, task.taskGuid))
                        return ()
                    }, done: { _ in })
                }
            })
        }
    }
}

/// A FIFO of queued attempts: O(1) at both ends.
struct TaskQueue {
    private var items: [QueuedTask] = []
    private var head = 0

    var isEmpty: Bool { head == items.count }
    var count: Int { items.count - head }

    mutating func append(_ task: QueuedTask) { items.append(task) }

    func peekFirst() -> QueuedTask? { head < items.count ? items[head] : nil }

    mutating func popFirst() -> QueuedTask? {
        guard head < items.count else { return nil }
        let task = items[head]
        head += 1
        if head >= 1024 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return task
    }

    mutating func removeAll(where predicate: (QueuedTask) -> Bool) {
        items = items[head...].filter { !predicate($0) }
        head = 0
    }
}

/// Fires the engine's timers from their due times. Timers live in a
/// dictionary (the truth) and a min-heap by due time (entries whose timer was
/// cancelled or replaced are skipped when they come up).
actor TimerService {
    private var timers: [String: StoredTimer] = [:]   // by "<wfRunId>|<key>"
    private var heap = TimerHeap()
    private let processor: CommandProcessor
    private let logger: Logger
    private var wake: CheckedContinuation<Void, Never>?
    private var woken = false
    /// When the run loop will look again on its own.
    private var sleepingUntil = Date.distantPast

    /// Effects from committed group commits, in commit order, not yet applied.
    private let inbox = DrainQueue<([(String, LHEffect)], Set<String>)>()

    init(processor: CommandProcessor, logger: Logger) {
        self.processor = processor
        self.logger = logger
    }

    static func id(_ wfRunId: String, _ key: LHTimerKey) -> String { "\(wfRunId)|\(key)" }

    /// Takes committed timer effects from any thread without waiting; they
    /// are applied in the order submitted (one task drains them).
    nonisolated func submit(_ effects: [(String, LHEffect)], deleted: Set<String>) {
        if inbox.append((effects, deleted)) { Task { await self.drainInbox() } }
    }

    private func drainInbox() {
        while true {
            let items = inbox.takeAll()
            if items.isEmpty { return }
            for (effects, deleted) in items { carryOut(effects, deleted: deleted) }
        }
    }

    func schedule(_ timer: StoredTimer) {
        let id = Self.id(timer.wfRunId, timer.key)
        timers[id] = timer
        heap.push(TimerHeap.Entry(due: timer.due, id: id))
        if timer.due < sleepingUntil { wakeUp() }
    }

    func cancel(_ wfRunId: String, _ key: LHTimerKey) {
        timers[Self.id(wfRunId, key)] = nil
        if heap.count > 1024 && heap.count > timers.count * 4 { rebuildHeap() }
    }

    func removeAll(of wfRunId: String) {
        timers = timers.filter { $0.value.wfRunId != wfRunId }
        rebuildHeap()
    }

    private func rebuildHeap() {
        heap = TimerHeap()
        for (id, t) in timers { heap.push(.init(due: t.due, id: id)) }
    }

    var count: Int { timers.count }

    /// Runs until cancelled.
    func run() async {
        while !Task.isCancelled {
            woken = false
            let now = Date()
            while let top = heap.peek(), top.due <= now {
                heap.pop()
                guard let timer = timers[top.id], timer.due == top.due else { continue }
                timers[top.id] = nil
                fire(timer)
            }
            // Skip stale entries so the next due time is a live timer's.
            while let top = heap.peek(), timers[top.id]?.due != top.due { heap.pop() }
            let wait = heap.peek().map { max(0.0005, min($0.due.timeIntervalSinceNow, 1.0)) } ?? 1.0
            sleepingUntil = Date().addingTimeInterval(wait)
            await withTaskGroup(of: Void.self) { group in
                group.addTask { try? await Task.sleep(for: .milliseconds(Int(wait * 1000) + 1)) }
                group.addTask { await self.waitForWake() }
                await group.next()
                group.cancelAll()
                self.wakeUp()
            }
            sleepingUntil = .distantPast
        }
    }

    private func fire(_ timer: StoredTimer) {
        let logger = self.logger
        processor.enqueue(key: timer.wfRunId, { (staging: inout CommandProcessor.Staging) -> any Sendable in
            staging.batch.timersCancelled.append((timer.wfRunId, timer.key))
            guard try staging.state(timer.wfRunId) != nil else { return () }
            try CommandProcessor.apply(.timerFired(timer.key), to: timer.wfRunId, in: &staging)
            return ()
        }, done: { result in
            if case .failure(let error) = result {
                logger.warning("timer failed", metadata: ["lh.timer": "\(timer.key)", LHLog.wfRunId: "\(timer.wfRunId)", LHLog.error: "\(error)"])
            }
        })
    }

    private func waitForWake() async {
        if woken { return }
        await withCheckedContinuation { c in
            if let old = wake { old.resume() }
            wake = c
        }
    }

    private func wakeUp() {
        if let wake {
            wake.resume()
            self.wake = nil
        } else {
            woken = true
        }
    }
}

/// A binary min-heap of timer entries by due time.
struct TimerHeap {
    struct Entry {
        var due: Date
        var id: String
    }

    private var items: [Entry] = []
    var count: Int { items.count }

    func peek() -> Entry? { items.first }

    mutating func push(_ e: Entry) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i].due < items[parent].due else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    @discardableResult
    mutating func pop() -> Entry? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count && items[l].due < items[m].due { m = l }
            if r < items.count && items[r].due < items[m].due { m = r }
            if m == i { break }
            items.swapAt(i, m)
            i = m
        }
        return top
    }
}

/// Sends committed effects to the dispatcher and the timers: one call to
/// each per group commit, effects in their order.
struct EffectRouter: EffectSink {
    let dispatcher: TaskDispatcher
    let timers: TimerService

    func carryOut(_ effects: [(String, LHEffect)], deleted: Set<String>) {
        var tasks: [(String, LHEffect)] = []
        var timerEffects: [(String, LHEffect)] = []
        for (id, effect) in effects {
            switch effect {
            case .dispatchTask, .withdrawTask: tasks.append((id, effect))
            case .scheduleTimer, .cancelTimer: timerEffects.append((id, effect))
            case .wfRunTerminated: break
            }
        }
        if !tasks.isEmpty || !deleted.isEmpty { dispatcher.carryOut(tasks, deleted: deleted) }
        if !timerEffects.isEmpty || !deleted.isEmpty { timers.submit(timerEffects, deleted: deleted) }
    }
}

extension TaskDispatcher {
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

extension TimerService {
    func carryOut(_ effects: [(String, LHEffect)], deleted: Set<String>) {
        for (id, effect) in effects {
            switch effect {
            case .scheduleTimer(let at, let key): schedule(StoredTimer(wfRunId: id, key: key, due: at))
            case .cancelTimer(let key): cancel(id, key)
            default: break
            }
        }
        for id in deleted { removeAll(of: id) }
    }
}
