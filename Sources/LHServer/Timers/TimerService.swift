import Foundation
import LHEngine
import LHStore
import LHWire
import Logging

/// Fires the engine's timers from their due times on an injected clock.
/// Committed timer effects come in from the commit thread without waiting
/// (``carryOut(_:deleted:)``) and are applied in commit order.
actor TimerService {
    private var schedule = TimerSchedule()
    private let firing: any TimerFiring
    private let clock: any LHClock
    private let logger: Logger
    /// The longest the run loop sleeps without looking again.
    private let maxSleep: TimeInterval
    private var wake: CheckedContinuation<Void, Never>?
    private var woken = false
    /// When the run loop will look again on its own.
    private var sleepingUntil = Date.distantPast
    /// Effects from committed group commits, in commit order, not yet applied.
    private let inbox = DrainQueue<([(String, LHEffect)], Set<String>)>()

    init(firing: any TimerFiring, clock: any LHClock = SystemClock(), maxSleep: TimeInterval = 1, logger: Logger) {
        self.firing = firing
        self.clock = clock
        self.maxSleep = maxSleep
        self.logger = logger
    }

    /// Timers waiting to fire (the metrics).
    var pendingCount: Int { schedule.count }

    func schedule(_ timer: StoredTimer) {
        schedule.schedule(timer)
        if timer.due < sleepingUntil { wakeUp() }
    }

    var count: Int { schedule.count }

    /// Forgets the timers of the WfRuns `picked` selects (their partitions
    /// went to another server).
    func removeAll(where picked: @Sendable (String) -> Bool) {
        drainInbox()
        schedule.removeAll(where: picked)
    }

    /// Runs until cancelled.
    func run() async {
        while !Task.isCancelled {
            woken = false
            for timer in schedule.takeDue(at: clock.now()) { fire(timer) }
            let now = clock.now()
            let deadline = min(schedule.nextDue() ?? .distantFuture, now.addingTimeInterval(maxSleep))
            sleepingUntil = deadline
            let clock = self.clock
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await clock.sleep(until: deadline) }
                group.addTask { await self.waitForWake() }
                await group.next()
                group.cancelAll()
                self.wakeUp()
            }
            sleepingUntil = .distantPast
        }
    }

    private func fire(_ timer: StoredTimer) {
        let logger = self.logger
        firing.fire(timer) { result in
            if case .failure(let error) = result {
                logger.warning(
                    "timer failed",
                    metadata: ["lh.timer": "\(timer.key)", LHLog.wfRunId: "\(timer.wfRunId)", LHLog.error: "\(error)"])
            }
        }
    }

    /// Applies the committed effects handed over so far (the task that
    /// does it may not have run yet).
    func applyCommittedEffects() { drainInbox() }

    private func drainInbox() {
        while true {
            let items = inbox.takeAll()
            if items.isEmpty { return }
            for (effects, deleted) in items { apply(effects, deleted: deleted) }
        }
    }

    private func apply(_ effects: [(String, LHEffect)], deleted: Set<String>) {
        for (id, effect) in effects {
            switch effect {
            case .scheduleTimer(let at, let key): schedule(StoredTimer(wfRunId: id, key: key, due: at))
            case .cancelTimer(let key): schedule.cancel(id, key)
            default: break
            }
        }
        for id in deleted { schedule.removeAll(of: id) }
    }

    private func waitForWake() async {
        if woken { return }
        await withCheckedContinuation { c in
            if let old = wake { old.resume() }
            wake = c
        }
    }

    private func wakeUp() {
        if let wake {
            wake.resume()
            self.wake = nil
        } else {
            woken = true
        }
    }
}

extension TimerService: EffectSink {
    /// Takes committed timer effects from any thread without waiting; they
    /// are applied in the order submitted (one task drains them).
    nonisolated func carryOut(_ effects: [(String, LHEffect)], deleted: Set<String>) {
        if inbox.append((effects, deleted)) { Task { await self.drainInbox() } }
    }
}
