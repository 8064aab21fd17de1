import LHEngine
import LHProto
import LHStore

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
