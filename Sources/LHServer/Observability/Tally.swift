import CoreMetrics
import Foundation
import LHEngine
import LHProto

/// What a staging's jobs did, counted as they run and added to the metrics
/// once their group commit is durable: a job that fails is undone with its
/// staging, tally included, so nothing refused is ever counted. Plain
/// integers: counting costs no lock on the hot path.
struct Tally: Sendable {
    enum Command: String, CaseIterable, Sendable {
        case runWf = "RUN_WF"
        case putExternalEvent = "PUT_EXTERNAL_EVENT"
        case taskStarted = "TASK_STARTED"
        case reportTask = "REPORT_TASK"
        case attemptLost = "ATTEMPT_LOST"
        case timerFired = "TIMER_FIRED"
        case stopThread = "STOP_THREAD"
        case resumeThread = "RESUME_THREAD"

        init(_ command: LHCommand) {
            switch command {
            case .putExternalEvent: self = .putExternalEvent
            case .taskStarted: self = .taskStarted
            case .reportTask: self = .reportTask
            case .attemptLost: self = .attemptLost
            case .timerFired: self = .timerFired
            case .stopThread: self = .stopThread
            case .resumeThread: self = .resumeThread
            }
        }
    }

    var runWf = 0
    var putExternalEvent = 0
    var taskStarted = 0
    var reportTask = 0
    var attemptLost = 0
    var timerFired = 0
    var stopThread = 0
    var resumeThread = 0

    var tasksScheduled = 0
    var attemptsStarted = 0
    var attemptsCompleted = 0
    var attemptsFailed = 0
    var attemptsTimedOut = 0
    var attemptsRetried = 0
    var wfRunsStarted = 0
    var wfRunsCompleted = 0
    var wfRunsErrored = 0
    var wfRunsExcepted = 0
    var interrupts = 0
    var interruptHandlers = 0
    var failureHandlers = 0
    var threadsHalting = 0
    var threadsHalted = 0
    /// Seconds from an attempt's schedule time to its hand-over to a worker.
    var scheduleToStart: [Double] = []

    mutating func count(_ command: Command) {
        switch command {
        case .runWf: runWf += 1
        case .putExternalEvent: putExternalEvent += 1
        case .taskStarted: taskStarted += 1
        case .reportTask: reportTask += 1
        case .attemptLost: attemptLost += 1
        case .timerFired: timerFired += 1
        case .stopThread: stopThread += 1
        case .resumeThread: resumeThread += 1
        }
    }

    private func count(of command: Command) -> Int {
        switch command {
        case .runWf: runWf
        case .putExternalEvent: putExternalEvent
        case .taskStarted: taskStarted
        case .reportTask: reportTask
        case .attemptLost: attemptLost
        case .timerFired: timerFired
        case .stopThread: stopThread
        case .resumeThread: resumeThread
        }
    }

    /// A WfRun went from `before` (nil: it is new) to `after`: new
    /// threads, threads that began halting or halted, the WfRun's end.
    mutating func observe(from before: WfRunState?, to after: WfRunState) {
        let old = before?.wfRun.threadRuns ?? []
        let new = after.wfRun.threadRuns
        if before == nil { wfRunsStarted += 1 }
        for (i, thread) in new.enumerated() {
            let was = i < old.count ? old[i].status : nil
            if was == nil {
                switch thread.type {
                case .interrupt: interruptHandlers += 1
                case .failureHandler: failureHandlers += 1
                default: break
                }
            }
            guard thread.status != was else { continue }
            if thread.status == .halting { threadsHalting += 1 }
            if thread.status == .halted { threadsHalted += 1 }
        }
        let wasTerminal = before?.wfRun.status.isTerminal ?? false
        if !wasTerminal {
            switch after.wfRun.status {
            case .completed: wfRunsCompleted += 1
            case .error: wfRunsErrored += 1
            case .exception: wfRunsExcepted += 1
            default: break
            }
        }
    }

