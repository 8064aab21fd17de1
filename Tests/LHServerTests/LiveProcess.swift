import Foundation
import LHClient
import LHWire
import NIOConcurrencyHelpers
import Synchronization

/// A helper process of the live tests (a worker), stopped on every path by
/// ``withProcess``.
final class LiveProcess: @unchecked Sendable {
    let process: Process
    let stdout = NIOLockedValueBox("")
    let stderr = NIOLockedValueBox("")

    /// `binary`: one of this package's executables, or a path with `absolutePath`.
    init(_ binary: String, _ arguments: [String], environment: [String: String], absolutePath: Bool = false) throws {
        process = Process()
        process.executableURL =
            absolutePath ? URL(fileURLWithPath: binary) : ServerProcess.binDir.appendingPathComponent(binary)
        process.arguments = arguments
        process.environment = environment
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let o = stdout
        let e = stderr
        out.fileHandleForReading.readabilityHandler = { h in
            let d = h.availableData
            if !d.isEmpty { o.withLockedValue { $0 += String(decoding: d, as: UTF8.self) } }
        }
        err.fileHandleForReading.readabilityHandler = { h in
            let d = h.availableData
            if !d.isEmpty { e.withLockedValue { $0 += String(decoding: d, as: UTF8.self) } }
        }
        try spawn(process)
    }

    /// Waits for a line containing `text` on stdout.
    func waitFor(_ text: String, timeout: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if stdout.withLockedValue({ $0.contains(text) }) { return }
            if !process.isRunning {
                throw LHError(
                    .unavailable,
                    "\(process.executableURL!.lastPathComponent) exited (\(process.terminationStatus)): \(stderr.withLockedValue { $0 })"
                )
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw LHError(
            .unavailable,
            "\(process.executableURL!.lastPathComponent) did not print '\(text)' within \(timeout) s: \(stderr.withLockedValue { $0 })"
        )
    }

    /// SIGTERM, then SIGKILL after 5 s, waiting without blocking a thread of
    /// the test process (an in-process server needs them).
    func terminate() async { await terminateWithoutBlocking(process, grace: 5) }

    func stop() { stopProcess(process, grace: 5) }

    func kill9() { killProcess(process) }
}

extension LiveServer {
    /// The LHC_* variables a client process of this server needs.
    func clientEnvironment(_ extra: [String: String] = [:]) -> [String: String] {
        var env = [
            "LHC_API_HOST": "127.0.0.1", "LHC_API_PORT": "\(port)", "LHC_CA_CERT": caPath ?? "", "HOME": dataDir.path,
        ]
        env.merge(extra) { _, b in b }
        return env
    }

    /// Starts a worker process; `withWorker` stops it.
    func startWorker(_ binary: String, _ arguments: [String], environment: [String: String] = [:], ready: String)
        async throws -> LiveProcess
    {
        let worker = try LiveProcess(binary, arguments, environment: clientEnvironment(environment))
        do {
            try await worker.waitFor(ready)
        } catch {
            worker.stop()
            throw error
        }
        return worker
    }

    /// Runs a short-lived command (lhctl, the register example) to its end.
    /// The blocking waits run on a thread of their own, never on one of the
    /// test process's concurrency threads (an in-process server answers the
    /// command on those).
    func command(_ binary: String, _ arguments: [String]) async throws -> (
        status: Int32, stdout: String, stderr: String
    ) {
        try await runTool(
            ServerProcess.binDir.appendingPathComponent(binary).path, arguments, environment: clientEnvironment())
    }

