import LHEngine
import LHProto

/// Why a ThreadRun is HALTING or HALTED, in plain words: what an operator
/// reads on the WfRun page instead of the halt reasons' JSON.
enum HaltWords {
    /// One line per reason; for a HALTING thread, first what it waits for.
    static func lines(for thread: Littlehorse_ThreadRun, in state: WfRunState) -> [String] {
        var lines: [String] = []
        if thread.status == .halting {
            lines.append("halting: " + waitingFor(thread, in: state))
        }
        for reason in thread.haltReasons {
            lines.append(words(reason, thread: thread, in: state))
        }
        return lines
    }

    /// What a HALTING thread still waits for before it is HALTED.
    static func waitingFor(_ thread: Littlehorse_ThreadRun, in state: WfRunState) -> String {
        if let node = state.currentNodeRun(of: thread.number), node.status == .halting || node.status == .running,
            case .task(let t)? = node.nodeType, let run = state.taskRuns[t.taskRunID.taskGuid],
            let attempt = run.attempts.last, attempt.status == .taskRunning
        {
            let worker = attempt.taskWorkerID.isEmpty ? "a worker" : "worker \(attempt.taskWorkerID)"
            return "waiting for TaskRun \(run.id.taskGuid) (\(run.taskDefID.name), attempt \(run.attempts.count - 1)) "
                + "held by \(worker) to report"
        }
        let children = thread.childThreadIds.filter { n in
            guard let child = state.thread(n) else { return false }
            return !child.status.isTerminal && child.status != .halted
        }
        if !children.isEmpty {
            return "waiting for child thread\(children.count == 1 ? "" : "s") "
                + children.map { "\($0)" }.joined(separator: ", ") + " to halt"
        }
        return "waiting for its current node to halt"
    }

    static func words(_ reason: Littlehorse_ThreadHaltReason, thread: Littlehorse_ThreadRun, in state: WfRunState)
        -> String
    {
        let halted = thread.status == .halted ? "halted" : "will halt"
        switch reason.reason {
        case .interrupted(let i):
            let handler = state.thread(i.interruptThreadID)
            let event = handler.map { eventName($0.interruptTriggerID) } ?? "an ExternalEvent"
            return "\(halted): interrupted by event \(event), handler thread \(i.interruptThreadID)"
        case .pendingInterrupt(let p):
            return "\(halted): interrupt by event \(eventName(p.externalEventID)) pending: its handler starts once "
                + "this thread is HALTED"
        case .parentHalted(let p):
            return "\(halted): its parent thread \(p.parentThreadID) is halted"
        case .pendingFailure(let p):
            return "\(halted): a failure at node position \(p.nodeRunPosition) waits for this thread to halt "
                + "before its handler starts"
        case .handlingFailure(let h):
            return "\(halted): failure handler thread \(h.handlerThreadID) is running"
        case .manualHalt:
            return "\(halted): stopped by an operator (StopWfRun)"
        case .haltedByParent(let p):
            return "\(halted): halted by its parent thread \(p.parentThreadRunNumber)'s node at position "
                + "\(p.waitingNodeRunPosition)"
        case nil:
            return "\(halted): reason not given"
        }
    }

    static func eventName(_ id: Littlehorse_ExternalEventId) -> String {
        "\(id.externalEventDefID.name) (\(id.guid))"
    }
}
