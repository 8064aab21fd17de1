import Foundation
import LHProto
import SwiftProtobuf
import Testing

@testable import LHEngine

/// Random valid WfSpecs (tasks with retries and timeouts, waits, sleeps,
/// child threads, interrupts on the entrypoint and on children, handlers
/// that fail, failure handlers) driven by random command sequences
/// (hand-overs, reports of every kind, repeated reports, events, timers,
/// stop and resume), with the halting rules checked after every command and
/// the whole run replayed at the end. Seeded: a failure names its seed, and
/// `LH_PROPERTY_SEED=N` runs that one alone (`LH_PROPERTY_RUNS` sets how
/// many seeds a run tries; 300 by default).
@Suite struct PropertyTests {
    @Test func randomWfSpecsAndCommandSequencesKeepTheHaltingRules() throws {
        let env = ProcessInfo.processInfo.environment
        let seeds: [UInt64] =
            env["LH_PROPERTY_SEED"].flatMap { UInt64($0) }.map { [$0] }
            ?? Array(1...UInt64(env["LH_PROPERTY_RUNS"].flatMap { Int($0) } ?? 300))
        var commands = 0
        var halted = 0
        var handlers = 0
        for seed in seeds {
            var run = try RandomRun(seed: seed)
            do {
                try run.drive(steps: 60)
                try run.checkReplay()
            } catch let failure as PropertyFailure {
                Issue.record("seed \(seed): \(failure.message)\ncommands:\n\(run.log.joined(separator: "\n"))")
                return
            }
            commands += run.applied.count
            halted += run.sawHalted ? 1 : 0
            handlers += run.sawHandler ? 1 : 0
        }
        // The generator must reach the interesting states, or the rules
        // above were checked on nothing.
        if seeds.count >= 100 {
            #expect(halted > seeds.count / 10, "runs with a HALTED thread: \(halted) of \(seeds.count)")
            #expect(handlers > seeds.count / 10, "runs with an interrupt handler: \(handlers) of \(seeds.count)")
        }
        #expect(commands > seeds.count * 10)
    }
}

extension PropertyTests {
    /// The rules can fail: a thread marked HALTED while its task is in a
    /// worker's hands, a handler started under a task in flight, and an
    /// attempt in flight with no timeout are each caught.
    @Test func theRulesCatchWhatTheyAreFor() throws {
        var h = try Harness(threads: ["entrypoint": linear([Step("1-task", task("a"))])], taskDefs: [taskDef("a")])
        let guid = try h.start("a")
        let before = h.state
        var forged = h.state
        forged.wfRun.threadRuns[0].status = .halted
        forged.wfRun.threadRuns[0].haltReasons = [.with { $0.manualHalt = .init() }]
        let halted = RandomRun.brokenRule(.stopThread(0), before: before, after: forged, timers: h.timers)
        #expect(halted?.contains("is HALTED while TaskRun \(guid)") == true, "\(halted ?? "nil")")

        var handler = h.state
        handler.wfRun.threadRuns.append(
            .with {
                $0.number = 1; $0.type = .interrupt; $0.parentThreadID = 0; $0.status = .running
            })
        let started = RandomRun.brokenRule(.stopThread(0), before: before, after: handler, timers: h.timers)
        #expect(started?.contains("handler thread 1 started while TaskRun") == true, "\(started ?? "nil")")

        let untimed = RandomRun.brokenRule(.stopThread(0), before: before, after: h.state, timers: [:])
        #expect(untimed?.contains("with no timeout pending") == true, "\(untimed ?? "nil")")
        #expect(RandomRun.brokenRule(.stopThread(0), before: before, after: h.state, timers: h.timers) == nil)
    }
}

struct PropertyFailure: Error {
    var message: String
}

/// SplitMix64: small, fast, and the same sequence everywhere.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &self) < p }
}

/// One random WfSpec and one random command sequence against it.
struct RandomRun {
    var random: SeededRandom
    let threads: [String: Littlehorse_ThreadSpec]
    var harness: Harness
    /// Commands applied, with the time each was applied at (the replay).
    var applied: [(LHCommand, Date)] = []
    var reports: [Littlehorse_ReportTaskRun] = []
    var log: [String] = []
    var sawHalted = false
    var sawHandler = false

    static let taskDefs = [taskDef("a"), taskDef("b")]
    static let events = ["go", "poke", "nudge"]

