import Foundation
import LHProto
import SwiftProtobuf

/// Halting, resuming and interrupts: the rules of docs/halting.md, each with
/// a test in Tests/LHEngineTests/InterruptTests.swift named after it.
extension Run {
    /// A thread with halt reasons: HALTING until its current NodeRun has
    /// halted and every child it must wait for is HALTED; then HALTED, and
    /// pending interrupt and failure handlers start.
    mutating func haltStep(_ n: Int32) -> Bool {
        var progress = false
        if thread(n).status == .running || thread(n).status == .starting {
            update(n) { $0.status = .halting }
            requestNodeHalt(nodeRunKey(n))
            progress = true
        }
        // Children halt with it (recursively, through their own steps).
        let mustHalt = Set(childrenToHalt(n))
        for c in children(n) where !thread(c).status.isTerminal {
            let reason = HaltReason.with { $0.parentHalted.parentThreadID = n }
            if mustHalt.contains(c) {
                if !thread(c).haltReasons.contains(reason) { addHaltReason(c, reason); progress = true }
            } else if thread(c).haltReasons.contains(reason) {
                removeHaltReason(c) { $0 == reason }
                progress = true
            }
        }
        if let node = currentNode(n), node.status == .halting, !taskInFlight(nodeRunKey(n)) {
            updateNode(nodeRunKey(n)) { $0.status = .halted }
            progress = true
        }
        // HALTED only when the current NodeRun has halted and every child it
        // must wait for is HALTED (or over); a child asked to halt later
        // (a manual stop reaching a handler) makes it HALTING again.
        let nodeHalted =
            currentNode(n).map { $0.status != .halting && $0.status != .running && $0.status != .starting } ?? true
        let childrenHalted = mustHalt.allSatisfy { thread($0).status == .halted || thread($0).status.isTerminal }
        let target: Littlehorse_LHStatus = nodeHalted && childrenHalted ? .halted : .halting
        if thread(n).status != target {
            update(n) { $0.status = target }
            progress = true
        }
        if thread(n).status == .halted {
            if startPendingHandlers(n) { progress = true }
        }
        return progress
    }

    /// Asks the current NodeRun to halt: at once, except a TASK whose TaskRun
    /// is in a worker's hands, which halts when the worker reports.
    mutating func requestNodeHalt(_ key: NodeRunKey) {
        guard let node = state.nodeRuns[key], node.status == .running || node.status == .starting else { return }
        if case .task = node.nodeType, let guid = taskGuid(of: node), let taskRun = state.taskRuns[guid],
            let attempt = taskRun.attempts.last
        {
            switch attempt.status {
            case .taskRunning:
                updateNode(key) { $0.status = .halting }
                return
            case .taskScheduled:
                effects.append(.withdrawTask(taskGuid: guid, taskDef: taskRun.taskDefID.name))
            case .taskPending:
                effects.append(.cancelTimer(.retryBackoff(taskGuid: guid, attempt: Int32(taskRun.attempts.count - 1))))
            default:
                break
            }
        }
        updateNode(key) { $0.status = .halted }
    }

    func taskGuid(of node: NodeRun) -> String? {
        guard case .task(let t) = node.nodeType, t.hasTaskRunID else { return nil }
        return t.taskRunID.taskGuid
    }

    func taskInFlight(_ key: NodeRunKey) -> Bool {
        guard let node = state.nodeRuns[key], let guid = taskGuid(of: node),
            let attempt = state.taskRuns[guid]?.attempts.last
        else { return false }
        return attempt.status == .taskRunning
    }

    /// A TaskRun still queued (not handed to a worker) is taken out of its
    /// queue.
    mutating func withdrawIfQueued(_ key: NodeRunKey) {
        guard let node = state.nodeRuns[key], let guid = taskGuid(of: node), let taskRun = state.taskRuns[guid],
            let attempt = taskRun.attempts.last
        else { return }
        if attempt.status == .taskScheduled && (node.status == .running || node.status == .starting) {
            effects.append(.withdrawTask(taskGuid: guid, taskDef: taskRun.taskDefID.name))
        } else if attempt.status == .taskPending && (node.status == .running || node.status == .starting) {
            effects.append(.cancelTimer(.retryBackoff(taskGuid: guid, attempt: Int32(taskRun.attempts.count - 1))))
        }
    }

    /// Starts the handlers a HALTED thread was waiting to start: one
    /// INTERRUPT thread per pending interrupt, one FAILURE_HANDLER per
    /// pending failure.
    mutating func startPendingHandlers(_ n: Int32) -> Bool {
        var progress = false
        for reason in thread(n).haltReasons {
            switch reason.reason {
            case .pendingInterrupt(let p):
                guard
                    let index = state.wfRun.pendingInterrupts.firstIndex(where: {
                        $0.externalEventID == p.externalEventID && $0.interruptedThreadID == n
                    })
                else {
                    removeHaltReason(n) { $0 == reason }
                    continue
                }
                let pending = state.wfRun.pendingInterrupts.remove(at: index)
                let event = state.externalEvents.first { $0.id == p.externalEventID }
                startHandler(
                    n, replacing: reason, specName: pending.handlerSpecName, type: .interrupt,
                    input: event?.content ?? .null, trigger: p.externalEventID,
                    what: "ExternalEvent '\(p.externalEventID.externalEventDefID.name)'")
                progress = true
            case .pendingFailure(let p):
                let key = NodeRunKey(thread: n, position: p.nodeRunPosition)
                guard let index = state.wfRun.pendingFailures.firstIndex(where: { $0.failedThreadRun == n }),
                    let failure = state.nodeRuns[key]?.failures.last
                else {
                    removeHaltReason(n) { $0 == reason }
                    continue
                }
                let pending = state.wfRun.pendingFailures.remove(at: index)
                let handler = startHandler(
                    n, replacing: reason, specName: pending.handlerSpecName, type: .failureHandler,
                    input: failure.hasContent ? failure.content : .null, trigger: nil,
                    what: "failure \(failure.failureName)")
                if let handler {
                    updateNode(key) {
                        let last = $0.failures.count - 1
                        $0.failures[last].failureHandlerThreadrunID = handler
                        $0.failureHandlerIds.append(handler)
                    }
                }
                progress = true
            default:
                break
            }
        }
        return progress
    }

