import Foundation
import LHProto
import SwiftProtobuf

/// Commands, tasks, external events and interrupts.
extension Run {
    mutating func apply(_ command: LHCommand) throws {
        switch command {
        case .putExternalEvent(let event):
            putExternalEvent(event)
        case .taskStarted(let guid, let attempt, let workerId):
            try taskStarted(guid, attempt, workerId)
        case .reportTask(let report):
            try reportTask(report)
        case .attemptLost(let guid, let attempt, let reason):
            attemptLost(guid, attempt, reason)
        case .timerFired(let key):
            timerFired(key)
        case .stopThread(let n):
            guard Int(n) < state.wfRun.threadRuns.count, n >= 0 else {
                throw LHEngineError(.notFound, "WfRun '\(state.id)' has no ThreadRun \(n)")
            }
            guard !thread(n).status.isTerminal else {
                throw LHEngineError(
                    .failedPrecondition, "ThreadRun \(n) of WfRun '\(state.id)' is already \(thread(n).status)")
            }
            addHaltReason(n, .with { $0.manualHalt = .init() })
        case .resumeThread(let n):
            guard Int(n) < state.wfRun.threadRuns.count, n >= 0 else {
                throw LHEngineError(.notFound, "WfRun '\(state.id)' has no ThreadRun \(n)")
            }
            removeHaltReason(n) { if case .manualHalt? = $0.reason { return true } else { return false } }
        }
    }

    // MARK: - External events and interrupts

    /// Stores the event; every active ThreadRun whose ThreadSpec registers an
    /// interrupt for its ExternalEventDef is interrupted, all at once.
    /// Otherwise it waits for an EXTERNAL_EVENT node to consume it.
    mutating func putExternalEvent(_ event: Littlehorse_ExternalEvent) {
        var event = event
        let defName = event.id.externalEventDefID.name
        var interrupted: [Int32] = []
        if !state.wfRun.status.isTerminal {
            for t in state.wfRun.threadRuns where !t.status.isTerminal {
                if event.hasThreadRunNumber && event.threadRunNumber != t.number { continue }
                let spec = context.spec.threadSpecs[t.threadSpecName] ?? Littlehorse_ThreadSpec()
                guard let def = spec.interruptDefs.first(where: { $0.externalEventDefID.name == defName }) else {
                    continue
                }
                var pending = Littlehorse_PendingInterrupt()
                pending.externalEventID = event.id
                pending.handlerSpecName = def.handlerSpecName
                pending.interruptedThreadID = t.number
                state.wfRun.pendingInterrupts.append(pending)
                interrupted.append(t.number)
            }
        }
        if !interrupted.isEmpty {
            event.claimed = true
            if interrupted.count == 1 { event.threadRunNumber = interrupted[0] }
        }
        state.externalEvents.append(event)
        for n in interrupted {
            update(n) { $0.haltReasons.append(.with { $0.pendingInterrupt.externalEventID = event.id }) }
        }
    }

    // MARK: - Tasks

    mutating func startTask(_ key: NodeRunKey, _ task: Littlehorse_TaskNode) {
        let ts = timestamp
        let n = key.thread
        guard case .taskDefID(let defId)? = task.taskToExecute else {
            failNode(key, .error(.varSubError, "TASK node '\(state.nodeRuns[key]?.nodeName ?? "")' names no TaskDef"))
            return
        }
        let taskDef = context.taskDefs[defId.name]
        var inputs: [Littlehorse_VarNameAndVal] = []
        for (i, assignment) in task.variables.enumerated() {
            let def = taskDef.flatMap { i < $0.inputVars.count ? $0.inputVars[i] : nil }
            do {
                var value = try evaluate(n, assignment)
                if let type = def?.declaredType, !value.isNull { value = try value.cast(to: type) }
                inputs.append(
                    .with {
                        $0.varName = def?.name ?? "arg\(i)"
                        $0.value = value
                        $0.masked = def?.maskedValue ?? false
                    })
            } catch {
                failNode(
                    key,
                    .error(
                        .varSubError,
                        "input \(i) ('\(def?.name ?? "?")') of TaskDef '\(defId.name)' at node '\(state.nodeRuns[key]?.nodeName ?? "")': \(error)"
                    ))
                return
            }
        }
        let guid = "\(n)-\(key.position)-\(defId.name)"
        var taskRun = Littlehorse_TaskRun()
        taskRun.id.wfRunID = wfRunId
        taskRun.id.taskGuid = guid
        taskRun.taskDefID = defId
        taskRun.inputVariables = inputs
        taskRun.source.taskNode.nodeRunID = state.nodeRuns[key]!.id
        taskRun.source.wfSpecID = context.spec.id
        taskRun.scheduledAt = timestamp
        taskRun.status = .taskScheduled
        taskRun.timeoutSeconds =
            task.timeoutSeconds > 0 ? task.timeoutSeconds : context.limits.defaultTaskTimeoutSeconds
        taskRun.totalAttempts = 1 + max(0, task.retries)
        if task.hasExponentialBackoff { taskRun.exponentialBackoff = task.exponentialBackoff }
        taskRun.attempts = [
            .with {
                $0.status = .taskScheduled; $0.scheduleTime = ts
            }
        ]
        state.taskRuns[guid] = taskRun
        updateNode(key) { $0.task.taskRunID = taskRun.id }
        effects.append(.dispatchTask(taskGuid: guid, taskDef: defId.name, attempt: 0))
    }

