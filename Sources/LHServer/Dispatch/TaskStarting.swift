import LHProto
import LHStore

/// What the dispatcher needs of the group commit: queued attempts made
/// TASK_RUNNING (durably, before a worker sees them) and taken out of the
/// stored queue.
protocol TaskStarting: Sendable {
    /// Makes a queued attempt TASK_RUNNING for `workerId` in a job of its own
    /// and takes it out of the stored queue; `done` gets the ScheduledTask to
    /// push once that is durable (nil: not for a worker any more), or the
    /// error that refused the job (withdrawn by a halt, deleted, ...).
    func startQueuedTask(
        _ task: QueuedTask, workerId: String,
        done: @escaping @Sendable (Result<Littlehorse_ScheduledTask?, Error>) -> Void)
    /// Takes an attempt that is no longer for a worker out of the stored queue.
    func dropQueuedTask(_ task: QueuedTask)
}
