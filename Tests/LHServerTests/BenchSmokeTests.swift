import Foundation
import LHClient
import LHWire
import Testing

/// Every lh-bench scenario runs end to end at a tiny size (debug build, so
/// the figures mean nothing here) and reports what it measured: the
/// benchmark cannot rot unnoticed. Its figures are in docs/performance.md.
@Suite(.serialized, .timeLimit(.minutes(3))) struct BenchSmokeTests {
    /// Runs `lh-bench ARGS` and returns its JSON line.
    func bench(_ arguments: [String]) async throws -> [String: Any] {
        let process = Process()
        process.executableURL = ServerProcess.binDir.appendingPathComponent("lh-bench")
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try spawn(process)
        // Drain both pipes while it runs so that it never blocks on a full pipe.
        async let stdout = Task.detached { out.fileHandleForReading.readDataToEndOfFile() }.value
        async let stderr = Task.detached { err.fileHandleForReading.readDataToEndOfFile() }.value
        let deadline = Date().addingTimeInterval(150)
        while process.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        if process.isRunning {
            // Its SIGTERM handler stops the server and workers it started.
            process.terminate()
            process.waitUntilExit()
        }
        let text = String(decoding: await stdout, as: UTF8.self)
        let log = String(decoding: await stderr, as: UTF8.self)
        try #require(
            process.terminationStatus == 0,
            "lh-bench \(arguments.joined(separator: " ")) exited with \(process.terminationStatus):\n\(log.suffix(2000))"
        )
        let line = try #require(text.split(separator: "\n").last { $0.hasPrefix("{") }, "no JSON line in:\n\(text)")
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    func count(_ json: [String: Any], _ key: String) -> Int { (json[key] as? [String: Any])?["count"] as? Int ?? -1 }

    @Test func throughputReportsTaskRunsPerSecondAndServerCPU() async throws {
        let r = try await bench([
            "throughput", "--duration", "2", "--warmup", "0.5", "--workers", "1", "--capacity", "64",
        ])
        #expect(r["scenario"] as? String == "throughput")
        #expect((r["taskruns_per_s"] as? Double ?? 0) > 0)
        #expect((r["server_cpu_s_per_1000_taskruns"] as? Double ?? -1) > 0)
        #expect(r["errors"] as? Int == 0)
        // The debug build links glibc's malloc (LH_JEMALLOC is for release builds).
        #expect(["glibc", "jemalloc"].contains(r["server_allocator"] as? String ?? ""))
        let steal = r["cpu_steal_percent"] as? Double ?? -1
        #expect(steal >= 0 && steal <= 100)
    }

    @Test func latencyReportsTaskToNextTaskAndRunToCompletion() async throws {
        let r = try await bench(["latency", "--rate", "10", "--duration", "2", "--warmup", "0.5", "--workers", "1"])
        #expect(count(r, "task_to_next_task") >= 40)
        #expect(count(r, "runwf_to_completed") >= 10)
        #expect(r["not_completed"] as? Int == 0)
        #expect(r["errors"] as? Int == 0)
    }

    @Test func interruptsReportRoundTripsAndHandlersDoneByTheAck() async throws {
        let r = try await bench([
            "interrupts", "--wf-runs", "10", "--events", "20", "--duration", "1", "--in-flight", "8", "--workers", "1",
        ])
        #expect(count(r, "event_round_trip") == 20)
        #expect(count(r, "event_to_handler_completed") == 20)
        #expect(r["handlers_not_done_by_ack"] as? Int == 0)
        #expect((r["events_per_s"] as? Double ?? 0) > 0)
    }

    @Test func haltShowsTheHandlerStartingInTheReportsCommand() async throws {
        let r = try await bench(["halt", "--wf-runs", "6", "--in-flight", "3", "--hold-ms", "400", "--workers", "1"])
        let valid = r["interrupted_in_flight"] as? Int ?? 0
        #expect(valid >= 1)
        #expect(r["same_command"] as? Int == valid)
        #expect(r["waited_and_completed"] as? Int == valid)
        #expect(r["wrong"] as? Int == 0)
    }

    @Test func memoryReportsRSSDataSizeAndRestartTime() async throws {
        let r = try await bench(["memory", "--count", "100", "--workers", "1"])
        #expect((r["rss_waiting_bytes"] as? Int ?? 0) > 0)
        #expect((r["data_bytes_waiting"] as? Int ?? 0) > (r["data_bytes_completed"] as? Int ?? 0))
        #expect((r["restart_serving_s"] as? Double ?? 0) > 0)
    }
}
