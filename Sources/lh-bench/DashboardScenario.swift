import ArgumentParser
import Foundation
import LHClient
import LHProto
import LHWorkflow

/// The dashboard's cost on a big WfRun: one WfRun of `threads` child threads
/// of `tasks` TaskRuns each (about 1,000 NodeRuns for 100 × 8), then its page
/// fetched again and again: the server's own render time (the
/// `lh_dashboard_render_seconds` histogram) and the whole request as a
/// client sees it (curl, TLS verified).
struct DashboardBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard",
        abstract: "Render time of the WfRun page for a WfRun with many threads and NodeRuns.")

    @OptionGroup var common: CommonOptions
    @Option(help: "Child threads of the WfRun.") var threads: Int = 100
    @Option(help: "TaskRuns per child thread.") var tasks: Int = 8
    @Option(help: "Page loads measured.") var loads: Int = 30

    func validate() throws {
        guard threads >= 1, tasks >= 1, loads >= 1 else {
            throw ValidationError("--threads, --tasks and --loads must be at least 1")
        }
        guard common.server == nil else { throw ValidationError("dashboard starts its own server") }
    }

    func run() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/curl") else {
            throw BenchError("dashboard needs curl (/usr/bin/curl) to fetch pages")
        }
        var options = common
        let port = try freeLoopbackPort()
        options.serverArgs += " --http-listen 127.0.0.1:\(port)"
        let (threads, tasks, loads) = (self.threads, self.tasks, self.loads)
        try await Bench.run(options, tasks: [BenchTask.one]) { bench in
            let wf = Workflow("bench-wide") { wf in
                var children: [WfRunVariable] = []
                for _ in 0..<threads {
                    children.append(
                        wf.spawnThread("child") { child in
                            for i in 0..<tasks { child.execute(BenchTask.one, i) }
                        })
                }
                for child in children { wf.waitForThreads(child) }
            }
            try await bench.register(wf)
            try await bench.runWf("bench-wide", id: "wide-1")
            say("waiting for wide-1's \(threads) threads of \(tasks) tasks")
            let deadline = monoSeconds() + 300
            while try await bench.client.getWfRun("wide-1").status != .completed {
                guard monoSeconds() < deadline else { throw BenchError("wide-1 did not complete in 300 s") }
                try await Task.sleep(for: .milliseconds(200))
            }
            let run = try await bench.client.getWfRun("wide-1")
            let nodeRuns = try await bench.client.listNodeRuns("wide-1").results.count
            let base = "https://127.0.0.1:\(port)"
            let ca = bench.server.caPath ?? ""
            var nanos: [Int64] = []
            var bytes = 0
            say("loading /wfRuns/wide-1 \(loads) times")
            for _ in 0..<loads {
                let t = monoSeconds()
                let page = try curl("\(base)/wfRuns/wide-1", ca: ca)
                nanos.append(Int64((monoSeconds() - t) * 1e9))
                bytes = page.count
                guard page.contains("id=\"threads\"") else {
                    throw BenchError("the page is not the WfRun's:\n\(page.prefix(500))")
                }
            }
            let metrics = try curl("\(base)/metrics", ca: ca)
            let sum = Self.sample(metrics, "lh_dashboard_render_seconds_sum{page=\"wfRun\"}") ?? .nan
            let count = Self.sample(metrics, "lh_dashboard_render_seconds_count{page=\"wfRun\"}") ?? .nan
            var r = Results("dashboard")
            r.add("threads / NodeRuns", "\(run.threadRuns.count) / \(nodeRuns)", key: "threads", run.threadRuns.count)
            r.fields["node_runs"] = nodeRuns
            r.add(
                "server render, mean", String(format: "%.2f ms (n=%.0f)", sum / count * 1000, count),
                key: "server_render_mean_ms", round3(sum / count * 1000))
            r.add("page load (curl, TLS)", Distribution(nanos: nanos), key: "page_load")
            r.add("page size", "\(bytes / 1024) KiB", key: "page_bytes", bytes)
            return r
        }
    }

    /// One sample's value from the Prometheus text.
    static func sample(_ text: String, _ name: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}

/// GET with curl, the server's CA trusted.
func curl(_ url: String, ca: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    process.arguments = ["-sS", "--fail", "--cacert", ca, url]
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    let errors = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw BenchError("curl \(url) failed: \(String(decoding: errors, as: UTF8.self))")
    }
    return String(decoding: data, as: UTF8.self)
}

/// A port of 127.0.0.1 that was free a moment ago.
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
    }
    guard bound == 0 else { throw BenchError("cannot find a free port") }
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
}
