import Foundation
import LHClient
import NIOConcurrencyHelpers

/// Wall-clock nanoseconds (CLOCK_REALTIME): comparable across the processes
/// of one machine and with the server's timestamps.
func wallNanos() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// Monotonic seconds, for measuring intervals inside the driver.
func monoSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Every child process lh-bench started, so that an interrupted run stops them too.
let childRegistry = NIOLockedValueBox<[Int32: Process]>([:])

func stopAllChildren() {
    let all = childRegistry.withLockedValue { $0 }
    for (pid, process) in all where process.isRunning { kill(pid, SIGKILL) }
}

/// Stops the children and exits on SIGINT / SIGTERM.
func installSignalCleanup() {
    for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler {
            FileHandle.standardError.write(Data("\nlh-bench: interrupted; stopping the server and workers\n".utf8))
            stopAllChildren()
            Foundation.exit(130)
        }
        source.resume()
        signalSources.append(source)
    }
}
nonisolated(unsafe) private var signalSources: [any DispatchSourceSignal] = []

/// A child process whose stdout lines go to a callback and whose stderr goes
/// to a log file.
final class Child: @unchecked Sendable {
    let process = Process()
    let name: String
    let stdinPipe = Pipe()
    let logPath: String
    private let buffer = NIOLockedValueBox(Data())

    init(
        name: String, executable: URL, arguments: [String], environment: [String: String]? = nil,
        logPath: String, onLine: @escaping @Sendable (Substring) -> Void
    ) throws {
        self.name = name
        self.logPath = logPath
        process.executableURL = executable
        process.arguments = arguments
        if let environment { process.environment = environment }
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        let out = Pipe()
        process.standardOutput = out
        process.standardError = log
        process.standardInput = stdinPipe
        let buffer = self.buffer
        out.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            guard !data.isEmpty else { handle.readabilityHandler = nil; return }
            let lines: [Substring] = buffer.withLockedValue { buf in
                buf.append(data)
                guard let last = buf.lastIndex(of: UInt8(ascii: "\n")) else { return [] }
                let text = String(decoding: buf[buf.startIndex...last], as: UTF8.self)
                buf.removeSubrange(buf.startIndex...last)
                return text.split(separator: "\n")
            }
            for line in lines { onLine(line) }
        }
        try process.run()
        childRegistry.withLockedValue { $0[process.processIdentifier] = process }
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    /// The last lines of its stderr, for error messages.
    var logTail: String {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(8).joined(separator: "\n")
    }

    /// Closes its stdin (the bench worker's "finish" signal).
    func closeStdin() { try? stdinPipe.fileHandleForWriting.close() }

    /// Waits up to `timeout` seconds for it to exit by itself.
    @discardableResult
    func waitForExit(timeout: Double) async -> Bool {
        let deadline = monoSeconds() + timeout
        while process.isRunning && monoSeconds() < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        return !process.isRunning
    }

    /// SIGTERM, then SIGKILL after `grace` seconds.
    func stop(grace: Double = 10) async {
        if process.isRunning {
            process.terminate()
            if !(await waitForExit(timeout: grace)) {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
        }
        childRegistry.withLockedValue { $0[process.processIdentifier] = nil }
    }
}

/// Directory of lh-bench's own executable, where `swift build` puts lh-server too.
func executableDirectory() -> URL {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: exe).deletingLastPathComponent()
}

/// Resident set size and peak of a process, in bytes, from /proc.
func residentBytes(pid: Int32) -> (rss: Int64, peak: Int64) {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (0, 0) }
    func field(_ name: String) -> Int64 {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
        let kb =
            line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int64($0) } ?? 0
        return kb * 1024
    }
    return (field("VmRSS"), field("VmHWM"))
}

/// The malloc a running process uses: "jemalloc" when lh-server was built
/// with `LH_JEMALLOC=1` (Package.swift), else glibc's.
func allocator(pid: Int32) -> String {
    guard let maps = try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8) else { return "unknown" }
    return maps.contains("libjemalloc") ? "jemalloc" : "glibc"
}

/// The machine's CPU time so far, in clock ticks of all cores: the part
/// the hypervisor gave to other guests ("steal") and the total.
func machineCPUTicks() -> (steal: Double, total: Double) {
    guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
        let line = text.split(separator: "\n").first, line.hasPrefix("cpu ")
    else { return (0, 0) }
    // user nice system idle iowait irq softirq steal ...
    let ticks = line.split(separator: " ").dropFirst().compactMap { Double($0) }
    guard ticks.count >= 8 else { return (0, 0) }
    return (ticks[7], ticks.prefix(8).reduce(0, +))
}