    init(seed: UInt64) throws {
        random = SeededRandom(state: seed)
        threads = Self.spec(&random)
        harness = try Harness(threads: threads, taskDefs: Self.taskDefs, events: Self.events)
    }

    // MARK: The WfSpec

    static func timedTask(_ name: String, retries: Int32) -> Node.OneOf_Node {
        guard case .task(var t) = task(name, retries: retries) else { return task(name) }
        t.timeoutSeconds = 20
        return .task(t)
    }

    static func spec(_ r: inout SeededRandom) -> [String: Littlehorse_ThreadSpec] {
        var steps: [Step] = []
        var spawned = false
        for i in 1...Int.random(in: 2...5, using: &r) {
            switch Int.random(in: 0..<10, using: &r) {
            case 0...3:
                let handlers = r.chance(0.3) ? [catching(nil, with: "on-fail", type: .failureTypeError)] : []
                steps.append(
                    Step(
                        "\(i)-task", timedTask(r.chance(0.5) ? "a" : "b", retries: Int32.random(in: 0...2, using: &r)),
                        handlers: handlers))
            case 4...5: steps.append(Step("\(i)-wait-go", waitEvent("go")))
            case 6: steps.append(Step("\(i)-sleep", sleep(Int64.random(in: 1...3, using: &r))))
            default:
                if spawned {
                    steps.append(Step("\(i)-nop", nop))
                } else {
                    spawned = true
                    steps.append(Step("\(i)-spawn", spawn("child"), mutations: [mutation("kid", .assign)]))
                    steps.append(Step("\(i)-join", waitThreads([assign("kid")])))
                }
            }
        }
        var child: [Step] = []
        for i in 1...Int.random(in: 1...3, using: &r) {
            child.append(
                r.chance(0.7)
                    ? Step(
                        "\(i)-task", timedTask(r.chance(0.5) ? "a" : "b", retries: Int32.random(in: 0...1, using: &r)))
                    : Step("\(i)-sleep", sleep(Int64.random(in: 1...3, using: &r))))
        }
        var poke = [Step("1-count", nop, mutations: [mutation("count", .add, literal(int(1)))])]
        if r.chance(0.5) { poke.append(Step("2-task", timedTask("b", retries: 0))) }
        if r.chance(0.2) { poke.append(Step("3-fail", fail("poke-failed"))) }
        let nudge = r.chance(0.5) ? [Step("1-task", timedTask("a", retries: 0))] : [Step("1-nop", nop)]
        return [
            "entrypoint": linear(
                steps, variables: [variable("kid", .int), variable("count", .int, default: int(0))],
                interrupts: [("poke", "on-poke")]),
            "child": linear(child, interrupts: [("nudge", "on-nudge")]),
            "on-poke": linear(poke),
            "on-nudge": linear(nudge),
            "on-fail": linear([Step("1-nop", nop)]),
        ]
    }

    // MARK: The commands

    enum Choice {
        case hand(String, Int32)
        case report(String, Int32)
        case lose(String, Int32)
        case again(Littlehorse_ReportTaskRun)
        case post(String)
        case advance
        case stop
        case resume
    }

    mutating func drive(steps: Int) throws {
        for _ in 0..<steps {
            if harness.state.isTerminated && harness.queued.isEmpty && harness.inFlight.isEmpty { return }
            var options: [Choice] = []
            if let (guid, attempt) = harness.queued.sorted(by: { $0.key < $1.key }).randomElement(using: &random) {
                options += Array(repeating: .hand(guid, attempt), count: 3)
            }
            let running = Self.runningAttempts(harness.state).sorted { ($0.guid, $0.attempt) < ($1.guid, $1.attempt) }
            if let held = running.randomElement(using: &random) {
                options += Array(repeating: .report(held.guid, Int32(held.attempt)), count: 3)
                options.append(.lose(held.guid, Int32(held.attempt)))
            }
            if let old = reports.randomElement(using: &random) { options.append(.again(old)) }
            options += Self.events.map { .post($0) } + [.advance, .stop, .resume]
            switch options[Int.random(in: 0..<options.count, using: &random)] {
            case .hand(let guid, let attempt): try hand(guid, attempt)
            case .report(let guid, let attempt): try report(guid, attempt)
            case .lose(let guid, let attempt):
                try apply(.attemptLost(taskGuid: guid, attempt: attempt, reason: "lost"), "lose \(guid)#\(attempt)")
            case .again(let old): try apply(.reportTask(old), "report again \(old.taskRunID.taskGuid)")
            case .post(let event): try post(event)
            case .advance: try advance(Double.random(in: 0.5...25, using: &random))
            case .stop: try apply(.stopThread(0), "stop 0")
            case .resume: try apply(.resumeThread(0), "resume 0")
            }
        }
    }

