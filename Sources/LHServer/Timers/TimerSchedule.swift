import Foundation
import LHEngine
import LHStore

/// The pending timers: a dictionary by WfRun and key (the truth) and a
/// min-heap by due time (entries whose timer was cancelled or replaced are
/// skipped when they come up). A value with no clock: the caller says what
/// time it is.
struct TimerSchedule {
    private var timers: [String: StoredTimer] = [:]  // by "<wfRunId>|<key>"
    private var heap = TimerHeap()

    static func id(_ wfRunId: String, _ key: LHTimerKey) -> String { "\(wfRunId)|\(key)" }

    var count: Int { timers.count }

    /// Sets a timer (replacing the WfRun's timer of the same key).
    mutating func schedule(_ timer: StoredTimer) {
        let id = Self.id(timer.wfRunId, timer.key)
        timers[id] = timer
        heap.push(TimerHeap.Entry(due: timer.due, id: id))
    }

    mutating func cancel(_ wfRunId: String, _ key: LHTimerKey) {
        timers[Self.id(wfRunId, key)] = nil
        if heap.count > 1024 && heap.count > timers.count * 4 { rebuildHeap() }
    }

    mutating func removeAll(of wfRunId: String) {
        timers = timers.filter { $0.value.wfRunId != wfRunId }
        rebuildHeap()
    }

    mutating func removeAll(where picked: (String) -> Bool) {
        timers = timers.filter { !picked($0.value.wfRunId) }
        rebuildHeap()
    }

    /// Takes out the timers due at `now`, earliest first.
    mutating func takeDue(at now: Date) -> [StoredTimer] {
        var due: [StoredTimer] = []
        while let top = heap.peek(), top.due <= now {
            heap.pop()
            guard let timer = timers[top.id], timer.due == top.due else { continue }
            timers[top.id] = nil
            due.append(timer)
        }
        return due
    }

    /// When the earliest live timer is due.
    mutating func nextDue() -> Date? {
        while let top = heap.peek(), timers[top.id]?.due != top.due { heap.pop() }
        return heap.peek()?.due
    }

    private mutating func rebuildHeap() {
        heap = TimerHeap()
        for (id, t) in timers { heap.push(.init(due: t.due, id: id)) }
    }
}