    /// Runs lhctl and returns its stdout; a non-zero exit is an error.
    @discardableResult
    func lhctl(_ arguments: String...) async throws -> String {
        let r = try await command("lhctl", arguments)
        guard r.status == 0 else {
            throw LHError(.unknown, "lhctl \(arguments.joined(separator: " ")) exited \(r.status): \(r.stderr)")
        }
        return r.stdout
    }
}

/// Runs `body` with processes that are stopped however it ends.
func withProcesses<T>(_ processes: [LiveProcess], _ body: () async throws -> T) async throws -> T {
    do {
        let r = try await body()
        for p in processes { await p.terminate() }
        return r
    } catch {
        for p in processes { await p.terminate() }
        throw error
    }
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(_ what: String, timeout: Double = 20, _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if (try? await condition()) == true { return }
        try await Task.sleep(for: .milliseconds(25))
    }
    if try await condition() { return }
    throw LHError(.unknown, "timed out after \(timeout) s waiting for: \(what)")
}

/// Calls `body` again while a cluster answers UNAVAILABLE or a connection
/// closes (the message says "retry": the owner of a partition was slow to
/// answer its peer under load, or moved), as a client of a cluster does, up
/// to `timeout` seconds. ALREADY_EXISTS after a retry: the first try landed
/// (the ids of these requests make them idempotent).
func retryingUnavailable(_ what: String, timeout: Double = 30, _ body: () async throws -> Void) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    var tries = 0
    while true {
        tries += 1
        do {
            return try await body()
        } catch let e as LHError where e.code == .alreadyExists && tries > 1 {
            return
        } catch let e as LHError where (e.code == .unavailable || e.code == .connectionClosed) && Date() < deadline {
            print("\(what): \(e.code) on try \(tries), retried: \(e.message)")
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}

/// SIGTERM, then SIGKILL after `grace` seconds, polling with Task.sleep: no
/// thread of the test process is blocked meanwhile.
func terminateWithoutBlocking(_ process: Process, grace: Double) async {
    guard !hasExited(process) else { return }
    process.terminate()
    let deadline = Date().addingTimeInterval(grace)
    while !hasExited(process) && Date() < deadline { try? await Task.sleep(for: .milliseconds(10)) }
    if !hasExited(process) { kill(process.processIdentifier, SIGKILL) }
}

/// Whether the child has ended: Foundation says so, or the kernel does (it
/// is a zombie or gone). Foundation sometimes never notices a child's end
/// when many end at once, and its `waitUntilExit` then spins forever: the
/// tests never call it on a child they stop.
func hasExited(_ process: Process) -> Bool {
    if !process.isRunning { return true }
    let pid = process.processIdentifier
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return true }
    let state = stat[stat.index(after: close)...].split(separator: " ").first
    return state == "Z" || state == "X"
}

/// SIGTERM, then SIGKILL after `grace` seconds; returns once it ended (or
/// after 10 s more), never blocking forever.
func stopProcess(_ process: Process, grace: Double) {
    guard !hasExited(process) else { return }
    process.terminate()
    let deadline = Date().addingTimeInterval(grace)
    while !hasExited(process) && Date() < deadline { usleep(10_000) }
    if !hasExited(process) { killProcess(process) }
}

/// SIGKILL, then waits (at most 10 s) until it ended.
func killProcess(_ process: Process) {
    guard !hasExited(process) else { return }
    kill(process.processIdentifier, SIGKILL)
    let deadline = Date().addingTimeInterval(10)
    while !hasExited(process) && Date() < deadline { usleep(5_000) }
}

/// Spawns `process` with the environment given explicitly (a copy of this
/// process's when it has none) and one spawn at a time in the test process:
/// Foundation's `Process.run()` crashed once in CI (a bad read inside it)
/// while live tests spawned servers from several tasks at once.
func spawn(_ process: Process) throws {
    if process.environment == nil { process.environment = ProcessInfo.processInfo.environment }
    try spawnLock.withLock { _ in try process.run() }
}

private let spawnLock = Mutex(())

/// Starts a command and does not wait for it (cleanups: pkill, pg_ctl stop).
@discardableResult
func spawnDetached(_ path: String, _ arguments: [String]) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    try spawn(process)
    return process
}
