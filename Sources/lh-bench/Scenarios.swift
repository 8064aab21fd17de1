import ArgumentParser
import Foundation
import LHClient
import LHProto
import LHWorkflow
import NIOConcurrencyHelpers

// The WfSpecs the scenarios run.
enum BenchSpecs {
    static var oneTask: Workflow {
        Workflow("bench-one-task") { wf in
            wf.execute(BenchTask.one, 1)
        }
    }

    static let chainLength = 5
    /// Five tasks; each gets the time its predecessor was reported.
    static var chain: Workflow {
        Workflow("bench-chain") { wf in
            var previous = wf.execute(BenchTask.step, 0)
            for _ in 1..<chainLength { previous = wf.execute(BenchTask.step, previous) }
        }
    }

    static let poke = "bench-poke"
    static let finish = "bench-finish"

    /// Waits for an event; each interrupt adds one to a counter.
    static var interruptible: Workflow {
        Workflow("bench-interruptible") { wf in
            let counter = wf.declare("counter", .int, default: .with { $0.int = 0 })
            wf.waitForEvent(finish)
            wf.registerInterruptHandler(poke) { handler in
                handler.mutate(counter, .add, 1)
            }
        }
    }

    /// One long task; an interrupt arriving while it runs waits for its report.
    static var halting: Workflow {
        Workflow("bench-halting") { wf in
            let counter = wf.declare("counter", .int, default: .with { $0.int = 0 })
            wf.execute(BenchTask.hold, 1)
            wf.registerInterruptHandler(poke) { handler in
                handler.mutate(counter, .add, 1)
            }
        }
    }
}

/// RunWf in flight when a scenario drives the server as fast as it goes:
/// 400 gave 5,470 TaskRuns/s (median of six alternating 8 s runs) where
/// 256 gave 4,810 and 512/600 about 5,100 (docs/performance.md).
enum Saturation {
    static let inFlight = 400
}

struct Throughput: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "WfRuns of RunWf → TASK → EXIT as fast as they go: TaskRuns/s over a steady window, server CPU per 1,000 TaskRuns."
    )

    @OptionGroup var common: CommonOptions
    @Option(help: "Length of the measured window, seconds.") var duration: Double = 30
    @Option(help: "Seconds of load before the window opens.") var warmup: Double = 5
    @Option(help: "RunWf requests in flight at once.") var inFlight: Int = Saturation.inFlight
    @Option(help: "Most tasks started but not yet reported.") var maxOutstanding: Int = 4000

    func run() async throws {
        try await Bench.run(common, tasks: [BenchTask.one]) { bench in
            try await bench.register(BenchSpecs.oneTask)
            let d = try await bench.saturate(
                "bench-one-task", prefix: "tp", tasksPerWf: 1, duration: duration, warmup: warmup,
                inFlight: inFlight, maxOutstanding: maxOutstanding, label: "throughput")
            var r = Results("throughput")
            r.add(
                "TaskRuns completed/s", String(format: "%.0f  (%d in %.1f s)", d.taskRate, d.tasksInWindow, d.seconds),
                key: "taskruns_per_s", round3(d.taskRate))
            r.add("RunWf acknowledged/s", String(format: "%.0f", d.ackRate), key: "runwf_per_s", round3(d.ackRate))
            r.add(
                "server CPU s / 1,000 TaskRuns", String(format: "%.3f", d.cpuPer1000(\.serverCPU)),
                key: "server_cpu_s_per_1000_taskruns", round3(d.cpuPer1000(\.serverCPU)))
            r.add(
                "workers CPU s / 1,000 TaskRuns", String(format: "%.3f", d.cpuPer1000(\.workerCPU)),
                key: "worker_cpu_s_per_1000_taskruns", round3(d.cpuPer1000(\.workerCPU)))
            r.add(
                "driver CPU s / 1,000 TaskRuns", String(format: "%.3f", d.cpuPer1000(\.driverCPU)),
                key: "driver_cpu_s_per_1000_taskruns", round3(d.cpuPer1000(\.driverCPU)))
            d.addDatabaseRows(to: &r, bench)
            if let pid = bench.server.pid {
                let mem = residentBytes(pid: pid)
                r.add(
                    "server RSS (peak)", "\(megabytes(mem.rss)) (\(megabytes(mem.peak)))", key: "server_rss_bytes",
                    mem.rss)
            }
            r.add("RunWf errors", errors: d.errors)
            return r
        }
    }
}

