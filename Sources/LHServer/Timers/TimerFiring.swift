import LHStore

/// What the timers need of the group commit: a due timer applied to its
/// WfRun (and its stored row removed) in a job of its own.
protocol TimerFiring: Sendable {
    func fire(_ timer: StoredTimer, done: @escaping @Sendable (Result<Void, Error>) -> Void)
}
