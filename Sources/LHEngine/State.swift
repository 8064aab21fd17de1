import Foundation
import LHProto
import SwiftProtobuf

/// Where one NodeRun lives: its ThreadRun and position.
public struct NodeRunKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var thread: Int32
    public var position: Int32
    public init(thread: Int32, position: Int32) {
        self.thread = thread
        self.position = position
    }
    public static func < (a: NodeRunKey, b: NodeRunKey) -> Bool { (a.thread, a.position) < (b.thread, b.position) }
    public var description: String { "\(thread)/\(position)" }
}

/// Where one Variable lives: the ThreadRun that declares it, and its name.
public struct VariableKey: Hashable, Sendable, Comparable {
    public var thread: Int32
    public var name: String
    public init(thread: Int32, name: String) {
        self.thread = thread
        self.name = name
    }
    public static func < (a: VariableKey, b: VariableKey) -> Bool { (a.thread, a.name) < (b.thread, b.name) }
}

/// Everything of one WfRun, in LittleHorse's own messages: the WfRun with
/// its ThreadRuns, its NodeRuns, Variables, TaskRuns and ExternalEvents.
/// The engine changes it only through ``LHEngine``.
public struct WfRunState: Sendable, Equatable {
    public var wfRun: Littlehorse_WfRun
    public var nodeRuns: [NodeRunKey: Littlehorse_NodeRun] = [:]
    public var variables: [VariableKey: Littlehorse_Variable] = [:]
    /// By task guid.
    public var taskRuns: [String: Littlehorse_TaskRun] = [:]
    /// In arrival order.
    public var externalEvents: [Littlehorse_ExternalEvent] = []

    public init(wfRun: Littlehorse_WfRun) {
        self.wfRun = wfRun
    }

    public var id: String { wfRun.id.id }

    public func thread(_ number: Int32) -> Littlehorse_ThreadRun? {
        wfRun.threadRuns.first { $0.number == number }
    }

    /// The current NodeRun of a ThreadRun.
    public func currentNodeRun(of thread: Int32) -> Littlehorse_NodeRun? {
        guard let t = self.thread(thread) else { return nil }
        return nodeRuns[NodeRunKey(thread: thread, position: t.currentNodePosition)]
    }

    /// The value of a variable as declared by `thread` (no scoping).
    public func variable(_ name: String, thread: Int32 = 0) -> Littlehorse_VariableValue? {
        variables[VariableKey(thread: thread, name: name)]?.value
    }

    /// The WfRun is over: COMPLETED, ERROR or EXCEPTION.
    public var isTerminated: Bool { wfRun.status.isTerminal }

    /// The work item a worker receives for one attempt of a TaskRun.
    public func scheduledTask(taskGuid: String, attempt: Int32) -> Littlehorse_ScheduledTask? {
        guard let taskRun = taskRuns[taskGuid] else { return nil }
        var task = Littlehorse_ScheduledTask()
        task.taskRunID = taskRun.id
        task.taskDefID = taskRun.taskDefID
        task.attemptNumber = attempt
        task.variables = taskRun.inputVariables
        task.createdAt = taskRun.scheduledAt
        task.source = taskRun.source
        return task
    }
}

extension Littlehorse_LHStatus {
    /// COMPLETED, ERROR or EXCEPTION.
    public var isTerminal: Bool { self == .completed || self == .error || self == .exception }
}

/// A timer the engine asks for; the server fires it back as
/// ``LHCommand/timerFired(_:)``.
public enum LHTimerKey: Hashable, Sendable, CustomStringConvertible {
    case sleep(NodeRunKey)
    case externalEventTimeout(NodeRunKey)
    case retryBackoff(taskGuid: String, attempt: Int32)
    case attemptTimeout(taskGuid: String, attempt: Int32)

    /// A stable text form, for storage.
    public var description: String {
        switch self {
        case .sleep(let k): "sleep:\(k.thread):\(k.position)"
        case .externalEventTimeout(let k): "event-timeout:\(k.thread):\(k.position)"
        case .retryBackoff(let guid, let attempt): "retry:\(attempt):\(guid)"
        case .attemptTimeout(let guid, let attempt): "attempt-timeout:\(attempt):\(guid)"
        }
    }

    /// Parses ``description``.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", maxSplits: 2).map(String.init)
        guard parts.count == 3 else { return nil }
        switch parts[0] {
        case "sleep", "event-timeout":
            let rest = parts[1...].joined(separator: ":").split(separator: ":")
            guard rest.count == 2, let t = Int32(rest[0]), let p = Int32(rest[1]) else { return nil }
            self =
                parts[0] == "sleep"
                ? .sleep(.init(thread: t, position: p)) : .externalEventTimeout(.init(thread: t, position: p))
        case "retry", "attempt-timeout":
            guard let a = Int32(parts[1]) else { return nil }
            self =
                parts[0] == "retry"
                ? .retryBackoff(taskGuid: parts[2], attempt: a) : .attemptTimeout(taskGuid: parts[2], attempt: a)
        default:
            return nil
        }
    }
}

/// What the engine asks the world to do after a command.
public enum LHEffect: Equatable, Sendable {
    /// Queue this attempt of the TaskRun for a worker of its TaskDef.
    case dispatchTask(taskGuid: String, taskDef: String, attempt: Int32)
    /// Take a queued (not yet handed over) TaskRun out of its queue.
    case withdrawTask(taskGuid: String, taskDef: String)
    case scheduleTimer(at: Date, key: LHTimerKey)
    case cancelTimer(LHTimerKey)
    /// The WfRun reached COMPLETED, ERROR or EXCEPTION.
    case wfRunTerminated(Littlehorse_LHStatus)
}

/// A command for one WfRun; time comes with it (``LHEngine/apply(_:to:context:now:)``).
public enum LHCommand: Sendable {
    /// A stored ExternalEvent for this WfRun.
    case putExternalEvent(Littlehorse_ExternalEvent)
    /// The TaskRun attempt is being handed to a worker now.
    case taskStarted(taskGuid: String, attempt: Int32, workerId: String)
    case reportTask(Littlehorse_ReportTaskRun)
    /// The attempt was in a worker's hands when the server stopped, and no
    /// worker claimed it after the restart: it ends as if its timeout had
    /// passed (TASK_TIMEOUT, `reason` as its error), so it is retried now if
    /// it has retries left. Ignored unless the attempt is still running.
    case attemptLost(taskGuid: String, attempt: Int32, reason: String)
    case timerFired(LHTimerKey)
    case stopThread(Int32)
    case resumeThread(Int32)
}
