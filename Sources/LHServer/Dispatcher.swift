import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import Logging

/// Per-TaskDef queues and the workers subscribed to them. A TaskRun attempt
/// is handed to a worker only within that worker's capacity, and becomes
/// TASK_RUNNING (durably) before the worker sees it.
actor TaskDispatcher {
    struct Worker {
        var id: String
        var taskDef: String
        var capacity: Int
        var holding: Set<String> = []   // "<wfRunId>/<guid>"
        let push: AsyncStream<Lhwire_Envelope>.Continuation
    }

    private var queues: [String: [QueuedTask]] = [:]
    private var queuedKeys: Set<String> = []
    private var workers: [ObjectIdentifier: Worker] = [:]
    private var order: [String: [ObjectIdentifier]] = [:]
    private var nextWorker: [String: Int] = [:]
    private var assigning: Set<String> = []
    private let logger: Logger
    private let processor: CommandProcessor

    init(processor: CommandProcessor, logger: Logger) {
        self.processor = processor
        self.logger = logger
    }

    static func key(_ wfRunId: String, _ guid: String) -> String { "\(wfRunId)/\(guid)" }

    func enqueue(_ task: QueuedTask) {
        let key = Self.key(task.wfRunId, task.taskGuid)
        guard queuedKeys.insert(key).inserted else { return }
        queues[task.taskDef, default: []].append(task)
        assign(task.taskDef)
    }

    func withdraw(wfRunId: String, guid: String, taskDef: String) {
        let key = Self.key(wfRunId, guid)
        guard queuedKeys.remove(key) != nil else { return }
        queues[taskDef]?.removeAll { $0.wfRunId == wfRunId && $0.taskGuid == guid }
    }

    func removeAll(of wfRunId: String) {
        for (def, q) in queues {
            queues[def] = q.filter { $0.wfRunId != wfRunId }
        }
        queuedKeys = queuedKeys.filter { !$0.hasPrefix("\(wfRunId)/") }
    }

    /// Number of TaskRuns waiting for a worker, per TaskDef.
    func queueDepths() -> [String: Int] { queues.mapValues(\.count) }

    func subscribe(connection: ObjectIdentifier, workerId: String, taskDef: String, capacity: Int,
                   push: AsyncStream<Lhwire_Envelope>.Continuation) {
        if workers[connection] == nil { order[taskDef, default: []].append(connection) }
        workers[connection] = Worker(id: workerId, taskDef: taskDef, capacity: max(1, capacity), push: push)
        logger.info("worker subscribed", metadata: ["lh.worker": "\(workerId)", LHLog.taskDef: "\(taskDef)", "lh.capacity": "\(capacity)"])
        assign(taskDef)
    }

    /// The worker's connection closed: it gets nothing more. The TaskRuns it
    /// held stay TASK_RUNNING until their attempts time out.
    func disconnected(connection: ObjectIdentifier) {
        guard let worker = workers.removeValue(forKey: connection) else { return }
        order[worker.taskDef]?.removeAll { $0 == connection }
        if !worker.holding.isEmpty {
            logger.warning("worker left holding TaskRuns; they retry when their attempts time out",
                           metadata: ["lh.worker": "\(worker.id)", "lh.holding": "\(worker.holding.count)"])
        }
    }

    /// A report came in: the worker has room again.
    func reported(connection: ObjectIdentifier, wfRunId: String, guid: String) {
        guard var worker = workers[connection] else { return }
        worker.holding.remove(Self.key(wfRunId, guid))
        workers[connection] = worker
        assign(worker.taskDef)
    }

    /// Hands queued attempts of `taskDef` to workers with room, in turn.
    private func assign(_ taskDef: String) {
        guard !assigning.contains(taskDef) else { return }
        assigning.insert(taskDef)
        Task { await self.assignLoop(taskDef) }
    }

    private func assignLoop(_ taskDef: String) async {
        defer { assigning.remove(taskDef) }
        while let q = queues[taskDef], !q.isEmpty, let connection = pickWorker(taskDef) {
            let task = queues[taskDef]!.removeFirst()
            let key = Self.key(task.wfRunId, task.taskGuid)
            queuedKeys.remove(key)
            workers[connection]?.holding.insert(key)
            let workerId = workers[connection]?.id ?? "?"
            do {
                let scheduled = try await processor.submit(key: task.wfRunId) { (staging: inout CommandProcessor.Staging) -> Littlehorse_ScheduledTask? in
                    try CommandProcessor.apply(.taskStarted(taskGuid: task.taskGuid, attempt: task.attempt, workerId: workerId), to: task.wfRunId, in: &staging)
                    staging.batch.dequeued.append((task.wfRunId, task.taskGuid))
                    return try staging.state(task.wfRunId)?.scheduledTask(taskGuid: task.taskGuid, attempt: task.attempt)
                }
                if let scheduled, let worker = workers[connection] {
                    worker.push.yield(Lhwire_Envelope(id: 0, .scheduledTask(scheduled)))
                } else {
                    workers[connection]?.holding.remove(key)
                }
            } catch {
                // Withdrawn by a halt, deleted, or already handed over: not for a worker.
                workers[connection]?.holding.remove(key)
                logger.debug("queued TaskRun not handed over", metadata: [LHLog.taskRunId: "\(key)", LHLog.error: "\(error)"])
                _ = try? await processor.submit(key: task.wfRunId) { (staging: inout CommandProcessor.Staging) -> Void in
                    staging.batch.dequeued.append((task.wfRunId, task.taskGuid))
                }
            }
        }
    }

    private func pickWorker(_ taskDef: String) -> ObjectIdentifier? {
        guard let list = order[taskDef], !list.isEmpty else { return nil }
        let start = nextWorker[taskDef, default: 0]
        for i in 0..<list.count {
            let id = list[(start + i) % list.count]
            if let w = workers[id], w.holding.count < w.capacity {
                nextWorker[taskDef] = (start + i + 1) % list.count
                return id
            }
        }
        return nil
    }
}