    mutating func updateAttempt(_ guid: String, _ body: (inout Littlehorse_TaskAttempt) -> Void) {
        guard let count = state.taskRuns[guid]?.attempts.count, count > 0 else { return }
        body(&state.taskRuns[guid]!.attempts[count - 1])
    }

    func nodeKey(ofTask taskRun: Littlehorse_TaskRun) -> NodeRunKey {
        let id = taskRun.source.taskNode.nodeRunID
        return NodeRunKey(thread: id.threadRunNumber, position: id.position)
    }

    /// The attempt is being handed to a worker: TASK_RUNNING, and its timeout
    /// starts now. Refused when the attempt is no longer waiting in a queue
    /// (withdrawn by a halt, or already handed over).
    mutating func taskStarted(_ guid: String, _ attempt: Int32, _ workerId: String) throws {
        let ts = timestamp
        guard let taskRun = state.taskRuns[guid] else {
            throw LHEngineError(.notFound, "TaskRun '\(guid)' not found in WfRun '\(state.id)'")
        }
        let key = nodeKey(ofTask: taskRun)
        guard Int(attempt) == taskRun.attempts.count - 1, taskRun.attempts.last?.status == .taskScheduled,
            let node = state.nodeRuns[key], node.status == .running
        else {
            throw LHEngineError(
                .failedPrecondition, "attempt \(attempt) of TaskRun '\(guid)' is not waiting for a worker")
        }
        updateAttempt(guid) {
            $0.status = .taskRunning
            $0.startTime = ts
            $0.taskWorkerID = workerId
        }
        state.taskRuns[guid]?.status = .taskRunning
        effects.append(
            .scheduleTimer(
                at: now.addingTimeInterval(Double(taskRun.timeoutSeconds)),
                key: .attemptTimeout(taskGuid: guid, attempt: attempt)))
    }

    /// A worker's result. Idempotent: a report for an attempt that is not
    /// running (late, repeated, or after a timeout) changes nothing.
    mutating func reportTask(_ report: Littlehorse_ReportTaskRun) throws {
        let guid = report.taskRunID.taskGuid
        guard report.taskRunID.wfRunID.id == state.id, let taskRun = state.taskRuns[guid] else {
            throw LHEngineError(.notFound, "TaskRun '\(guid)' not found in WfRun '\(report.taskRunID.wfRunID.id)'")
        }
        let attempt = report.attemptNumber
        guard Int(attempt) == taskRun.attempts.count - 1, taskRun.attempts[Int(attempt)].status == .taskRunning else {
            return
        }
        effects.append(.cancelTimer(.attemptTimeout(taskGuid: guid, attempt: attempt)))
        finishAttempt(
            guid, status: report.status, result: report.result, log: report.hasLogOutput ? report.logOutput : nil)
    }

    /// An attempt nobody holds any more (see ``LHCommand/attemptLost``).
    mutating func attemptLost(_ guid: String, _ attempt: Int32, _ reason: String) {
        guard let taskRun = state.taskRuns[guid], Int(attempt) == taskRun.attempts.count - 1,
            taskRun.attempts[Int(attempt)].status == .taskRunning
        else { return }
        effects.append(.cancelTimer(.attemptTimeout(taskGuid: guid, attempt: attempt)))
        finishAttempt(
            guid, status: .taskTimeout,
            result: .error(
                .with {
                    $0.type = .timeout; $0.message = reason
                }), log: nil)
    }

