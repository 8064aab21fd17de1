import Foundation
import Synchronization

@testable import LHServer

/// A clock that moves only when a test says so. Sleepers wake when time
/// reaches their deadline or when their task is cancelled; a test can wait
/// until something sleeps (the code under test has done its work and gone
/// to sleep) instead of sleeping itself.
final class ManualClock: LHClock {
    private struct Sleeper {
        var deadline: Date
        var continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        var now: Date
        var sleepers: [UInt64: Sleeper] = [:]
        var cancelled: Set<UInt64> = []
        var nextId: UInt64 = 0
        /// Waiting for a sleeper whose deadline is the given date.
        var watchers: [(Date, CheckedContinuation<Void, Never>)] = []
    }

    private let state: Mutex<State>

    init(now: Date = Date(timeIntervalSince1970: 1_800_000_000)) { state = Mutex(State(now: now)) }

    func now() -> Date { state.withLock { $0.now } }

    func sleep(until deadline: Date) async {
        let id = state.withLock { s in
            defer { s.nextId += 1 }
            return s.nextId
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let (resumeNow, watchers) = state.withLock { s -> (Bool, [CheckedContinuation<Void, Never>]) in
                    if s.cancelled.remove(id) != nil || deadline <= s.now { return (true, []) }
                    s.sleepers[id] = Sleeper(deadline: deadline, continuation: c)
                    let ready = s.watchers.filter { deadline == $0.0 }.map(\.1)
                    s.watchers.removeAll { deadline == $0.0 }
                    return (false, ready)
                }
                if resumeNow { c.resume() }
                watchers.forEach { $0.resume() }
            }
        } onCancel: {
            let sleeper = state.withLock { s -> Sleeper? in
                guard let sleeper = s.sleepers.removeValue(forKey: id) else {
                    s.cancelled.insert(id)
                    return nil
                }
                return sleeper
            }
            sleeper?.continuation.resume()
        }
    }

    /// Moves time forward and wakes the sleepers whose deadline came.
    func advance(by seconds: TimeInterval) {
        let woken = state.withLock { s -> [Sleeper] in
            s.now = s.now.addingTimeInterval(seconds)
            let now = s.now
            let due = s.sleepers.filter { $0.value.deadline <= now }
            for id in due.keys { s.sleepers[id] = nil }
            return Array(due.values)
        }
        woken.forEach { $0.continuation.resume() }
    }

    /// Returns once a task sleeps until exactly `deadline`.
    func waitForSleeper(until deadline: Date) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let already = state.withLock { s -> Bool in
                if s.sleepers.values.contains(where: { $0.deadline == deadline }) { return true }
                s.watchers.append((deadline, c))
                return false
            }
            if already { c.resume() }
        }
    }
}