/// Fires the engine's timers from their due times.
actor TimerService {
    private var timers: [String: StoredTimer] = [:]   // by "<wfRunId>|<key>"
    private let processor: CommandProcessor
    private let logger: Logger
    private var wake: CheckedContinuation<Void, Never>?
    private var woken = false

    init(processor: CommandProcessor, logger: Logger) {
        self.processor = processor
        self.logger = logger
    }

    static func id(_ wfRunId: String, _ key: LHTimerKey) -> String { "\(wfRunId)|\(key)" }

    func schedule(_ timer: StoredTimer) {
        timers[Self.id(timer.wfRunId, timer.key)] = timer
        if let wake {
            wake.resume()
            self.wake = nil
        } else {
            woken = true
        }
    }

    func cancel(_ wfRunId: String, _ key: LHTimerKey) {
        timers[Self.id(wfRunId, key)] = nil
    }

    func removeAll(of wfRunId: String) {
        timers = timers.filter { $0.value.wfRunId != wfRunId }
    }

    var count: Int { timers.count }

    private func nextDue() -> Date? { timers.values.min(by: { $0.due < $1.due })?.due }

    /// Runs until cancelled.
    func run() async {
        while !Task.isCancelled {
            woken = false
            let now = Date()
            let due = timers.values.filter { $0.due <= now }.sorted { $0.due < $1.due }
            for timer in due {
                timers[Self.id(timer.wfRunId, timer.key)] = nil
                let processor = self.processor
                let logger = self.logger
                Task {
                    do {
                        try await processor.submit(key: timer.wfRunId) { (staging: inout CommandProcessor.Staging) -> Void in
                            staging.batch.timersCancelled.append((timer.wfRunId, timer.key))
                            guard try staging.state(timer.wfRunId) != nil else { return }
                            try CommandProcessor.apply(.timerFired(timer.key), to: timer.wfRunId, in: &staging)
                        }
                    } catch {
                        logger.warning("timer failed", metadata: ["lh.timer": "\(timer.key)", LHLog.wfRunId: "\(timer.wfRunId)", LHLog.error: "\(error)"])
                    }
                }
            }
            let wait = nextDue().map { max(0.0005, min($0.timeIntervalSinceNow, 1.0)) } ?? 1.0
            await withTaskGroup(of: Void.self) { group in
                group.addTask { try? await Task.sleep(for: .milliseconds(Int(wait * 1000) + 1)) }
                group.addTask { await self.waitForWake() }
                await group.next()
                group.cancelAll()
                self.wakeUp()
            }
        }
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

/// Sends committed effects to the dispatcher and the timers.
struct EffectRouter: EffectSink {
    let dispatcher: TaskDispatcher
    let timers: TimerService

    func carryOut(_ effects: [(String, LHEffect)], deleted: Set<String>) async {
        for (id, effect) in effects {
            switch effect {
            case .dispatchTask(let guid, let def, let attempt):
                await dispatcher.enqueue(QueuedTask(wfRunId: id, taskGuid: guid, taskDef: def, attempt: attempt))
            case .withdrawTask(let guid, let def):
                await dispatcher.withdraw(wfRunId: id, guid: guid, taskDef: def)
            case .scheduleTimer(let at, let key):
                await timers.schedule(StoredTimer(wfRunId: id, key: key, due: at))
            case .cancelTimer(let key):
                await timers.cancel(id, key)
            case .wfRunTerminated:
                break
            }
        }
        for id in deleted {
            await dispatcher.removeAll(of: id)
            await timers.removeAll(of: id)
        }
    }
}
