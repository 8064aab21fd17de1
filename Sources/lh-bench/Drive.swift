import Foundation
import LHClient
import NIOConcurrencyHelpers

/// A point-in-time reading of the counters a window is measured between.
struct Reading {
    var t = monoSeconds()
    var tasks: Int
    var acks: Int
    var serverCPU: Double
    var workerCPU: Double
    var driverCPU: Double
    /// PostgreSQL's CPU seconds and WAL bytes so far (0 on SQLite).
    var databaseCPU: Double = 0
    var walBytes: Double = 0
}

/// What a drive did, and its measuring window.
struct DriveOutcome {
    var started = 0
    var errors: ErrorTally
    var windowStart: Reading
    var windowEnd: Reading

    var seconds: Double { windowEnd.t - windowStart.t }
    var taskRate: Double { Double(windowEnd.tasks - windowStart.tasks) / seconds }
    var ackRate: Double { Double(windowEnd.acks - windowStart.acks) / seconds }
    var tasksInWindow: Int { windowEnd.tasks - windowStart.tasks }
    /// PostgreSQL's rows: its CPU and WAL per TaskRun (nothing on SQLite).
    func addDatabaseRows(to r: inout Results, _ bench: Bench) {
        guard bench.database != nil else { return }
        r.add(
            "PostgreSQL CPU s / 1,000 TaskRuns", String(format: "%.3f", cpuPer1000(\.databaseCPU)),
            key: "postgres_cpu_s_per_1000_taskruns", round3(cpuPer1000(\.databaseCPU)))
        let wal = cpuPer1000(\.walBytes) / 1000
        r.add("PostgreSQL WAL bytes / TaskRun", String(format: "%.0f", wal), key: "wal_bytes_per_taskrun", round3(wal))
    }

    func cpuPer1000(_ path: KeyPath<Reading, Double>) -> Double {
        tasksInWindow > 0
            ? (windowEnd[keyPath: path] - windowStart[keyPath: path]) / Double(tasksInWindow) * 1000 : .nan
    }
}

extension Bench {
    func reading(acks: Int) -> Reading {
        Reading(
            tasks: workers.completed, acks: acks, serverCPU: serverCPU,
            workerCPU: workers.pids.reduce(0) { $0 + cpuSeconds(pid: $1) }, driverCPU: cpuSeconds(pid: getpid()),
            databaseCPU: database?.cpuSeconds ?? 0, walBytes: database?.walBytes ?? 0)
    }

    /// Starts WfRuns of `spec` as fast as the server takes them, with at most
    /// `inFlight` RunWf requests and `maxOutstanding` unfinished tasks at once.
    /// Stops after `duration` seconds (the window is the part after `warmup`)
    /// or after `count` WfRuns (the window is all of it).
    func saturate(
        _ spec: String, prefix: String, tasksPerWf: Int, duration: Double? = nil, count: Int? = nil,
        warmup: Double = 0, inFlight: Int, maxOutstanding: Int, label: String
    ) async throws -> DriveOutcome {
        let acks = NIOLockedValueBox(0)
        let errors = ErrorTally()
        let progress =
            duration.map { Progress(label, total: $0 + warmup, unit: "s") }
            ?? Progress(label, total: Double(count ?? 0), unit: "WfRuns")
        let begin = monoSeconds()
        var windowStart = count == nil ? nil : reading(acks: 0)
        var started = 0
        var lastShown = (t: begin, tasks: workers.completed)
        var rateText = ""
        let stoppedAt: Reading? = try await withThrowingTaskGroup(of: Void.self, returning: Reading?.self) { group in
            var running = 0
            while true {
                let now = monoSeconds()
                if let duration, now - begin >= duration + warmup { break }
                if let count, started >= count { break }
                if windowStart == nil && now - begin >= warmup {
                    windowStart = reading(acks: acks.withLockedValue { $0 })
                }
                if now - lastShown.t >= 0.5 {
                    let c = workers.completed
                    rateText = String(format: "%6.0f TaskRuns/s", Double(c - lastShown.tasks) / (now - lastShown.t))
                    lastShown = (now, c)
                    progress.update(duration != nil ? now - begin : Double(started), rateText)
                }
                if running >= inFlight {
                    try await group.next()
                    running -= 1
                    continue
                }
                if started * tasksPerWf - workers.completed > maxOutstanding {
                    try await Task.sleep(for: .milliseconds(1))
                    continue
                }
                let id = "\(prefix)-\(started)"
                started += 1
                running += 1
                group.addTask {
                    do {
                        try await self.runWf(spec, id: id)
                        acks.withLockedValue { $0 += 1 }
                    } catch {
                        errors.record(error)
                    }
                }
            }
            // With a duration the window ends when the driving stops, not when
            // the last requests in flight are answered.
            let end = duration != nil ? reading(acks: acks.withLockedValue { $0 }) : nil
            try await group.waitForAll()
            return end
        }
        var end = stoppedAt ?? reading(acks: acks.withLockedValue { $0 })
        if count != nil {
            // Count mode: the window lasts until every task has been reported.
            try await waitForCompleted(started * tasksPerWf, timeout: 300)
            end = reading(acks: acks.withLockedValue { $0 })
        }
        progress.done(rateText)
        return DriveOutcome(started: started, errors: errors, windowStart: windowStart ?? end, windowEnd: end)
    }
}