struct Latency: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A chain of 5 tasks at a fixed rate: task-to-next-task and RunWf → COMPLETED percentiles.")

    @OptionGroup var common: CommonOptions
    @Option(help: "WfRuns started per second (default: half the maximum measured first).") var rate: Double?
    @Option(help: "Seconds of measuring the maximum when --rate is not given.") var calibrate: Double = 8
    @Option(help: "Length of the measured window, seconds.") var duration: Double = 20
    @Option(help: "Seconds at the rate before the window opens.") var warmup: Double = 3
    @Option(help: "WfRuns of the window read back for RunWf → COMPLETED.") var sample: Int = 5000
    @Option(
        help:
            "Write every task-to-next-task sample of the window to this file (CSV: wall-clock nanoseconds when taken, gap nanoseconds), to see when the slow ones happen."
    )
    var samplesFile: String?

    func run() async throws {
        try await Bench.run(common, tasks: [BenchTask.step]) { bench in
            try await bench.register(BenchSpecs.chain)
            let tasksPerWf = BenchSpecs.chainLength
            var r = Results("latency")
            var perSecond: Double
            if let rate {
                perSecond = rate
            } else {
                let d = try await bench.saturate(
                    "bench-chain", prefix: "cal", tasksPerWf: tasksPerWf, duration: calibrate, warmup: 2,
                    inFlight: Saturation.inFlight, maxOutstanding: 4000, label: "finding the maximum")
                perSecond = d.taskRate / Double(tasksPerWf) / 2
                r.add(
                    "maximum (calibration)",
                    String(format: "%.0f TaskRuns/s = %.0f WfRuns/s", d.taskRate, d.taskRate / Double(tasksPerWf)),
                    key: "max_taskruns_per_s", round3(d.taskRate))
                try await bench.waitForCompleted(d.started * tasksPerWf, timeout: 120)
            }
            guard perSecond > 0 else { throw BenchError("the rate must be positive") }
            let baseTasks = bench.workers.completed
            let sendTimes = NIOLockedValueBox<[Int: Int64]>([:])
            let errors = ErrorTally()
            let progress = Progress("latency at \(Int(perSecond)) WfRuns/s", total: warmup + duration, unit: "s")
            let begin = monoSeconds()
            var windowWall: (Int64, Int64) = (0, 0)
            var windowIndex = 0..<0
            var started = 0
            var window = (start: bench.reading(acks: 0), end: bench.reading(acks: 0))
            try await withThrowingDiscardingTaskGroup { group in
                var opened = false
                while true {
                    let elapsed = monoSeconds() - begin
                    if elapsed >= warmup + duration { break }
                    if !opened && elapsed >= warmup {
                        opened = true
                        windowWall.0 = wallNanos()
                        windowIndex = started..<started
                        window.start = bench.reading(acks: 0)
                    }
                    let due = Double(started) / perSecond
                    if due > elapsed {
                        progress.update(elapsed)
                        try await Task.sleep(for: .microseconds(Int((due - elapsed) * 1e6)))
                        continue
                    }
                    let index = started
                    started += 1
                    group.addTask {
                        let sent = wallNanos()
                        do {
                            try await bench.runWf("bench-chain", id: "lat-\(index)")
                            sendTimes.withLockedValue { $0[index] = sent }
                        } catch {
                            errors.record(error)
                        }
                    }
                }
                windowWall.1 = wallNanos()
                windowIndex = windowIndex.lowerBound..<started
                window.end = bench.reading(acks: 0)
            }
            progress.done()
            try await bench.waitForCompleted(baseTasks + started * tasksPerWf, timeout: 120)
            let achieved = Double(windowIndex.count) / duration
            // Samples of the window only (their first field is when they were taken).
            let pairs = await bench.workers.finish()
            var gaps: [Int64] = []
            var csv = "taken_ns,gap_ns\n"
            var i = 0
            while i + 1 < pairs.count {
                if pairs[i] >= windowWall.0 && pairs[i] <= windowWall.1 {
                    gaps.append(pairs[i + 1])
                    if samplesFile != nil { csv += "\(pairs[i]),\(pairs[i + 1])\n" }
                }
                i += 2
            }
            if let samplesFile {
                do { try csv.write(toFile: samplesFile, atomically: true, encoding: .utf8) } catch {
                    throw BenchError("cannot write the samples to \(samplesFile): \(error)")
                }
            }
            // RunWf sent → COMPLETED as the server stamped it.
            let picks = stride(
                from: windowIndex.lowerBound, to: windowIndex.upperBound,
                by: max(1, windowIndex.count / max(sample, 1))
            ).map { $0 }
            let ends = NIOLockedValueBox<[Int64]>([])
            let notCompleted = NIOLockedValueBox(0)
            _ = try await bench.concurrently("reading WfRuns", count: picks.count, inFlight: 64) { k in
                let index = picks[k]
                guard let sent = sendTimes.withLockedValue({ $0[index] }) else { return }
                let wfRun = try await bench.client.getWfRun("lat-\(index)")
                if wfRun.status == .completed && wfRun.hasEndTime {
                    ends.withLockedValue { $0.append(wfRun.endTime.nanos64 - sent) }
                } else {
                    notCompleted.withLockedValue { $0 += 1 }
                }
            }
            r.add(
                "rate", String(format: "%.1f WfRuns/s = %.0f TaskRuns/s", achieved, achieved * Double(tasksPerWf)),
                key: "wfruns_per_s", round3(achieved))
            r.add("task-to-next-task", Distribution(nanos: gaps), key: "task_to_next_task")
            r.add("RunWf → COMPLETED", Distribution(nanos: ends.withLockedValue { $0 }), key: "runwf_to_completed")
            r.add(
                "WfRuns not COMPLETED", "\(notCompleted.withLockedValue { $0 })", key: "not_completed",
                notCompleted.withLockedValue { $0 })
            // CPU over the window, per TaskRun completed in it: what a TaskRun
            // costs at this rate (small group commits cost more per command
            // than the large ones of saturation).
            let d = DriveOutcome(errors: errors, windowStart: window.start, windowEnd: window.end)
            r.add(
                "server CPU s / 1,000 TaskRuns", String(format: "%.3f", d.cpuPer1000(\.serverCPU)),
                key: "server_cpu_s_per_1000_taskruns", round3(d.cpuPer1000(\.serverCPU)))
            r.add(
                "workers CPU s / 1,000 TaskRuns", String(format: "%.3f", d.cpuPer1000(\.workerCPU)),
                key: "worker_cpu_s_per_1000_taskruns", round3(d.cpuPer1000(\.workerCPU)))
            d.addDatabaseRows(to: &r, bench)
            r.add("RunWf errors", errors: errors)
            return r
        }
    }
}

