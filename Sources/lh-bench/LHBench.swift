import ArgumentParser
import Foundation
import LHClient
import LHProto
import LHWorker
import LHWorkflow
import NIOConcurrencyHelpers
import SwiftProtobuf

/// `lh-bench SCENARIO`: starts an lh-server (TLS, durable store as shipped) on
/// a temporary data directory and its own worker processes, drives a load,
/// and prints a table and one JSON line of results.
@main
struct LHBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lh-bench",
        abstract: "Measures lh-server: throughput, latency, interrupts, halting and memory.",
        discussion: """
            Build and run in release mode: swift run -c release lh-bench throughput
            Figures go to stdout (a table, then one JSON line); progress to stderr.
            """,
        subcommands: [
            Throughput.self, Latency.self, Interrupts.self, Halt.self, Memory.self, DashboardBench.self, Chaos.self,
            Failover.self,
            WorkerCommand.self, ChaosWorkerCommand.self,
        ]
    )
}

/// Options every scenario takes.
struct CommonOptions: ParsableArguments {
    @Option(help: "Use a running server at HOST:PORT instead of starting one (memory's restart needs its own).")
    var server: String?

    @Option(help: "CA certificate of --server.")
    var ca: String?

    @Option(help: "Worker processes to start.")
    var workers: Int = 2

    @Option(help: "Tasks each worker process runs at once (LHW_NUM_WORKER_THREADS).")
    var capacity: Int = 512

    @Option(
        help: ArgumentHelp(
            "Extra arguments for the started lh-server.",
            discussion: "Give them with =, e.g. --server-args=\"--sync normal\"."))
    var serverArgs: String = ""

    @Flag(help: "Keep the temporary directory (data, server and worker logs).")
    var keep = false

    @Option(
        help:
            "Store of the started lh-server: sqlite (default), postgres (a PostgreSQL of its own, started with scripts/postgres.sh from the repository's root; its CPU and WAL are measured) or a postgres:// URL."
    )
    var store: String = "sqlite"

    @Option(
        help:
            "lh-servers on the PostgreSQL of --store (each owns a fair share of the partitions; the driver's requests go to them in turn, the workers connect to every one)."
    )
    var servers: Int = 1

    @Option(
        help: "Label for the JSON line's commit field (default: git rev-parse --short HEAD of the current directory).")
    var commit: String?

    func validate() throws {
        guard workers >= 1 else { throw ValidationError("--workers must be at least 1, got \(workers)") }
        guard capacity >= 1 else { throw ValidationError("--capacity must be at least 1, got \(capacity)") }
        if ca != nil && server == nil { throw ValidationError("--ca only goes with --server") }
        guard store == "sqlite" || store == "postgres" || store.hasPrefix("postgres://") else {
            throw ValidationError("--store must be sqlite, postgres or a postgres:// URL, got '\(store)'")
        }
        if store != "sqlite" && server != nil { throw ValidationError("--store only goes with a started server") }
        guard servers >= 1 else { throw ValidationError("--servers must be at least 1, got \(servers)") }
        if servers > 1 && store == "sqlite" {
            throw ValidationError("--servers \(servers) needs --store postgres (SQLite is one server's)")
        }
    }
}

/// What a scenario runs with: the server, the workers and a client.
final class Bench: @unchecked Sendable {
    let server: BenchServer
    /// Every started server (the first is `server`): a cluster with --servers.
    let servers: [BenchServer]
    let workers: BenchWorkers
    let client: LittleHorseClient
    /// One client per server: RunWf goes to them in turn.
    let clients: [LittleHorseClient]
    private let turn = NIOLockedValueBox(0)
    let workDir: URL
    let options: CommonOptions
    /// The PostgreSQL of `--store postgres` (nil on SQLite).
    let database: BenchDatabase?
    let startupSeconds: Double
    /// The started server's malloc (nil for --server).
    let serverAllocator: String?

    private init(
        servers: [BenchServer], workers: BenchWorkers, clients: [LittleHorseClient], workDir: URL,
        options: CommonOptions, startup: Double, database: BenchDatabase?
    ) {
        self.database = database
        self.server = servers[0]
        self.servers = servers
        self.workers = workers
        self.client = clients[0]
        self.clients = clients
        self.workDir = workDir
        self.options = options
        self.startupSeconds = startup
        serverAllocator = servers[0].pid.map { allocator(pid: $0) }
    }

