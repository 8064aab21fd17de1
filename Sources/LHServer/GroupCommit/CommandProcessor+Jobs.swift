import LHEngine
import LHProto
import LHStore
import LHWire

/// The jobs the dispatcher and the timers ask for, by name: they never see
/// a staging or the write batch.
extension CommandProcessor: TaskStarting {
    nonisolated func startQueuedTask(
        _ task: QueuedTask, workerId: String,
        done: @escaping @Sendable (Result<Littlehorse_ScheduledTask?, Error>) -> Void
    ) {
        enqueue(
            key: task.wfRunId,
            { (staging: inout Staging) -> any Sendable in
                try staging.apply(
                    .taskStarted(taskGuid: task.taskGuid, attempt: task.attempt, workerId: workerId), to: task.wfRunId)
                staging.dequeue(wfRunId: task.wfRunId, taskGuid: task.taskGuid)
                return try staging.state(task.wfRunId)?.scheduledTask(taskGuid: task.taskGuid, attempt: task.attempt)
                    as Littlehorse_ScheduledTask?
            }, done: { result in done(result.map { $0 as? Littlehorse_ScheduledTask }) })
    }

    nonisolated func dropQueuedTask(_ task: QueuedTask) {
        enqueue(
            key: task.wfRunId,
            { (staging: inout Staging) -> any Sendable in
                staging.dequeue(wfRunId: task.wfRunId, taskGuid: task.taskGuid)
                return ()
            }, done: { _ in })
    }
}

extension CommandProcessor {
    /// Ends an attempt no worker holds any more (``RestartClaims``); it is
    /// retried at once if it has retries left.
    nonisolated func loseAttempt(_ a: RestartClaims.Attempt, reason: String) {
        let logger = self.logger
        enqueue(
            key: a.wfRunId,
            { (staging: inout Staging) -> any Sendable in
                guard try staging.state(a.wfRunId) != nil else { return () }
                try staging.apply(.attemptLost(taskGuid: a.guid, attempt: a.attempt, reason: reason), to: a.wfRunId)
                return ()
            },
            done: { result in
                if case .failure(let error) = result {
                    logger.warning(
                        "a lost attempt could not be ended; it waits for its attempt timeout",
                        metadata: [LHLog.taskRunId: "\(a.wfRunId)/\(a.guid)", LHLog.error: "\(error)"])
                } else {
                    logger.info(
                        "attempt lost in the restart ended; retried if it has retries left",
                        metadata: [LHLog.taskRunId: "\(a.wfRunId)/\(a.guid)", "lh.attempt": "\(a.attempt)"])
                }
            })
    }
}

extension CommandProcessor: TimerFiring {
    nonisolated func fire(_ timer: StoredTimer, done: @escaping @Sendable (Result<Void, Error>) -> Void) {
        enqueue(
            key: timer.wfRunId,
            { (staging: inout Staging) -> any Sendable in
                staging.cancelTimer(wfRunId: timer.wfRunId, key: timer.key)
                guard try staging.state(timer.wfRunId) != nil else { return () }
                try staging.apply(.timerFired(timer.key), to: timer.wfRunId)
                return ()
            }, done: { result in done(result.map { _ in () }) })
    }
}
