import Foundation
import LHEngine
import LHStore
import Logging
import Synchronization
import Testing

@testable import LHServer

/// The timers on a clock the test moves: nothing here sleeps.
@Suite struct TimerTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func timer(_ wfRunId: String, _ guid: String, at seconds: TimeInterval) -> StoredTimer {
        StoredTimer(
            wfRunId: wfRunId, key: .retryBackoff(taskGuid: guid, attempt: 1), due: t0.addingTimeInterval(seconds))
    }

    @Test func dueTimersComeOutEarliestFirstAndOnlyOnce() {
        var schedule = TimerSchedule()
        schedule.schedule(Self.timer("a", "g", at: 5))
        schedule.schedule(Self.timer("b", "g", at: 2))
        schedule.schedule(Self.timer("c", "g", at: 9))
        #expect(schedule.nextDue() == Self.t0.addingTimeInterval(2))
        #expect(schedule.takeDue(at: Self.t0.addingTimeInterval(1)).isEmpty)
        #expect(schedule.takeDue(at: Self.t0.addingTimeInterval(5)).map(\.wfRunId) == ["b", "a"])
        #expect(schedule.takeDue(at: Self.t0.addingTimeInterval(5)).isEmpty)
        #expect(schedule.count == 1)
        #expect(schedule.nextDue() == Self.t0.addingTimeInterval(9))
    }

    @Test func aCancelledOrReplacedTimerDoesNotFireAtItsOldTime() {
        var schedule = TimerSchedule()
        schedule.schedule(Self.timer("a", "g", at: 1))
        schedule.schedule(Self.timer("b", "g", at: 2))
        schedule.cancel("a", .retryBackoff(taskGuid: "g", attempt: 1))
        schedule.schedule(Self.timer("b", "g", at: 7))  // same key: replaces
        #expect(schedule.nextDue() == Self.t0.addingTimeInterval(7))
        #expect(schedule.takeDue(at: Self.t0.addingTimeInterval(6)).isEmpty)
        #expect(schedule.takeDue(at: Self.t0.addingTimeInterval(7)).map(\.due) == [Self.t0.addingTimeInterval(7)])
        #expect(schedule.count == 0 && schedule.nextDue() == nil)
    }

    @Test func removingAWfRunRemovesAllItsTimers() {
        var schedule = TimerSchedule()
        schedule.schedule(Self.timer("a", "g1", at: 1))
        schedule.schedule(Self.timer("a", "g2", at: 2))
        schedule.schedule(Self.timer("b", "g1", at: 3))
        schedule.removeAll(of: "a")
        #expect(schedule.takeDue(at: Self.t0.addingTimeInterval(10)).map(\.wfRunId) == ["b"])
    }

    /// Records fired timers and lets a test wait for the next one.
    final class Recorder: TimerFiring {
        let fired = Mutex<[StoredTimer]>([])
        let stream: AsyncStream<StoredTimer>
        private let continuation: AsyncStream<StoredTimer>.Continuation

        init() { (stream, continuation) = AsyncStream.makeStream() }

        func fire(_ timer: StoredTimer, done: @escaping @Sendable (Result<Void, Error>) -> Void) {
            fired.withLock { $0.append(timer) }
            continuation.yield(timer)
            done(.success(()))
        }
    }

    @Test func theServiceFiresATimerWhenTheClockReachesItsDueTimeNotBefore() async throws {
        let clock = ManualClock(now: Self.t0)
        let recorder = Recorder()
        let service = TimerService(firing: recorder, clock: clock, maxSleep: 1, logger: Logger(label: "test"))
        let running = Task { await service.run() }
        defer { running.cancel() }
        await service.schedule(Self.timer("a", "g", at: 3.5))
        // It looks again every second at most: asleep until t0+1, then t0+2, ...
        await clock.waitForSleeper(until: Self.t0.addingTimeInterval(1))
        clock.advance(by: 3)
        await clock.waitForSleeper(until: Self.t0.addingTimeInterval(3.5))
        #expect(recorder.fired.withLock { $0 }.isEmpty)
        clock.advance(by: 0.5)
        var iterator = recorder.stream.makeAsyncIterator()
        #expect(await iterator.next()?.wfRunId == "a")
        #expect(await service.count == 0)
    }

    @Test func anEarlierTimerWakesTheSleepingServiceAndACancelledOneDoesNotFire() async throws {
        let clock = ManualClock(now: Self.t0)
        let recorder = Recorder()
        let service = TimerService(firing: recorder, clock: clock, maxSleep: 60, logger: Logger(label: "test"))
        let running = Task { await service.run() }
        defer { running.cancel() }
        func at(_ seconds: TimeInterval) -> Date { Self.t0.addingTimeInterval(seconds) }
        await service.schedule(Self.timer("late", "g", at: 50))
        await clock.waitForSleeper(until: at(50))
        // A committed timer due earlier wakes the service, which sleeps until it.
        let key = LHTimerKey.retryBackoff(taskGuid: "g", attempt: 1)
        service.carryOut([("x", .scheduleTimer(at: at(2), key: key))], deleted: [])
        await clock.waitForSleeper(until: at(2))
        // The next group commit cancels it and sets another.
        service.carryOut([("x", .cancelTimer(key)), ("y", .scheduleTimer(at: at(4), key: key))], deleted: [])
        await service.applyCommittedEffects()
        clock.advance(by: 2)
        await clock.waitForSleeper(until: at(4))
        #expect(recorder.fired.withLock { $0 }.isEmpty)
        clock.advance(by: 2)
        var iterator = recorder.stream.makeAsyncIterator()
        #expect(await iterator.next()?.wfRunId == "y")
        #expect(recorder.fired.withLock { $0.map(\.wfRunId) } == ["y"])
        #expect(await service.count == 1)
    }
}