    /// An engine command was applied: what it did to the WfRun's TaskRuns
    /// and interrupts (`effects` are what the engine asked for).
    mutating func observe(_ command: LHCommand, before: WfRunState, after: WfRunState, now: Date) {
        count(Command(command))
        switch command {
        case .taskStarted(let guid, let attempt, _):
            startedAttempt(guid, attempt, in: after, now: now)
        case .reportTask(let report):
            let guid = report.taskRunID.taskGuid
            let n = Int(report.attemptNumber)
            guard let was = before.taskRuns[guid]?.attempts, let now = after.taskRuns[guid]?.attempts, n < now.count,
                n < was.count, was[n].status != now[n].status
            else { return }
            if now[n].status == .taskSuccess { attemptsCompleted += 1 } else { attemptsFailed += 1 }
        case .timerFired(.attemptTimeout(let guid, let attempt)):
            let n = Int(attempt)
            if let a = after.taskRuns[guid]?.attempts, n < a.count, a[n].status == .taskTimeout,
                before.taskRuns[guid]?.attempts[n].status != .taskTimeout
            {
                attemptsTimedOut += 1
            }
        case .putExternalEvent(let event):
            let firstNew = before.wfRun.threadRuns.count
            let handlers = after.wfRun.threadRuns.dropFirst(firstNew).filter {
                $0.type == .interrupt && $0.interruptTriggerID == event.id
            }.count
            let pending = after.wfRun.pendingInterrupts.filter { $0.externalEventID == event.id }.count
            interrupts += handlers + pending
        default:
            break
        }
    }

    /// An attempt was handed to a worker (queued, or directly in the
    /// transaction that made it ready).
    mutating func startedAttempt(_ guid: String, _ attempt: Int32, in state: WfRunState, now: Date) {
        attemptsStarted += 1
        if let a = state.taskRuns[guid]?.attempts, Int(attempt) < a.count, a[Int(attempt)].hasScheduleTime {
            scheduleToStart.append(max(0, now.timeIntervalSince(a[Int(attempt)].scheduleTime.date)))
        }
    }

    /// The engine asked for an attempt to be dispatched.
    mutating func dispatched(attempt: Int32) {
        if attempt == 0 { tasksScheduled += 1 } else { attemptsRetried += 1 }
    }

    mutating func add(_ other: Tally) {
        runWf += other.runWf
        putExternalEvent += other.putExternalEvent
        taskStarted += other.taskStarted
        reportTask += other.reportTask
        timerFired += other.timerFired
        stopThread += other.stopThread
        resumeThread += other.resumeThread
        tasksScheduled += other.tasksScheduled
        attemptsStarted += other.attemptsStarted
        attemptsCompleted += other.attemptsCompleted
        attemptsFailed += other.attemptsFailed
        attemptsTimedOut += other.attemptsTimedOut
        attemptsRetried += other.attemptsRetried
        wfRunsStarted += other.wfRunsStarted
        wfRunsCompleted += other.wfRunsCompleted
        wfRunsErrored += other.wfRunsErrored
        wfRunsExcepted += other.wfRunsExcepted
        interrupts += other.interrupts
        interruptHandlers += other.interruptHandlers
        failureHandlers += other.failureHandlers
        threadsHalting += other.threadsHalting
        threadsHalted += other.threadsHalted
        scheduleToStart += other.scheduleToStart
    }

    func record(into m: LHMetrics) {
        func add(_ counter: CoreMetrics.Counter, _ n: Int) { if n > 0 { counter.increment(by: n) } }
        for c in Command.allCases { add(m.commands[c]!, count(of: c)) }
        add(m.tasksScheduled, tasksScheduled)
        add(m.attemptsStarted, attemptsStarted)
        add(m.attemptsCompleted, attemptsCompleted)
        add(m.attemptsFailed, attemptsFailed)
        add(m.attemptsTimedOut, attemptsTimedOut)
        add(m.attemptsRetried, attemptsRetried)
        add(m.wfRunsStarted, wfRunsStarted)
        add(m.wfRunsEnded[.completed]!, wfRunsCompleted)
        add(m.wfRunsEnded[.error]!, wfRunsErrored)
        add(m.wfRunsEnded[.exception]!, wfRunsExcepted)
        add(m.externalEvents, putExternalEvent)
        add(m.interrupts, interrupts)
        add(m.interruptHandlers, interruptHandlers)
        add(m.failureHandlers, failureHandlers)
        add(m.threadsHalting, threadsHalting)
        add(m.threadsHalted, threadsHalted)
        for s in scheduleToStart { m.scheduleToStart.recordSeconds(s) }
    }
}