    /// Starts a handler ThreadRun as a child of `n`, with `INPUT` set to
    /// `input` cast to the type the handler declares; a value that cannot be
    /// cast fails the handler with an ERROR.
    @discardableResult
    mutating func startHandler(
        _ n: Int32, replacing reason: HaltReason, specName: String, type: Littlehorse_ThreadType,
        input: Value, trigger: Littlehorse_ExternalEventId?, what: String
    ) -> Int32? {
        let handlerSpec = context.spec.threadSpecs[specName] ?? Littlehorse_ThreadSpec()
        let declaresInput = handlerSpec.variableDefs.contains { $0.varDef.name == "INPUT" }
        // The handler's number is known before it starts, so the halt reason
        // points at it before anything the handler does can end it.
        let number = Int32(state.wfRun.threadRuns.count)
        update(n) { t in
            guard let i = t.haltReasons.firstIndex(of: reason) else { return }
            if type == .interrupt {
                t.haltReasons[i] = .with { $0.interrupted.interruptThreadID = number }
            } else {
                t.haltReasons[i] = .with { $0.handlingFailure.handlerThreadID = number }
            }
        }
        guard
            let handler = startThread(
                specName: specName, type: type, parent: n, inputs: declaresInput ? ["INPUT": input] : [:],
                interruptTrigger: trigger)
        else {
            removeHaltReason(n) { r in
                if case .interrupted(let i)? = r.reason { return i.interruptThreadID == number }
                if case .handlingFailure(let h)? = r.reason { return h.handlerThreadID == number }
                return false
            }
            failNode(
                nodeRunKey(n),
                .error(
                    .internalError,
                    "cannot start handler '\(specName)' for \(what): the WfRun reached its limit of \(context.limits.maxThreadRuns) ThreadRuns"
                ))
            return nil
        }
        return handler
    }

    /// A thread with no halt reason left resumes where it stood; its children
    /// resume with it.
    mutating func resume(_ n: Int32) {
        update(n) { $0.status = .running }
        let reason = HaltReason.with { $0.parentHalted.parentThreadID = n }
        for c in children(n) where thread(c).haltReasons.contains(reason) {
            removeHaltReason(c) { $0 == reason }
        }
        let key = nodeRunKey(n)
        guard let node = state.nodeRuns[key], node.status == .halted || node.status == .halting else { return }
        updateNode(key) { $0.status = .running }
        if case .task = node.nodeType, let guid = taskGuid(of: node), let taskRun = state.taskRuns[guid],
            let attempt = taskRun.attempts.last
        {
            let number = Int32(taskRun.attempts.count - 1)
            switch attempt.status {
            case .taskScheduled:
                effects.append(.dispatchTask(taskGuid: guid, taskDef: taskRun.taskDefID.name, attempt: number))
            case .taskPending:
                if attempt.scheduleTime.date <= now {
                    updateAttempt(guid) { $0.status = .taskScheduled }
                    effects.append(.dispatchTask(taskGuid: guid, taskDef: taskRun.taskDefID.name, attempt: number))
                } else {
                    effects.append(
                        .scheduleTimer(
                            at: attempt.scheduleTime.date, key: .retryBackoff(taskGuid: guid, attempt: number)))
                }
            default:
                break
            }
        }
    }

    /// The WfRun's status follows its entrypoint thread, except that it stays
    /// RUNNING while the entrypoint is halted only by interrupts or failure
    /// handling.
    mutating func updateWfRunStatus() {
        guard !state.wfRun.threadRuns.isEmpty, !state.wfRun.status.isTerminal else { return }
        let entry = thread(0)
        if entry.status.isTerminal { return }
        if (entry.status == .halting || entry.status == .halted) && hasManualHalt(0) {
            state.wfRun.status = entry.status
        } else {
            state.wfRun.status = .running
        }
    }
}

extension Run {
    // MARK: - Halt reasons

    mutating func addHaltReason(_ n: Int32, _ reason: HaltReason) {
        guard !thread(n).haltReasons.contains(reason) else { return }
        update(n) { $0.haltReasons.append(reason) }
    }

    mutating func removeHaltReason(_ n: Int32, where matches: (HaltReason) -> Bool) {
        update(n) { $0.haltReasons.removeAll(where: matches) }
    }

    func hasManualHalt(_ n: Int32) -> Bool {
        thread(n).haltReasons.contains { if case .manualHalt? = $0.reason { return true } else { return false } }
    }

    /// Children a halting thread must wait for: all of them, except its own
    /// interrupt and failure handlers (they run while it is halted), unless
    /// the halt is a manual stop.
    func childrenToHalt(_ n: Int32) -> [Int32] {
        let manual = hasManualHalt(n)
        return children(n).filter { c in
            let child = thread(c)
            if child.status.isTerminal { return false }
            if !manual && (child.type == .interrupt || child.type == .failureHandler) { return false }
            return true
        }
    }
}
