import Foundation

/// Wall-clock time for the server's parts that need it (timers, the group
/// commit's `now`, createdAt stamps): injected, so that tests move time by
/// hand instead of sleeping.
protocol LHClock: Sendable {
    func now() -> Date
    /// Returns at `deadline`, or earlier when the calling task is cancelled.
    func sleep(until deadline: Date) async
}

/// The system's clock.
struct SystemClock: LHClock {
    init() {}

    func now() -> Date { Date() }

    func sleep(until deadline: Date) async {
        let wait = max(0.0005, deadline.timeIntervalSinceNow)
        try? await Task.sleep(for: .milliseconds(Int(wait * 1000) + 1))
    }
}