struct Interrupts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "WfRuns waiting on an event, interrupted by another whose handler does one mutation: round trip and events/s."
    )

    @OptionGroup var common: CommonOptions
    @Option(help: "WfRuns waiting to be interrupted.") var wfRuns: Int = 2000
    @Option(help: "Events posted one at a time for the round-trip figures.") var events: Int = 2000
    @Option(help: "Seconds of posting with many in flight (saturation).") var duration: Double = 10
    @Option(help: "PutExternalEvent requests in flight at saturation.") var inFlight: Int = 256

    func run() async throws {
        try await Bench.run(common, tasks: [BenchTask.one]) { bench in
            try await bench.register(BenchSpecs.interruptible, events: [BenchSpecs.poke, BenchSpecs.finish])
            let w = wfRuns
            let setup = try await bench.concurrently("starting WfRuns", count: w, inFlight: 128) { i in
                try await bench.runWf("bench-interruptible", id: "int-\(i)")
            }
            try setup.requireNone("RunWf")
            // One at a time: the unloaded round trip.
            var roundTrips: [Int64] = []
            var sent: [String: (Int64, Int64)] = [:]
            let progress = Progress("events one at a time", total: Double(events), unit: "events")
            for e in 0..<events {
                let guid = "rt-\(e)"
                let t0 = wallNanos()
                try await bench.poke("int-\(e % w)", event: BenchSpecs.poke, guid: guid)
                let t1 = wallNanos()
                roundTrips.append(t1 - t0)
                sent[guid] = (t0, t1)
                if e % 100 == 0 { progress.update(Double(e)) }
            }
            progress.done()
            // The handlers, as the server recorded them.
            var handlerDone: [Int64] = []
            var notBeforeAck = 0
            var handlersSeen = 0
            for i in 0..<min(w, events, 500) {
                let wfRun = try await bench.client.getWfRun("int-\(i)")
                for thread in wfRun.threadRuns where thread.type == .interrupt {
                    guard let (t0, t1) = sent[thread.interruptTriggerID.guid] else { continue }
                    handlersSeen += 1
                    guard thread.status == .completed, thread.hasEndTime else { notBeforeAck += 1; continue }
                    handlerDone.append(thread.endTime.nanos64 - t0)
                    if thread.endTime.nanos64 > t1 { notBeforeAck += 1 }
                }
            }
            // Saturation.
            let acked = NIOLockedValueBox(0)
            let errors = ErrorTally()
            let sat = Progress("events at saturation", total: duration, unit: "s")
            let begin = monoSeconds()
            let cpu0 = bench.serverCPU
            var posted = 0
            try await withThrowingTaskGroup(of: Void.self) { group in
                var running = 0
                while monoSeconds() - begin < duration {
                    if running >= inFlight {
                        try await group.next()
                        running -= 1
                        if posted % 500 == 0 {
                            let n = acked.withLockedValue { $0 }
                            sat.update(
                                monoSeconds() - begin,
                                String(format: "%6.0f events/s", Double(n) / (monoSeconds() - begin)))
                        }
                        continue
                    }
                    let e = posted
                    posted += 1
                    running += 1
                    group.addTask {
                        do {
                            try await bench.poke("int-\(e % w)", event: BenchSpecs.poke, guid: "sat-\(e)")
                            acked.withLockedValue { $0 += 1 }
                        } catch {
                            errors.record(error)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let seconds = monoSeconds() - begin
            let cpu = bench.serverCPU - cpu0
            sat.done()
            let n = acked.withLockedValue { $0 }
            var r = Results("interrupts")
            r.add("PutExternalEvent sent → acknowledged", Distribution(nanos: roundTrips), key: "event_round_trip")
            r.add(
                "sent → handler ThreadRun COMPLETED", Distribution(nanos: handlerDone),
                key: "event_to_handler_completed")
            r.add(
                "handlers checked / not done by the ack", "\(handlersSeen) / \(notBeforeAck)",
                key: "handlers_not_done_by_ack", notBeforeAck)
            r.add(
                "events/s at saturation",
                String(format: "%.0f  (%d in %.1f s, %d in flight)", Double(n) / seconds, n, seconds, inFlight),
                key: "events_per_s", round3(Double(n) / seconds))
            r.add(
                "server CPU s / 1,000 events", String(format: "%.3f", n > 0 ? cpu / Double(n) * 1000 : .nan),
                key: "server_cpu_s_per_1000_events", round3(n > 0 ? cpu / Double(n) * 1000 : .nan))
            r.add("errors", errors: errors)
            return r
        }
    }
}

struct Halt: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Interrupts while a task is in a worker's hands: worker's report → handler start.")

    @OptionGroup var common: CommonOptions
    @Option(help: "WfRuns to interrupt.") var wfRuns: Int = 500
    @Option(help: "WfRuns at once.") var inFlight: Int = 32
    @Option(help: "How long the worker holds each task, ms; the interrupt comes at half of it.") var holdMs: Int = 200

    func run() async throws {
        try await Bench.run(common, tasks: [BenchTask.hold], holdMs: holdMs) { bench in
            try await bench.register(BenchSpecs.halting, events: [BenchSpecs.poke])
            let hold = holdMs
            let run = try await bench.concurrently("interrupting tasks in flight", count: wfRuns, inFlight: inFlight) {
                i in
                try await bench.runWf("bench-halting", id: "halt-\(i)")
                try await Task.sleep(for: .milliseconds(hold / 2))
                try await bench.poke("halt-\(i)", event: BenchSpecs.poke, guid: "p")
            }
            try run.requireNone("WfRuns")
            try await bench.waitForCompleted(wfRuns, timeout: 60 + Double(wfRuns * hold) / 1000)
            let reportToStart = NIOLockedValueBox<[Int64]>([])
            let counts = NIOLockedValueBox((valid: 0, sameCommand: 0, wrong: 0, waited: 0))
            _ = try await bench.concurrently("reading WfRuns", count: wfRuns, inFlight: 32) { i in
                let id = "halt-\(i)"
                var wfRun = try await bench.client.getWfRun(id)
                for _ in 0..<100 where wfRun.status != .completed {
                    try await Task.sleep(for: .milliseconds(20))
                    wfRun = try await bench.client.getWfRun(id)
                }
                let taskRuns = try await bench.client.listTaskRuns(id)
                let event = try await bench.client.getExternalEvent(
                    .with {
                        $0.wfRunID.id = id
                        $0.externalEventDefID.name = BenchSpecs.poke
                        $0.guid = "p"
                    })
                guard let handler = wfRun.threadRuns.first(where: { $0.type == .interrupt }),
                    let attempt = taskRuns.results.first?.attempts.first, attempt.hasEndTime
                else {
                    counts.withLockedValue { $0.wrong += 1 }
                    return
                }
                let eventAt = event.createdAt.nanos64
                // Only interrupts that arrived while the worker held the task.
                guard attempt.startTime.nanos64 < eventAt, eventAt < attempt.endTime.nanos64 else { return }
                let reported = attempt.output.int
                let start = handler.startTime.nanos64
                counts.withLockedValue {
                    $0.valid += 1
                    if start == attempt.endTime.nanos64 { $0.sameCommand += 1 }
                    if start >= attempt.endTime.nanos64 && handler.status == .completed && wfRun.status == .completed {
                        $0.waited += 1
                    }
                }
                reportToStart.withLockedValue { $0.append(start - reported) }
            }
            let c = counts.withLockedValue { $0 }
            var r = Results("halt")
            r.add(
                "worker's report → handler start", Distribution(nanos: reportToStart.withLockedValue { $0 }),
                key: "report_to_handler_start")
            r.add("interrupts during a task", "\(c.valid) of \(wfRuns)", key: "interrupted_in_flight", c.valid)
            r.add(
                "handler started in the report's command", "\(c.sameCommand) of \(c.valid)", key: "same_command",
                c.sameCommand)
            r.add(
                "handler waited for the report, WfRun COMPLETED", "\(c.waited) of \(c.valid)",
                key: "waited_and_completed", c.waited)
            r.add("WfRuns without handler or report", "\(c.wrong)", key: "wrong", c.wrong)
            return r
        }
    }
}

struct Memory: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Server RSS and data-directory size with many completed and many waiting WfRuns; restart time.")

    @OptionGroup var common: CommonOptions
    @Option(help: "Completed WfRuns, then the same number waiting.") var count: Int = 100_000
    @Option(help: "Requests in flight.") var inFlight: Int = 256

    func run() async throws {
        guard common.server == nil else {
            throw ValidationError("memory starts and restarts its own server; leave out --server")
        }
        try await Bench.run(common, tasks: [BenchTask.one]) { bench in
            try await bench.register(BenchSpecs.oneTask)
            try await bench.register(BenchSpecs.interruptible, events: [BenchSpecs.poke, BenchSpecs.finish])
            guard let pid = bench.server.pid, let dataDir = bench.server.dataDir else {
                throw BenchError("no server process")
            }
            var r = Results("memory")
            let base = residentBytes(pid: pid)
            r.add("server RSS at start", megabytes(base.rss), key: "rss_start_bytes", base.rss)
            r.add(
                "server start to listening", String(format: "%.3f s", bench.startupSeconds), key: "first_start_s",
                round3(bench.startupSeconds))
            let done = try await bench.saturate(
                "bench-one-task", prefix: "mem", tasksPerWf: 1, count: count, inFlight: inFlight,
                maxOutstanding: 4000, label: "\(count) completed WfRuns")
            try done.errors.requireNone("RunWf")
            try await Task.sleep(for: .seconds(1))
            let afterCompleted = residentBytes(pid: pid)
            let bytesCompleted = directoryBytes(dataDir)
            r.add(
                "RSS with \(count) completed (peak)",
                "\(megabytes(afterCompleted.rss)) (\(megabytes(afterCompleted.peak)))",
                key: "rss_completed_bytes", afterCompleted.rss)
            r.add(
                "data directory with \(count) completed", megabytes(bytesCompleted), key: "data_bytes_completed",
                bytesCompleted)
            r.add(
                "rate of completing them", String(format: "%.0f TaskRuns/s", done.taskRate), key: "taskruns_per_s",
                round3(done.taskRate))
            let waiting = try await bench.concurrently("\(count) waiting WfRuns", count: count, inFlight: inFlight) {
                i in
                try await bench.runWf("bench-interruptible", id: "wait-\(i)")
            }
            try waiting.requireNone("RunWf")
            try await Task.sleep(for: .seconds(1))
            let afterWaiting = residentBytes(pid: pid)
            let bytesWaiting = directoryBytes(dataDir)
            r.add(
                "RSS with \(count) waiting too (peak)",
                "\(megabytes(afterWaiting.rss)) (\(megabytes(afterWaiting.peak)))",
                key: "rss_waiting_bytes", afterWaiting.rss)
            r.add("data directory with both", megabytes(bytesWaiting), key: "data_bytes_waiting", bytesWaiting)
            // Restart with all of them in the store.
            await bench.client.close()
            let stopSeconds = await bench.server.stop()
            r.add(
                "graceful stop (SIGTERM → exit)", String(format: "%.3f s", stopSeconds), key: "stop_s",
                round3(stopSeconds))
            let spawned = monoSeconds()
            let listening = try await bench.server.restart()
            let client = try await LittleHorseClient.connect(bench.server.config(clientId: "lh-bench-restart"))
            defer { Task { await client.close() } }
            let probe = try await client.getWfRun("wait-\(count / 2)")
            let serving = monoSeconds() - spawned
            guard probe.status == .running else {
                throw BenchError("wait-\(count / 2) is \(probe.status) after the restart")
            }
            r.add(
                "restart: spawn → listening", String(format: "%.3f s", listening), key: "restart_listening_s",
                round3(listening))
            r.add(
                "restart: spawn → GetWfRun answered", String(format: "%.3f s", serving), key: "restart_serving_s",
                round3(serving))
            // The waiting WfRuns still work: interrupt one and read its counter.
            var event = Littlehorse_PutExternalEventRequest()
            event.wfRunID.id = "wait-0"
            event.externalEventDefID.name = BenchSpecs.poke
            event.content.int = 1
            _ = try await client.putExternalEvent(event)
            let variable = try await client.getVariable(
                .with {
                    $0.wfRunID.id = "wait-0"; $0.name = "counter"
                })
            guard variable.value.int == 1 else {
                throw BenchError("counter of wait-0 is \(variable.value.int) after one interrupt, expected 1")
            }
            if let newPid = bench.server.pid {
                let restarted = residentBytes(pid: newPid)
                r.add("RSS after restart", megabytes(restarted.rss), key: "rss_restarted_bytes", restarted.rss)
            }
            return r
        }
    }
}