    mutating func finishAttempt(
        _ guid: String, status: Littlehorse_TaskStatus, result: Littlehorse_ReportTaskRun.OneOf_Result?, log: Value?
    ) {
        let ts = timestamp
        updateAttempt(guid) { a in
            a.status = status
            a.endTime = ts
            if let log { a.logOutput = log }
            switch result {
            case .output(let v): a.output = v
            case .error(let e): a.error = e
            case .exception(let e): a.exception = e
            case nil: break
            }
        }
        guard let taskRun = state.taskRuns[guid] else { return }
        let key = nodeKey(ofTask: taskRun)
        guard let node = state.nodeRuns[key] else { return }
        let halting = node.status == .halting || node.status == .halted
        if status == .taskSuccess {
            state.taskRuns[guid]?.status = .taskSuccess
            // A TASK that finished while halting stays COMPLETED until its
            // thread resumes, then moves on.
            if node.status == .running || node.status == .halting { completeNode(key) }
            return
        }
        let retryable = status == .taskFailed || status == .taskTimeout
        if retryable && taskRun.attempts.count < Int(taskRun.totalAttempts)
            && (node.status == .running || node.status == .halting)
        {
            let retryNumber = taskRun.attempts.count  // 1 for the first retry
            let next = Int32(taskRun.attempts.count)
            var delay: Double = 0
            if taskRun.hasExponentialBackoff {
                let b = taskRun.exponentialBackoff
                let base = Double(b.baseIntervalMs > 0 ? b.baseIntervalMs : 1000)
                let multiplier = Double(b.multiplier > 0 ? b.multiplier : 2)
                var ms = base * pow(multiplier, Double(retryNumber - 1))
                if b.maxDelayMs > 0 { ms = min(ms, Double(b.maxDelayMs)) }
                delay = ms / 1000
            }
            var attempt = Littlehorse_TaskAttempt()
            attempt.status = delay > 0 ? .taskPending : .taskScheduled
            attempt.scheduleTime = Google_Protobuf_Timestamp(date: now.addingTimeInterval(delay))
            state.taskRuns[guid]?.attempts.append(attempt)
            state.taskRuns[guid]?.status = .taskScheduled
            if halting {
                // Not in a worker's hands any more: the node halts now and the
                // retry is queued when the thread resumes.
                updateNode(key) { $0.status = .halted }
            } else if delay > 0 {
                effects.append(
                    .scheduleTimer(at: now.addingTimeInterval(delay), key: .retryBackoff(taskGuid: guid, attempt: next))
                )
            } else {
                effects.append(.dispatchTask(taskGuid: guid, taskDef: taskRun.taskDefID.name, attempt: next))
            }
            return
        }
        state.taskRuns[guid]?.status = status
        let failure: Failure
        switch (status, result) {
        case (.taskException, .exception(let e)?):
            failure = Failure(name: e.name, message: e.message, content: e.hasContent ? e.content : nil)
        case (.taskTimeout, _):
            failure = .error(
                .timeout,
                "TaskRun '\(guid)' (\(taskRun.taskDefID.name)) timed out on attempt \(taskRun.attempts.count - 1): \(Self.message(result))"
            )
        case (.taskInputVarSubError, _):
            failure = .error(
                .varSubError,
                "TaskRun '\(guid)' (\(taskRun.taskDefID.name)): the worker could not read its inputs: \(Self.message(result))"
            )
        default:
            failure = .error(
                .taskFailure,
                "TaskRun '\(guid)' (\(taskRun.taskDefID.name)) failed after \(taskRun.attempts.count) attempt(s): \(Self.message(result))"
            )
        }
        if node.status.isTerminal { return }
        failNode(key, failure)
    }

    static func message(_ result: Littlehorse_ReportTaskRun.OneOf_Result?) -> String {
        switch result {
        case .error(let e): e.message
        case .exception(let e): "\(e.name): \(e.message)"
        case .output(let v): v.displayString
        case nil: "no details"
        }
    }

    // MARK: - Timers

    mutating func timerFired(_ key: LHTimerKey) {
        switch key {
        case .sleep(let nk):
            guard let node = state.nodeRuns[nk], case .sleep(let s) = node.nodeType, !s.matured else { return }
            updateNode(nk) { $0.sleep.matured = true }
            if node.status == .running { completeNode(nk) }
        case .externalEventTimeout(let nk):
            guard let node = state.nodeRuns[nk], case .externalEvent(let e) = node.nodeType, !e.timedOut,
                node.status == .running || node.status == .halted
            else { return }
            updateNode(nk) { $0.externalEvent.timedOut = true }
        case .retryBackoff(let guid, let attempt):
            guard let taskRun = state.taskRuns[guid], Int(attempt) == taskRun.attempts.count - 1,
                taskRun.attempts.last?.status == .taskPending,
                state.nodeRuns[nodeKey(ofTask: taskRun)]?.status == .running
            else { return }
            updateAttempt(guid) { $0.status = .taskScheduled }
            effects.append(.dispatchTask(taskGuid: guid, taskDef: taskRun.taskDefID.name, attempt: attempt))
        case .attemptTimeout(let guid, let attempt):
            guard let taskRun = state.taskRuns[guid], Int(attempt) == taskRun.attempts.count - 1,
                taskRun.attempts.last?.status == .taskRunning
            else { return }
            finishAttempt(
                guid, status: .taskTimeout,
                result: .error(
                    .with {
                        $0.type = .timeout; $0.message = "no report within \(taskRun.timeoutSeconds) s"
                    }), log: nil)
        }
    }
}