    /// Starts everything, runs `body`, and stops everything on every path.
    static func run(
        _ options: CommonOptions, tasks: [String], holdMs: Int = 200,
        _ body: (Bench) async throws -> Results
    ) async throws {
        installSignalCleanup()
        let workDir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "lh-bench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: workDir, withIntermediateDirectories: true)
        var server: BenchServer?
        var others: [BenchServer] = []
        var workers: BenchWorkers?
        var clients: [LittleHorseClient] = []
        var database: BenchDatabase?
        func cleanup() async {
            for c in clients { await c.close() }
            await workers?.stop()
            for s in others { _ = await s.stop() }
            _ = await server?.stop()
            database?.stop()
            if options.keep {
                say("kept \(workDir.path)")
            } else {
                try? FileManager.default.removeItem(at: workDir)
            }
        }
        do {
            var startup = 0.0
            if let address = options.server {
                server = try BenchServer(existing: address, caPath: options.ca, workDir: workDir)
            } else {
                var args = options.serverArgs.split(separator: " ").map(String.init)
                if options.store != "sqlite" {
                    database = try BenchDatabase.open(options.store, workDir: workDir)
                    args += ["--store", database!.url]
                }
                if options.servers > 1 {
                    args += ["--dev-ca-dir", workDir.appendingPathComponent("ca").path, "--http-listen", "off"]
                }
                let (s, seconds) = try await BenchServer.start(
                    binDir: executableDirectory(), workDir: workDir, arguments: args)
                server = s
                startup = seconds
                say("lh-server pid \(s.pid ?? 0) on 127.0.0.1:\(s.port), data in \(workDir.path)/data")
                for i in 1..<options.servers {
                    let dir = workDir.appendingPathComponent("server-\(i)")
                    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
                    let (o, _) = try await BenchServer.start(
                        binDir: executableDirectory(), workDir: dir, arguments: args)
                    others.append(o)
                    say("lh-server pid \(o.pid ?? 0) on 127.0.0.1:\(o.port) (member \(i + 1) of \(options.servers))")
                }
                if let database, options.servers > 1 {
                    try await database.waitForShares(members: options.servers)
                    say("\(options.servers) servers own their shares of the partitions")
                }
            }
            for s in [server!] + others {
                clients.append(try await LittleHorseClient.connect(s.config(clientId: "lh-bench")))
            }
            workers = try await BenchWorkers(
                count: options.workers, tasks: tasks, capacity: options.capacity, holdMs: holdMs, server: server!)
            let bench = Bench(
                servers: [server!] + others, workers: workers!, clients: clients, workDir: workDir, options: options,
                startup: startup, database: database)
            let ticksBefore = machineCPUTicks()
            var results = try await body(bench)
            let ticksAfter = machineCPUTicks()
            if ticksAfter.total > ticksBefore.total {
                // This machine is a VM: what its neighbours took is part of the figures.
                let steal = 100 * (ticksAfter.steal - ticksBefore.steal) / (ticksAfter.total - ticksBefore.total)
                results.add(
                    "CPU stolen (whole run)", String(format: "%.1f %%", steal), key: "cpu_steal_percent", round3(steal))
            }
            await cleanup()
            results.print(extra: bench.environmentFields())
        } catch {
            if let log = server?.child?.logTail, !log.isEmpty { say("lh-server's last log lines:\n\(log)") }
            await cleanup()
            throw error
        }
    }

    func environmentFields() -> [String: Any] {
        var fields: [String: Any] = [
            "cores": ProcessInfo.processInfo.activeProcessorCount,
            "worker_processes": options.workers,
            "worker_capacity": options.capacity,
            "date": ISO8601DateFormatter().string(from: Date()),
        ]
        if !options.serverArgs.isEmpty { fields["server_args"] = options.serverArgs }
        fields["servers"] = servers.count
        fields["store"] = options.store.hasPrefix("postgres") ? "postgres" : "sqlite"
        if let serverAllocator { fields["server_allocator"] = serverAllocator }
        fields["commit"] = options.commit ?? gitCommit() ?? "unknown"
        #if DEBUG
            fields["build"] = "debug"
        #else
            fields["build"] = "release"
        #endif
        return fields
    }

    /// Registers a WfSpec (and its ExternalEventDefs).
    func register(_ workflow: Workflow, events: [String] = []) async throws {
        for name in events { _ = try await client.putExternalEventDef(.with { $0.name = name }) }
        _ = try await workflow.register(client: client)
    }

    func runWf(_ spec: String, id: String) async throws {
        var request = Littlehorse_RunWfRequest()
        request.wfSpecName = spec
        request.id = id
        let client =
            clients.count == 1
            ? self.client
            : clients[
                turn.withLockedValue { t in
                    defer { t = (t + 1) % clients.count }
                    return t
                }]
        _ = try await client.runWf(request)
    }

    func poke(_ wfRunId: String, event: String, guid: String) async throws {
        var request = Littlehorse_PutExternalEventRequest()
        request.wfRunID.id = wfRunId
        request.externalEventDefID.name = event
        request.guid = guid
        request.content.int = 1
        _ = try await client.putExternalEvent(request)
    }

    /// Server CPU seconds so far (0 when the server is not ours).
    /// CPU seconds of every started server (a cluster's summed).
    var serverCPU: Double { servers.reduce(0) { $0 + ($1.pid.map { cpuSeconds(pid: $0) } ?? 0) } }

    /// Runs `count` operations with at most `inFlight` at once, showing progress;
    /// returns their failures.
    func concurrently(
        _ label: String, count: Int, inFlight: Int,
        _ op: @escaping @Sendable (Int) async throws -> Void
    ) async throws -> ErrorTally {
        let progress = Progress(label, total: Double(count), unit: "")
        let errors = ErrorTally()
        let done = NIOLockedValueBox(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            var running = 0
            for i in 0..<count {
                if running >= inFlight {
                    try await group.next()
                    running -= 1
                    progress.update(Double(done.withLockedValue { $0 }))
                }
                group.addTask {
                    do { try await op(i) } catch { errors.record(error) }
                    done.withLockedValue { $0 += 1 }
                }
                running += 1
            }
            try await group.waitForAll()
        }
        progress.done(errors.count > 0 ? "(\(errors.count) errors)" : "")
        return errors
    }

    /// Waits until the workers have reported `target` tasks.
    func waitForCompleted(_ target: Int, timeout: Double) async throws {
        let deadline = monoSeconds() + timeout
        while workers.completed < target {
            if monoSeconds() > deadline {
                throw BenchError("workers reported \(workers.completed) of \(target) tasks within \(Int(timeout)) s")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

func gitCommit() -> String? {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["git", "rev-parse", "--short", "HEAD"]
    let out = Pipe()
    process.standardOutput = out
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return nil }
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { return nil }
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        .trimmingCharacters(in: .whitespacesAndNewlines)
    return text.isEmpty ? nil : text
}

extension Google_Protobuf_Timestamp {
    var nanos64: Int64 { seconds * 1_000_000_000 + Int64(nanos) }
}
