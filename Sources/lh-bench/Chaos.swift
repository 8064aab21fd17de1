import ArgumentParser
import Foundation
import LHClient
import LHProto
import LHWorker
import LHWorkflow
import Logging
import NIOConcurrencyHelpers

/// `lh-bench chaos`: a canary. A mixed workload (tasks with retries, a
/// sleep, a child thread, an external event, interrupts, stop/resume),
/// driven with idempotent ids and guids, while the server is killed -9 at
/// random moments (and restarted on the same data) and now and then a
/// worker too. At the end it counts what must be zero: acknowledged WfRuns
/// or events lost, interrupt counts that disagree with the acknowledged
/// events, TaskRuns executed twice that no worker kill explains, and WfRuns
/// stuck past the deadline. Exit status 1 when any is not zero.
struct Chaos: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos",
        abstract:
            "Chaos canary: kill -9 the server (and workers) under a mixed workload; count lost, duplicated, stuck.")

    @Option(help: "Server kills (kill -9, then a restart on the same data directory).") var kills: Int = 100
    @Option(help: "Mean seconds between server kills (uniform between 0.3 s and twice this).") var interval: Double =
        1.5
    @Option(help: "Worker kills among them (a worker process killed -9 and started again).") var workerKills: Int = 5
    @Option(help: "Concurrent drivers (each runs one WfRun at a time to its end of driving).") var drivers: Int = 6
    @Option(help: "Seconds after the last kill within which every WfRun must complete.") var deadline: Double = 120
    @Option(help: "Seed of the random kill times (default: random).") var seed: UInt64?
    @Option(
        help: ArgumentHelp(
            "Extra arguments for lh-server.", discussion: "Give them with =, e.g. --server-args=\"--claim-grace 5\"."))
    var serverArgs: String = ""
    @Flag(help: "Keep the temporary directory (data, logs, the execution log).") var keep = false

    func validate() throws {
        guard kills >= 1, interval > 0.3, workerKills >= 0, workerKills <= kills, drivers >= 1 else {
            throw ValidationError("need --kills ≥ 1, --interval > 0.3, 0 ≤ --worker-kills ≤ --kills, --drivers ≥ 1")
        }
    }

    func run() async throws {
        installSignalCleanup()
        let seed = self.seed ?? UInt64.random(in: 1...UInt64(UInt32.max))
        var random = SplitMix(seed: seed)
        let workDir = FileManager.default.temporaryDirectory.appendingPathComponent("lh-chaos-\(seed)")
        try? FileManager.default.removeItem(at: workDir)
        try FileManager.default.createDirectory(at: workDir, withIntermediateDirectories: true)
        let executions = workDir.appendingPathComponent("executions.log").path
        FileManager.default.createFile(atPath: executions, contents: nil)
        say(
            "chaos: seed \(seed), \(kills) server kills every ~\(interval) s, \(workerKills) worker kills; in \(workDir.path)"
        )

        let (server, _) = try await BenchServer.start(
            binDir: executableDirectory(), workDir: workDir,
            arguments: serverArgs.split(separator: " ").map(String.init))
        let workers = ChaosWorkers(server: server, workDir: workDir, log: executions)
        defer {
            if !keep { try? FileManager.default.removeItem(at: workDir) }
        }
        do {
            try await workers.start(slot: 0)
            try await workers.start(slot: 1)
            let ledger = Ledger()
            let clients = ClientBox(server: server)
            try await ledger.acknowledged("register", clients) { client in
                for name in ["chaos-go", "chaos-ping"] {
                    _ = try await client.putExternalEventDef(.with { $0.name = name })
                }
                _ = try await client.putWfSpec(Self.workflow.compile())
            }

            // The drivers run until the killer is done.
            let killing = NIOLockedValueBox(true)
            let began = monoSeconds()
            let driving = Task {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for lane in 0..<drivers {
                        group.addTask {
                            var n = 0
                            while killing.withLockedValue({ $0 }) {
                                try await Self.drive(
                                    id: "chaos-\(seed)-\(lane)-\(n)", n: n, ledger: ledger, clients: clients)
                                n += 1
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            var workerKillAt = Set<Int>()
            while workerKillAt.count < workerKills { workerKillAt.insert(Int.random(in: 1...kills, using: &random)) }
            var restartSeconds: [Double] = []
            var killedPids: Set<Int32> = []
            for k in 1...kills {
                let wait = Double.random(in: 0.3...(2 * interval - 0.3), using: &random)
                try await Task.sleep(for: .milliseconds(Int(wait * 1000)))
                if let pid = server.pid {
                    kill(pid, SIGKILL)
                    await server.child?.waitForExit(timeout: 30)
                }
                ledger.killed(at: Date().timeIntervalSince1970)
                if workerKillAt.contains(k) {
                    let slot = Int.random(in: 0...1, using: &random)
                    if let pid = workers.kill(slot: slot) { killedPids.insert(pid) }
                }
                restartSeconds.append(try await server.restart())
                if workerKillAt.contains(k) {
                    for slot in 0...1 where !workers.isRunning(slot: slot) { try await workers.start(slot: slot) }
                }
                if k % 10 == 0 || k == kills {
                    say(
                        "chaos: \(k)/\(kills) kills, \(ledger.runCount) WfRuns and \(ledger.eventCount) events acknowledged, \(ledger.retries) requests retried"
                    )
                }
            }
            killing.withLockedValue { $0 = false }
            try await driving.value
            let killPhase = monoSeconds() - began
            say(
                "chaos: kills done after \(String(format: "%.0f", killPhase)) s; waiting up to \(deadline) s for every WfRun"
            )

            // Every acknowledged WfRun must complete by the deadline.
            let runs = ledger.runs
            let end = monoSeconds() + deadline
            var pending = Set(runs.keys)
            var lost = Set<String>()
            while !pending.isEmpty && monoSeconds() < end {
                for id in pending.sorted() {
                    do {
                        let status = try await ledger.acknowledged("get", clients) { try await $0.getWfRun(id).status }
                        if status == .completed { pending.remove(id) }
                    } catch let e as LHError where e.code == .notFound {
                        lost.insert(id)
                        pending.remove(id)
                    }
                }
                if !pending.isEmpty { try await Task.sleep(for: .milliseconds(500)) }
            }
            let stuck = pending
            // Events: each acknowledged one exists; each run's interrupt
            // count equals its acknowledged pings.
            var lostEvents = 0
            var wrongCounts: [String] = []
            for (id, run) in runs.sorted(by: { $0.key < $1.key }) where !lost.contains(id) {
                for (def, guid) in run.events {
                    do {
                        _ = try await ledger.acknowledged("get event", clients) { client in
                            try await client.getExternalEvent(
                                .with {
                                    $0.wfRunID.id = id; $0.externalEventDefID.name = def; $0.guid = guid
                                })
                        }
                    } catch let e as LHError where e.code == .notFound {
                        lostEvents += 1
                    }
                }
                let pings = run.events.filter { $0.0 == "chaos-ping" }.count
                let counted = try await ledger.acknowledged("get variable", clients) { client in
                    try await client.getVariable(
                        .with {
                            $0.wfRunID.id = id; $0.threadRunNumber = 0; $0.name = "pings"
                        }
                    ).value.int
                }
                if counted != Int64(pings) { wrongCounts.append("\(id): \(counted) interrupts for \(pings) pings") }
            }
            // Executions: a TaskRun whose task body completed more than once.
            let lines = ((try? String(contentsOfFile: executions, encoding: .utf8)) ?? "").split(separator: "\n")
            var done: [String: [(attempt: String, pid: Int32, t: Double)]] = [:]
            var starts: [String: [Double]] = [:]
            for line in lines {
                let f = line.split(separator: " ")
                guard f.count == 5, let pid = Int32(f[3]), let t = Double(f[4]) else { continue }
                if f[0] == "done" { done[String(f[1]), default: []].append((String(f[2]), pid, t)) }
                if f[0] == "start" { starts[String(f[1]), default: []].append(t) }
            }
            var twice = 0
            var explained = 0
            for (_, list) in done where list.count > 1 {
                // Explained: every completion but the last was by a worker
                // killed afterwards (its report may never have left it).
                if list.dropLast().allSatisfy({ killedPids.contains($0.pid) }) { explained += 1 } else { twice += 1 }
            }
            // Recovery: for each kill, the TaskRuns in flight at that moment
            // (started, not done) and when the last of them was done.
            var recovery: [Double] = []
            for kill in ledger.killTimes {
                var latest = 0.0
                for (key, ss) in starts {
                    let ds = done[key]?.map(\.t) ?? []
                    let inFlight = ss.contains { s in s < kill && !ds.contains { $0 >= s && $0 < kill } }
                    guard inFlight, let next = ds.filter({ $0 >= kill }).min() else { continue }
                    latest = max(latest, next - kill)
                }
                recovery.append(latest)
            }
            recovery.sort()
            let p50 = recovery.isEmpty ? 0 : recovery[recovery.count / 2]
            let worst = recovery.last ?? 0
            restartSeconds.sort()
            print(
                """
                chaos canary (seed \(seed)): \(kills) server kills (kill -9) and \(workerKillAt.count) worker kills in \(String(format: "%.0f", killPhase)) s
                  WfRuns acknowledged          \(runs.count)
                  events acknowledged          \(ledger.eventCount) (\(runs.values.map { $0.events.filter { $0.0 == "chaos-ping" }.count }.reduce(0, +)) interrupts)
                  requests retried             \(ledger.retries)
                  TaskRuns completed           \(done.count)
                  lost WfRuns                  \(lost.count)
                  lost events                  \(lostEvents)
                  interrupt counts wrong       \(wrongCounts.count)
                  TaskRuns executed twice      \(twice) (and \(explained) re-run after their worker was killed: at-least-once)
                  WfRuns stuck past \(Int(deadline)) s      \(stuck.count)
                  restart to listening         p50 \(String(format: "%.2f", restartSeconds[restartSeconds.count / 2])) s, max \(String(format: "%.2f", restartSeconds.last ?? 0)) s
                  kill to every TaskRun in flight at the kill done (re-run if lost)  p50 \(String(format: "%.2f", p50)) s, max \(String(format: "%.2f", worst)) s
                """)
            for w in wrongCounts.prefix(5) { print("  wrong: \(w)") }
            for s in stuck.sorted().prefix(5) { print("  stuck: \(s)") }
            for l in lost.sorted().prefix(5) { print("  lost: \(l)") }
            await clients.close()
            await workers.stopAll()
            _ = await server.stop()
            if !lost.isEmpty || lostEvents > 0 || !wrongCounts.isEmpty || twice > 0 || !stuck.isEmpty {
                if keep { say("chaos: kept \(workDir.path)") }
                throw ExitCode(1)
            }
        } catch {
            await workers.stopAll()
            _ = await server.stop()
            throw error
        }
    }

    static var workflow: Workflow {
        Workflow("chaos") { wf in
            let pings = wf.declare("pings", .int, default: .with { $0.int = 0 })
            let retry = TaskOptions(retries: 5, timeoutSeconds: 30)
            wf.execute("chaos-task", "a", options: retry)
            wf.sleepSeconds(1)
            let child = wf.spawnThread("child") { c in c.execute("chaos-task", "child", options: retry) }
            wf.waitForThreads(child)
            wf.waitForEvent("chaos-go")
            wf.execute("chaos-task", "b", options: retry)
            wf.registerInterruptHandler("chaos-ping") { h in
                _ = h.declareStr(WorkflowThread.handlerInputVar)
                h.mutate(pings, .add, 1)
            }
        }
    }

    /// One WfRun: run, two interrupts, a stop and resume (every third), the
    /// event it waits for. Every call is retried until acknowledged.
    static func drive(id: String, n: Int, ledger: Ledger, clients: ClientBox) async throws {
        try await ledger.acknowledged("run", clients) { client in
            do {
                _ = try await client.runWf(
                    .with {
                        $0.wfSpecName = "chaos"; $0.id = id
                    })
            } catch let e as LHError where e.code == .alreadyExists {}
        }
        ledger.ran(id)
        for (i, def) in ["chaos-ping", "chaos-ping", "chaos-go"].enumerated() {
            if i == 2 && n % 3 == 0 {
                try await ledger.acknowledged("stop", clients) { try await $0.stopWfRun(id) }
                try await Task.sleep(for: .milliseconds(50))
                try await ledger.acknowledged("resume", clients) { try await $0.resumeWfRun(id) }
            }
            let guid = "\(id)-\(i)"
            try await ledger.acknowledged("event", clients) { client in
                _ = try await client.putExternalEvent(
                    .with {
                        $0.wfRunID.id = id; $0.externalEventDefID.name = def; $0.guid = guid; $0.content.str = "\(i)"
                    })
            }
            ledger.posted(id, def, guid)
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

/// What the server acknowledged, and the kills.
final class Ledger: Sendable {
    struct Run { var events: [(String, String)] = [] }
    private struct State {
        var runs: [String: Run] = [:]
        var events = 0
        var retries = 0
        var kills: [Double] = []
    }
    private let state = NIOLockedValueBox(State())

    func ran(_ id: String) { state.withLockedValue { s in if s.runs[id] == nil { s.runs[id] = Run() } } }
    func posted(_ id: String, _ def: String, _ guid: String) {
        state.withLockedValue { s in
            s.runs[id, default: Run()].events.append((def, guid))
            s.events += 1
        }
    }
    func killed(at t: Double) { state.withLockedValue { $0.kills.append(t) } }
    var runs: [String: Run] { state.withLockedValue { $0.runs } }
    var runCount: Int { state.withLockedValue { $0.runs.count } }
    var eventCount: Int { state.withLockedValue { $0.events } }
    var retries: Int { state.withLockedValue { $0.retries } }
    var killTimes: [Double] { state.withLockedValue { $0.kills } }

    /// Runs `body` until the server acknowledges it: a lost connection or an
    /// UNAVAILABLE answer (the server was killed) is retried on a new
    /// connection for up to 120 s; other errors go to the caller.
    func acknowledged<T: Sendable>(
        _ what: String, _ clients: ClientBox, _ body: @Sendable (LittleHorseClient) async throws -> T
    ) async throws -> T {
        let giveUp = monoSeconds() + 120
        while true {
            do {
                return try await body(try await clients.get())
            } catch let e as LHError
                where e.code == .unavailable || e.code == .connectionClosed
            {
                guard monoSeconds() < giveUp else { throw BenchError("\(what): not acknowledged within 120 s: \(e)") }
                state.withLockedValue { $0.retries += 1 }
                await clients.reset()
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }
}

/// One client connection shared by the drivers, made again after a crash.
actor ClientBox {
    let server: BenchServer
    private var client: LittleHorseClient?
    init(server: BenchServer) { self.server = server }

    func get() async throws -> LittleHorseClient {
        if let client { return client }
        var logger = Logger(label: "lh-bench.chaos")
        logger.logLevel = .critical
        let c = try await LittleHorseClient.connect(server.config(clientId: "chaos-driver"), logger: logger)
        client = c
        return c
    }

    func reset() async {
        if let client { await client.close() }
        client = nil
    }

    func close() async { await reset() }
}

/// The chaos workers: `lh-bench chaos-worker` processes, one per slot, each
/// with its slot's worker id.
final class ChaosWorkers: @unchecked Sendable {
    let server: BenchServer
    let workDir: URL
    let log: String
    private let children = NIOLockedValueBox<[Int: Child]>([:])

    init(server: BenchServer, workDir: URL, log: String) {
        self.server = server
        self.workDir = workDir
        self.log = log
    }

    func start(slot: Int) async throws {
        let ready = NIOLockedValueBox(false)
        let child = try Child(
            name: "chaos-worker-\(slot)", executable: executableDirectory().appendingPathComponent("lh-bench"),
            arguments: ["chaos-worker", "--log", log],
            environment: server.workerEnvironment(capacity: 8, workerId: "chaos-worker-\(slot)"),
            logPath: workDir.appendingPathComponent("worker-\(slot).log").path
        ) { line in if line == "ready" { ready.withLockedValue { $0 = true } } }
        children.withLockedValue { $0[slot] = child }
        let deadline = monoSeconds() + 60
        while !ready.withLockedValue({ $0 }) {
            guard monoSeconds() < deadline, child.isRunning else {
                throw BenchError("chaos worker \(slot) did not start:\n\(child.logTail)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    func isRunning(slot: Int) -> Bool { children.withLockedValue { $0[slot]?.isRunning ?? false } }

    /// kill -9 of a slot's worker; its pid.
    func kill(slot: Int) -> Int32? {
        guard let child = children.withLockedValue({ $0[slot] }), child.isRunning else { return nil }
        Foundation.kill(child.pid, SIGKILL)
        child.process.waitUntilExit()
        return child.pid
    }

    func stopAll() async {
        for child in children.withLockedValue({ Array($0.values) }) { await child.stop() }
    }
}

/// `lh-bench chaos-worker`: the canary's worker. Serves `chaos-task`
/// (sleeps 0–200 ms, echoes its input) and appends `start`/`done` lines
/// (`KEY ATTEMPT PID UNIX_SECONDS`) to the execution log, one write(2) each
/// (O_APPEND: whole lines, also from several processes).
struct ChaosWorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos-worker", abstract: "The chaos canary's task worker (started by chaos).",
        shouldDisplay: false)

    @Option(help: "The execution log to append to.") var log: String

    func run() async throws {
        let fd = open(log, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard fd >= 0 else { throw BenchError("cannot open \(log)") }
        let pid = getpid()
        @Sendable func record(_ what: String, _ context: WorkerContext) {
            let line =
                "\(what) \(context.idempotencyKey) \(context.attemptNumber) \(pid) \(Date().timeIntervalSince1970)\n"
            _ = line.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
        }
        let config = try LHConfig.fromEnvironment()
        let worker = LHTaskWorker(config: config, taskDefName: "chaos-task", inputs: ["input"]) {
            (context: WorkerContext, input: String) async throws -> String in
            record("start", context)
            try await Task.sleep(for: .milliseconds(Int.random(in: 0...200)))
            record("done", context)
            return input
        }
        try await worker.registerTaskDef()
        emit("ready")
        try await worker.run()
    }
}

/// A small seeded generator (SplitMix64): the kill times of a seed repeat.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
