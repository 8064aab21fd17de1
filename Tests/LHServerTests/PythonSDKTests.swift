import Foundation
import LHClient
import LHPostgresStore
import LHTestKit
import LHWire
import LHWorkflow
import Testing

/// LittleHorse's own Python SDK (PyPI littlehorse-client 1.3.0, installed by
/// scripts/python-sdk.sh) against the gRPC front of a real server, TLS with
/// its development CA: the SDK's task workers in a process of their own, a
/// Swift worker of our protocol beside them on one TaskDef, and the SDK's
/// stub driving WfRuns with interrupts and a stop while a Python worker holds
/// a task (Tests/grpc/python_sdk_test.py says what is checked).
@Suite(.timeLimit(.minutes(5))) struct PythonSDKTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The virtualenv's python; nil (the reason printed: the test is skipped)
    /// only when the SDK cannot be installed.
    static func pythonOrSkip() throws -> String? {
        let (python, reason) = try Self.python()
        if python == nil { print("SKIPPED PythonSDKTests: \(reason)") }
        return python
    }

    /// LittleHorse's LHC_* settings for the gRPC front of `server` at `grpcPort`.
    static func environment(_ server: some LiveServer, grpcPort: Int, _ extra: [String: String] = [:]) -> [String:
        String]
    {
        [
            "LHC_API_HOST": "localhost", "LHC_API_PORT": "\(grpcPort)", "LHC_API_PROTOCOL": "TLS",
            "LHC_CA_CERT": server.caPath ?? "", "HOME": server.dataDir.path, "PYTHONUNBUFFERED": "1",
        ].merging(extra) { _, b in b }
    }

    /// The virtualenv's python, or nil with the reason it could not be had.
    static func python() throws -> (String?, String) {
        let process = Process()
        process.executableURL = root.appendingPathComponent("scripts/python-sdk.sh")
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try spawn(process)
        let path = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let reason = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let python = path.trimmingCharacters(in: .whitespacesAndNewlines)
        return (process.terminationStatus == 0 && !python.isEmpty ? python : nil, reason)
    }

    @Test func littleHorsesPythonSDKAndItsWorkersRunAgainstTheGRPCFrontBesideASwiftWorker() async throws {
        guard let python = try Self.pythonOrSkip() else { return }
        let gates = try ServerProcess.temporaryDirectory("python-gates")
        // The lh-server binary, as a LittleHorse user runs it.
        let grpcPort = try ServerProcess.freePort()
        try await withServer(arguments: ["--grpc-listen", "127.0.0.1:\(grpcPort)"]) { server in
            let environment = Self.environment(
                server, grpcPort: grpcPort, ["LHW_TASK_WORKER_ID": "py-worker-1", "HOLD_GATE_DIR": gates.path])
            // A Swift worker of our protocol registers and serves "mixed"; the
            // Python SDK's workers (greet, hold, mixed) run in their own process.
            let swift = try await server.startWorker(
                "lh-test-worker", ["mixed:echo"], environment: ["LHW_TASK_WORKER_ID": "swift-worker-1"],
                ready: "test worker ready")
            let workers = try LiveProcess(
                python, [Self.script("python_sdk_worker.py")], environment: environment, absolutePath: true)
            try await withProcesses([swift, workers]) {
                try await workers.waitFor("python workers ready")
                let driver = try LiveProcess(
                    python, [Self.script("python_sdk_test.py")], environment: environment, absolutePath: true)
                try await withProcesses([driver]) {
                    try await eventually("the Python SDK's checks end", timeout: 240) { !driver.process.isRunning }
                    let output = driver.stdout.withLockedValue { $0 }
                    let errors = driver.stderr.withLockedValue { $0 }
                    print(output)
                    #expect(
                        driver.process.terminationStatus == 0,
                        "python_sdk_test.py: \(output)\n\(errors.suffix(4000))\nworkers: \(workers.stderr.withLockedValue { $0.suffix(4000) })"
                    )
                    #expect(output.contains("python sdk: all checks passed"), "\(output)")
                }
            }
        }
    }

    /// With --client-ca the gRPC front is mutual TLS too: the SDK without a
    /// client certificate is refused at the handshake, with one it is served.
    @Test func mutualTLSOnTheGRPCFrontRefusesAClientWithoutACertificate() async throws {
        guard let python = try Self.pythonOrSkip() else { return }
        let dir = try ServerProcess.temporaryDirectory("grpc-mtls")
        let clientCA = try DevCertificateAuthority.makeCA(commonName: "client CA")
        let clientCAPath = dir.appendingPathComponent("client-ca.pem").path
        try clientCA.certificatePEM.write(toFile: clientCAPath, atomically: true, encoding: .utf8)
        let leaf = try DevCertificateAuthority.issue(commonName: "py-client", usages: [.clientAuth], by: clientCA)
        let (certPath, keyPath) = (
            dir.appendingPathComponent("py.pem").path, dir.appendingPathComponent("py-key.pem").path
        )
        try leaf.certificatePEM.write(toFile: certPath, atomically: true, encoding: .utf8)
        try leaf.keyPEM.write(toFile: keyPath, atomically: true, encoding: .utf8)
        try await TestServer.with(configure: { $0.clientCAPath = clientCAPath }, grpc: true) { server in
            let grpcPort = try #require(server.grpcPort)
            let call = """
                from littlehorse.config import LHConfig
                from google.protobuf.empty_pb2 import Empty
                import grpc
                try:
                    print("version", LHConfig().stub().GetServerVersion(Empty(), timeout=10).minor_version)
                except grpc.RpcError as e:
                    print("refused", e.code().name)
                """
            var environment = Self.environment(server, grpcPort: grpcPort)
            for withCertificate in [false, true] {
                if withCertificate {
                    (environment["LHC_CLIENT_CERT"], environment["LHC_CLIENT_KEY"]) = (certPath, keyPath)
                }
                let client = try LiveProcess(python, ["-c", call], environment: environment, absolutePath: true)
                try await withProcesses([client]) {
                    try await eventually("the call ends", timeout: 60) { !client.process.isRunning }
                    let out = client.stdout.withLockedValue { $0 }
                    if withCertificate {
                        #expect(
                            out.contains("version "),
                            "with a client certificate: \(out) \(client.stderr.withLockedValue { $0 })")
                    } else {
                        #expect(out.contains("refused UNAVAILABLE"), "without a client certificate: \(out)")
                    }
                }
            }
        }
    }

    /// Seed 003's walkthrough with the Python client instead of lhctl: the
    /// Swift example's WfSpec and workers on our protocol, the WfRun driven
    /// through the gRPC front; `get variable` gives the seed's JSON.
    @Test func seedWalkthroughWithThePythonClientGivesTheSeedsVariable() async throws {
        guard let python = try Self.pythonOrSkip() else { return }
        try await TestServer.with(grpc: true) { server in
            let grpcPort = try #require(server.grpcPort)
            let worker = try await server.startWorker("collect-underpants-worker", [], ready: "workers ready")
            try await withProcesses([worker]) {
                let register = try await server.command("collect-underpants-register", [])
                #expect(register.status == 0, "register: \(register.stderr)")
                let walkthrough = try LiveProcess(
                    python, [Self.script("python_seed_walkthrough.py")],
                    environment: Self.environment(server, grpcPort: grpcPort), absolutePath: true)
                try await withProcesses([walkthrough]) {
                    try await eventually("the walkthrough ends", timeout: 120) { !walkthrough.process.isRunning }
                    let output = walkthrough.stdout.withLockedValue { $0 }
                    #expect(
                        walkthrough.process.terminationStatus == 0,
                        "\(output)\n\(walkthrough.stderr.withLockedValue { $0.suffix(4000) })")
                    #expect(output.contains("seed walkthrough: done"), "\(output)")
                    let printed =
                        output.components(separatedBy: "BEGIN VARIABLE\n").last?
                        .components(separatedBy: "END VARIABLE").first ?? ""
                    // The same JSON as the seed's (Python's printer puts the fields it
                    // fills in at their defaults last: compared as JSON, not as text).
                    func json(_ text: String) throws -> NSDictionary? {
                        try JSONSerialization.jsonObject(with: Data(text.utf8)) as? NSDictionary
                    }
                    let seed = try json(SeedWalkthroughTests.seedsVariable)
                    #expect(seed != nil)
                    #expect(
                        try json(SeedWalkthroughTests.withoutCreatedAt(printed)) == seed,
                        "the Python client printed:\n\(printed)")
                }
            }
        }
    }

    /// kill -9 of the server (the binary, with --grpc-listen) while a Python
    /// worker holds a task and another WfRun is done: after the restart on the
    /// same data directory nothing is lost, the held task's report lands (the
    /// SDK retries it), and the worker polls again (at its next heartbeat).
    @Test(.timeLimit(.minutes(4))) func aPythonWorkerOutlivesAKillMinus9OfTheServer() async throws {
        guard let python = try Self.pythonOrSkip() else { return }
        let dir = try ServerProcess.temporaryDirectory("lh-python-kill9")
        let gates = try ServerProcess.temporaryDirectory("python-gates")
        let (port, grpcPort) = (try ServerProcess.freePort(), try ServerProcess.freePort())
        let arguments = ["--grpc-listen", "127.0.0.1:\(grpcPort)"]
        var server = try await ServerProcess.start(arguments: arguments, dataDir: dir, port: port)
        defer { server.stop() }
        let environment = Self.environment(
            server, grpcPort: grpcPort,
            ["LHW_TASK_WORKER_ID": "py-worker-1", "HOLD_GATE_DIR": gates.path, "PYTHON_TASKS": "greet,hold"])
        let workers = try LiveProcess(
            python, [Self.script("python_sdk_worker.py")], environment: environment, absolutePath: true)
        try await withProcesses([workers]) {
            try await workers.waitFor("python workers ready")
            let client = try await server.client()
            let greeting = Workflow("py-greet") { $0.execute("greet", $0.declareStr("name")) }
            let holding = Workflow("py-hold") { $0.execute("hold", $0.declareStr("name")) }
            try await eventually("the Python worker's TaskDefs") {
                let greet = try? await client.getTaskDef("greet")
                let hold = try? await client.getTaskDef("hold")
                return greet != nil && hold != nil
            }
            for wf in [greeting, holding] { _ = try await client.putWfSpec(wf.compile()) }
            func run(_ spec: String, _ id: String, on client: LittleHorseClient) async throws {
                _ = try await client.runWf(
                    .with {
                        $0.wfSpecName = spec
                        $0.id = id
                        $0.variables["name"] = .with { $0.str = id }
                    })
            }
            try await run("py-greet", "before", on: client)
            try await eventually("before COMPLETED") { try await client.getWfRun("before").status == .completed }
            try await run("py-hold", "held", on: client)
            try await workers.waitFor("hold: held waiting")
            await client.close()

            server.kill9()
            server = try await ServerProcess.start(arguments: arguments, dataDir: dir, port: port)
            // The worker finishes the task it held across the kill; its report lands.
            #expect(FileManager.default.createFile(atPath: gates.appendingPathComponent("held").path, contents: Data()))
            let after = try await server.client()
            try await eventually("held COMPLETED with the report made across the restart", timeout: 60) {
                try await after.getWfRun("held").status == .completed
            }
            #expect(try await after.listTaskRuns("held").results.first?.attempts.count == 1, "not retried: reported")
            #expect(try await after.getWfRun("before").status == .completed, "acknowledged before the kill")
            try await run("py-greet", "after", on: after)
            try await eventually("after COMPLETED: the worker polls again", timeout: 100) {
                try await after.getWfRun("after").status == .completed
            }
            let output = try await after.listTaskRuns("after").results.first?.attempts.last?.output.str
            #expect(output == "hello after")
            await after.close()
        }
    }

    /// LittleHorse's Python worker pointed at one server of a two-server
    /// cluster (PostgreSQL, fair shares): RegisterTaskWorker names both
    /// servers' gRPC addresses, the SDK polls each, and WfRuns of both
    /// servers' partitions complete.
    @Test(.timeLimit(.minutes(4))) func aPythonWorkerOfOneAddressServesEveryServerOfACluster() async throws {
        guard let python = try Self.pythonOrSkip() else { return }
        guard let store = try PostgresFailoverTests.database() else { return }
        let ca = try ServerProcess.temporaryDirectory("lh-py-cluster-ca")
        let grpcPorts = [try ServerProcess.freePort(), try ServerProcess.freePort()]
        var servers: [ServerProcess] = []
        defer { for s in servers { s.stop() } }
        for port in grpcPorts {
            servers.append(
                try await ServerProcess.start(
                    arguments: PostgresFailoverTests.member(store, ca: ca) + [
                        "--grpc-listen", "127.0.0.1:\(port)", "--http-listen", "off",
                    ]))
        }
        try await ClusterInterruptLiveTests.waitForShares(servers, partitions: 16)
        let environment = Self.environment(
            servers[0], grpcPort: grpcPorts[0], ["LHW_TASK_WORKER_ID": "py-cluster-worker", "PYTHON_TASKS": "greet"])
        let workers = try LiveProcess(
            python, [Self.script("python_sdk_worker.py")], environment: environment, absolutePath: true)
        try await withProcesses([workers]) {
            try await workers.waitFor("python workers ready")
            let client = try await servers[1].client()
            defer { Task { await client.close() } }
            let greeting = Workflow("py-greet") { $0.execute("greet", $0.declareStr("name")) }
            try await eventually("the Python worker's TaskDef") { (try? await client.getTaskDef("greet")) != nil }
            // Forwarded to the owner of the metadata or the WfRun: under a
            // loaded CI the peer link may time out, and the client retries.
            try await retryingUnavailable("PutWfSpec") { _ = try await client.putWfSpec(greeting.compile()) }
            // Ids of both servers' partitions (the first kept the lowest 8).
            let ids = (0..<12).map { "py-\($0)" }
            let lows = ids.filter { PostgresStore.partition(of: $0, count: 16) < 8 }
            #expect(!lows.isEmpty && lows.count < ids.count, "ids of both servers' partitions")
            for id in ids {
                try await retryingUnavailable("RunWf \(id)") {
                    _ = try await client.runWf(
                        .with {
                            $0.wfSpecName = "py-greet"; $0.id = id; $0.variables["name"] = .with { $0.str = id }
                        })
                }
            }
            try await eventually("every WfRun COMPLETED through the one Python worker", timeout: 60) {
                for id in ids where try await client.getWfRun(id).status != .completed { return false }
                return true
            }
            for id in ids {
                let output = try await client.listTaskRuns(id).results.first?.attempts.last?.output.str
                #expect(output == "hello \(id)")
            }
        }
    }

    static func script(_ name: String) -> String { root.appendingPathComponent("Tests/grpc/\(name)").path }
}