    mutating func hand(_ guid: String, _ attempt: Int32) throws {
        harness.queued[guid] = nil
        try apply(.taskStarted(taskGuid: guid, attempt: attempt, workerId: "w"), "hand \(guid)#\(attempt)")
    }

    mutating func report(_ guid: String, _ attempt: Int32) throws {
        var r = Littlehorse_ReportTaskRun()
        r.taskRunID.wfRunID.id = harness.state.id
        r.taskRunID.taskGuid = guid
        r.attemptNumber = attempt
        switch Int.random(in: 0..<10, using: &random) {
        case 0...5:
            r.status = .taskSuccess
            r.output = str("ok")
        case 6...7:
            r.status = .taskFailed
            r.error = .with {
                $0.type = .taskFailure; $0.message = "boom"
            }
        default:
            r.status = .taskException
            r.exception = .with {
                $0.name = "oops"; $0.message = "thrown"
            }
        }
        reports.append(r)
        try apply(.reportTask(r), "report \(guid)#\(attempt) \(r.status.protoName)")
    }

    mutating func post(_ event: String) throws {
        harness.eventCount += 1
        var e = Littlehorse_ExternalEvent()
        e.id.wfRunID.id = harness.state.id
        e.id.externalEventDefID.name = event
        e.id.guid = "event-\(harness.eventCount)"
        e.createdAt = Google_Protobuf_Timestamp(date: harness.now)
        e.content = str(event)
        try apply(.putExternalEvent(e), "post \(event)")
    }

    mutating func advance(_ seconds: Double) throws {
        harness.now = harness.now.addingTimeInterval(seconds)
        log.append("advance \(String(format: "%.1f", seconds)) s")
        for (key, at) in harness.timers.sorted(by: { ($0.value, "\($0.key)") < ($1.value, "\($1.key)") })
        where at <= harness.now {
            harness.timers[key] = nil
            try apply(.timerFired(key), "timer \(key)")
        }
    }

    /// Applies a command on a copy: a refused command changes nothing.
    mutating func apply(_ command: LHCommand, _ what: String) throws {
        let before = harness.state
        var after = before
        let effects: [LHEffect]
        do {
            effects = try WorkflowEngine.apply(command, to: &after, context: harness.context, now: harness.now)
        } catch let error as LHEngineError {
            log.append("\(what): refused (\(error))")
            return
        }
        log.append(what)
        harness.state = after
        harness.absorb(effects)
        applied.append((command, harness.now))
        try check(command, before: before, after: after)
    }

    // MARK: The rules

    mutating func check(_ command: LHCommand, before: WfRunState, after: WfRunState) throws {
        if after.wfRun.threadRuns.contains(where: { $0.status == .halted }) { sawHalted = true }
        if after.wfRun.threadRuns.count > before.wfRun.threadRuns.count {
            sawHandler =
                sawHandler
                || after.wfRun.threadRuns.dropFirst(before.wfRun.threadRuns.count).contains { $0.type == .interrupt }
        }
        if let broken = Self.brokenRule(
            command, before: before, after: after, timers: harness.timers, queued: Set(harness.queued.keys))
        {
            throw PropertyFailure(
                message:
                    "\(broken)\nthreads: \(after.wfRun.threadRuns.map { "\($0.number) \($0.type.protoName) \($0.status.protoName) \($0.haltReasons.count) reasons" })"
            )
        }
    }

    /// Attempts TASK_RUNNING, by the thread of their TASK node.
    static func runningAttempts(_ state: WfRunState) -> [(guid: String, attempt: Int, thread: Int32)] {
        state.taskRuns.flatMap { guid, run in
            run.attempts.indices.filter { run.attempts[$0].status == .taskRunning }.map {
                (guid, $0, run.source.taskNode.nodeRunID.threadRunNumber)
            }
        }
    }