/// User + system CPU seconds a process has used so far.
func cpuSeconds(pid: Int32) -> Double {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = text.lastIndex(of: ")")
    else { return 0 }
    // Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
    let rest = text[text.index(after: close)...].split(separator: " ")
    guard rest.count > 13, let utime = Double(rest[11]), let stime = Double(rest[12]) else { return 0 }
    return (utime + stime) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Bytes of all files under a directory.
func directoryBytes(_ url: URL) -> Int64 {
    guard let e = FileManager.default.enumerator(at: url, includingPropertiesForKeys: [.fileSizeKey]) else { return 0 }
    var total: Int64 = 0
    for case let file as URL in e {
        total += Int64((try? file.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0)
    }
    return total
}

/// The server under test: started by lh-bench (the usual case) or given with --server.
final class BenchServer: @unchecked Sendable {
    let host: String
    let port: Int
    let caPath: String?
    private(set) var child: Child?
    let dataDir: URL?
    let workDir: URL
    private let serverArguments: [String]
    private let binDir: URL

    /// Servers of a cluster, `HOST:PORT,...`, given to workers and clients
    /// instead of this server's own address.
    var clusterHosts: String?

    /// Starts `lh-server` on 127.0.0.1 (a free port unless `port` is given)
    /// with a data directory in `workDir`.
    static func start(binDir: URL, workDir: URL, arguments: [String], port: Int = 0) async throws -> (
        BenchServer, Double
    ) {
        let dataDir = workDir.appendingPathComponent("data")
        let (child, port, ca, seconds) = try await launch(
            binDir: binDir, workDir: workDir, dataDir: dataDir, port: port, arguments: arguments)
        let server = BenchServer(
            host: "127.0.0.1", port: port, caPath: ca, child: child, dataDir: dataDir, workDir: workDir,
            arguments: arguments, binDir: binDir)
        return (server, seconds)
    }

    /// An already running server (`--server host:port`).
    init(existing address: String, caPath: String?, workDir: URL) throws {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            throw BenchError("--server must be HOST:PORT, got '\(address)'")
        }
        host = String(address[..<colon])
        self.port = port
        self.caPath = caPath
        child = nil
        dataDir = nil
        self.workDir = workDir
        serverArguments = []
        binDir = executableDirectory()
    }

    private init(
        host: String, port: Int, caPath: String?, child: Child, dataDir: URL, workDir: URL, arguments: [String],
        binDir: URL
    ) {
        self.host = host
        self.port = port
        self.caPath = caPath
        self.child = child
        self.dataDir = dataDir
        self.workDir = workDir
        self.serverArguments = arguments
        self.binDir = binDir
    }

    /// Spawns lh-server and waits for its "listening" line; returns the
    /// seconds from spawn to that line.
    private static func launch(binDir: URL, workDir: URL, dataDir: URL, port: Int, arguments: [String])
        async throws -> (Child, Int, String?, Double)
    {
        let exe = binDir.appendingPathComponent("lh-server")
        guard FileManager.default.isExecutableFile(atPath: exe.path) else {
            throw BenchError("no lh-server next to lh-bench (\(exe.path)); build it with `swift build -c release`")
        }
        let announced = NIOLockedValueBox<String?>(nil)
        let started = monoSeconds()
        let child = try Child(
            name: "lh-server", executable: exe,
            arguments: ["--data-dir", dataDir.path, "--listen", "127.0.0.1:\(port)", "--log-level", "warning"]
                + arguments,
            logPath: workDir.appendingPathComponent("lh-server.log").path
        ) { line in
            if line.hasPrefix("lh-server listening on") { announced.withLockedValue { $0 = String(line) } }
        }
        while monoSeconds() - started < 120 {
            if let line = announced.withLockedValue({ $0 }) {
                let seconds = monoSeconds() - started
                let address = line.split(separator: " ")[3]
                let port = Int(address.split(separator: ":").last!) ?? 0
                var ca: String?
                if let range = line.range(of: "trust the CA at ") {
                    ca = line[range.upperBound...].split(separator: " ").first.map(String.init)
                }
                return (child, port, ca, seconds)
            }
            if !child.isRunning {
                throw BenchError(
                    "lh-server exited with \(child.process.terminationStatus) before listening:\n\(child.logTail)")
            }
            try await Task.sleep(for: .milliseconds(2))
        }
        await child.stop()
        throw BenchError("lh-server did not start listening within 120 s:\n\(child.logTail)")
    }

    /// Graceful stop (SIGTERM); returns the seconds it took.
    func stop() async -> Double {
        guard let child else { return 0 }
        let t = monoSeconds()
        await child.stop(grace: 30)
        return monoSeconds() - t
    }

    /// Starts the same server again on the same data directory and port;
    /// returns the seconds from spawn to "listening".
    func restart() async throws -> Double {
        guard let dataDir else { throw BenchError("cannot restart a server lh-bench did not start") }
        let (child, _, _, seconds) = try await BenchServer.launch(
            binDir: binDir, workDir: workDir, dataDir: dataDir, port: port,
            arguments: serverArguments)
        self.child = child
        return seconds
    }

    var pid: Int32? { child?.pid }

    func config(clientId: String) -> LHConfig {
        var config = LHConfig(clientId: clientId)
        config.apiHost = clusterHosts ?? host
        config.apiPort = port
        config.caCertPath = caPath
        return config
    }

    /// The environment a worker process needs to reach this server.
    func workerEnvironment(capacity: Int, workerId: String) -> [String: String] {
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LHC_") && !$0.key.hasPrefix("LHW_") }
        env["LHC_API_HOST"] = clusterHosts ?? host
        env["LHC_API_PORT"] = String(port)
        if let caPath { env["LHC_CA_CERT"] = caPath }
        env["LHW_NUM_WORKER_THREADS"] = String(capacity)
        env["LHW_TASK_WORKER_ID"] = workerId
        env["LHC_CLIENT_ID"] = workerId
        return env
    }
}

/// The bench's worker processes (`lh-bench worker ...`): they print how many
/// tasks they reported every 50 ms and, when their stdin closes, the latency
/// samples they took.
final class BenchWorkers: @unchecked Sendable {
    private var children: [Child] = []
    private let counts: NIOLockedValueBox<[Int]>
    private let samples = NIOLockedValueBox<[Int64]>([])
    private let finished = NIOLockedValueBox(0)

    init(count: Int, tasks: [String], capacity: Int, holdMs: Int, server: BenchServer) async throws {
        counts = NIOLockedValueBox([Int](repeating: 0, count: count))
        let ready = NIOLockedValueBox(0)
        let exe = executableDirectory().appendingPathComponent("lh-bench")
        for i in 0..<count {
            let counts = self.counts
            let samples = self.samples
            let finished = self.finished
            let child = try Child(
                name: "worker-\(i)", executable: exe,
                arguments: ["worker", "--tasks", tasks.joined(separator: ","), "--hold-ms", String(holdMs)],
                environment: server.workerEnvironment(capacity: capacity, workerId: "bench-worker-\(i)"),
                logPath: server.workDir.appendingPathComponent("worker-\(i).log").path
            ) { line in
                if line.hasPrefix("count "), let n = Int(line.dropFirst(6)) {
                    counts.withLockedValue { $0[i] = n }
                } else if line.hasPrefix("samples ") {
                    let values = line.dropFirst(8).split(separator: " ").compactMap { Int64($0) }
                    samples.withLockedValue { $0 += values }
                } else if line == "ready" {
                    ready.withLockedValue { $0 += 1 }
                } else if line == "end" {
                    finished.withLockedValue { $0 += 1 }
                }
            }
            children.append(child)
        }
        let started = monoSeconds()
        while ready.withLockedValue({ $0 }) < count {
            if let dead = children.first(where: { !$0.isRunning }) {
                throw BenchError("\(dead.name) exited with \(dead.process.terminationStatus):\n\(dead.logTail)")
            }
            if monoSeconds() - started > 60 { throw BenchError("workers not ready within 60 s") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Tasks reported by all workers (as of their last count line, ≤ 50 ms old).
    var completed: Int { counts.withLockedValue { $0.reduce(0, +) } }

    var pids: [Int32] { children.map(\.pid) }

    /// Asks every worker for its samples and waits for them to exit.
    func finish() async -> [Int64] {
        for child in children { child.closeStdin() }
        let deadline = monoSeconds() + 20
        while finished.withLockedValue({ $0 }) < children.count && monoSeconds() < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        for child in children { await child.stop(grace: 5) }
        return samples.withLockedValue { $0 }
    }

    func stop() async {
        for child in children { await child.stop(grace: 5) }
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ message: String) { description = message }
}