    /// The first halting rule `command` broke going from `before` to
    /// `after` (`timers`: those pending after it), or nil.
    static func brokenRule(
        _ command: LHCommand, before: WfRunState, after: WfRunState, timers: [LHTimerKey: Date],
        queued: Set<String> = []
    ) -> String? {
        let threads = after.wfRun.threadRuns
        for t in threads where t.status == .halted {
            // HALTED only when nothing of its current node is in a worker's hands...
            if let held = runningAttempts(after).first(where: { $0.thread == t.number }) {
                return "thread \(t.number) is HALTED while TaskRun \(held.guid) attempt \(held.attempt) is TASK_RUNNING"
            }
            // ...and every child it waits for (not its handlers) is HALTED or over.
            for c in t.childThreadIds {
                guard let child = after.thread(c), child.type == .child else { continue }
                if !child.status.isTerminal && child.status != .halted {
                    return "thread \(t.number) is HALTED while its child \(c) is \(child.status.protoName)"
                }
            }
            if t.haltReasons.isEmpty { return "thread \(t.number) is HALTED with no halt reason" }
        }
        // A handler starts only once its thread has nothing in a worker's
        // hands: the attempt this command ended (its report, its timeout) aside.
        let ended: String? =
            switch command {
            case .reportTask(let r): r.taskRunID.taskGuid
            case .timerFired(.attemptTimeout(let guid, _)): guid
            case .attemptLost(let guid, _, _): guid
            default: nil
            }
        for h in threads.dropFirst(before.wfRun.threadRuns.count) where h.type == .interrupt {
            let held = runningAttempts(before).filter { $0.thread == h.parentThreadID && $0.guid != ended }
            if let first = held.first {
                return
                    "handler thread \(h.number) started while TaskRun \(first.guid) of thread \(h.parentThreadID) was in flight"
            }
        }
        // A TASK in flight is never abandoned: it ends by a report or by its timeout.
        for held in runningAttempts(after)
        where timers[.attemptTimeout(taskGuid: held.guid, attempt: Int32(held.attempt))] == nil {
            return "TaskRun \(held.guid) attempt \(held.attempt) is TASK_RUNNING with no timeout pending"
        }
        // Every live thread waits for something named.
        guard !after.isTerminated else { return nil }
        for t in threads where !t.status.isTerminal {
            switch t.status {
            case .halted:
                continue
            case .halting:
                let waiting =
                    runningAttempts(after).contains { $0.thread == t.number }
                    || t.childThreadIds.contains { c in
                        after.thread(c).map { !$0.status.isTerminal && $0.status != .halted } ?? false
                    }
                if !waiting { return "thread \(t.number) is HALTING with nothing to wait for" }
            default:
                guard let node = after.currentNodeRun(of: t.number) else {
                    return "thread \(t.number) is \(t.status.protoName) with no current NodeRun"
                }
                if node.status.isTerminal {
                    return
                        "thread \(t.number) is \(t.status.protoName) on a \(node.status.protoName) node \(node.nodeName)"
                }
                guard t.status == .running, node.status == .running else { continue }
                switch node.nodeType {
                case .task(let task):
                    // Its attempt is in a worker's hands, queued, or waiting for its backoff.
                    let guid = task.taskRunID.taskGuid
                    guard let attempt = after.taskRuns[guid]?.attempts.last else {
                        return "thread \(t.number) waits on TaskRun \(guid) with no attempt"
                    }
                    let n = Int32(after.taskRuns[guid]!.attempts.count - 1)
                    let alive =
                        attempt.status == .taskRunning
                        || (attempt.status == .taskScheduled
                            && (queued.contains(guid) || timers[.retryBackoff(taskGuid: guid, attempt: n)] != nil))
                    if !alive {
                        return
                            "thread \(t.number) waits on TaskRun \(guid) attempt \(n) (\(attempt.status.protoName)) that nothing will run"
                    }
                case .sleep:
                    if timers[.sleep(NodeRunKey(thread: t.number, position: node.id.position))] == nil {
                        return "thread \(t.number) sleeps at \(node.nodeName) with no timer"
                    }
                default:
                    break
                }
            }
        }
        return nil
    }

    /// The same commands on a fresh WfRun give the same state.
    func checkReplay() throws {
        var fresh = try Harness(threads: threads, taskDefs: Self.taskDefs, events: Self.events)
        for (command, at) in applied {
            fresh.now = at
            _ = try WorkflowEngine.apply(command, to: &fresh.state, context: fresh.context, now: at)
        }
        if fresh.state != harness.state {
            throw PropertyFailure(message: "replaying \(applied.count) commands gave another state")
        }
    }
}
