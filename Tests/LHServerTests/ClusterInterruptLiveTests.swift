import Foundation
import LHClient
import LHPostgresStore
import LHWire
import LHWorkflow
import Testing

/// The interrupt and halting rules on three servers on one PostgreSQL (each
/// owning a share of the partitions), with the owner of the WfRun's
/// partition killed (-9) while the TaskRun is in the worker's hands: the
/// report reaches the server that took the partition over, and the rules
/// hold there — the thread stays HALTING until that report, the handler
/// starts only after it.
@Suite(.serialized, .timeLimit(.minutes(4))) struct ClusterInterruptLiveTests {
    /// Three servers, each with its share of the partitions, and a test
    /// worker given the first one's address only; `body` gets the first server, a client of
    /// the cluster, the gate directory, the slots and the database (to find
    /// and kill a WfRun's owner).
    func cluster(
        tasks: [String], events: [String], workflow: Workflow,
        _ body: (ServerProcess, LittleHorseClient, URL, [PostgresChaosTests.Slot], String) async throws -> Void
    ) async throws {
        try await Self.withSlots(3, "lh-cluster") { store, arguments, slots in
            try await cluster(
                tasks: tasks, events: events, workflow: workflow, store: store, arguments: arguments, slots: slots, body
            )
        }
    }

    /// `count` server slots for one fresh database (each slot's server
    /// started by `body`, with `arguments`: a shared development CA, lease
    /// 2 s, 16 partitions); every slot's server is killed when `body` ends,
    /// however it ends. Nothing runs without a PostgreSQL of the tests.
    static func withSlots(
        _ count: Int, _ name: String, _ body: (String, [String], [PostgresChaosTests.Slot]) async throws -> Void
    ) async throws {
        guard let store = try PostgresFailoverTests.database() else { return }
        let ca = try ServerProcess.temporaryDirectory("\(name)-ca")
        let base = try ServerProcess.temporaryDirectory(name)
        let arguments = PostgresFailoverTests.member(store, ca: ca) + ["--http-listen", "off"]
        let slots = try (0..<count).map {
            PostgresChaosTests.Slot(
                index: $0, port: try ServerProcess.freePort(), dataDir: base.appendingPathComponent("server-\($0)"))
        }
        defer {
            for s in slots {
                _ = try? spawnDetached("/usr/bin/pkill", ["-9", "-f", "--", "--data-dir \(s.dataDir.path) "])
            }
        }
        try await body(store, arguments, slots)
    }

    private func cluster(
        tasks: [String], events: [String], workflow: Workflow, store: String, arguments: [String],
        slots: [PostgresChaosTests.Slot],
        _ body: (ServerProcess, LittleHorseClient, URL, [PostgresChaosTests.Slot], String) async throws -> Void
    ) async throws {
        let gates = try ServerProcess.temporaryDirectory("gates")
        let owner = try await slots[0].launch(arguments).value
        var servers = [owner]
        for s in slots.dropFirst() { servers.append(try await s.launch(arguments).value) }
        try await Self.waitForShares(servers, partitions: 16)
        let endpoints = slots.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
        // The worker knows one address (the first server's) and learns the
        // others from it: the server killed below may be that one.
        let worker = try await owner.startWorker(
            "lh-test-worker", tasks,
            environment: ["LH_TEST_GATE_DIR": gates.path, "LHC_API_HOST": "127.0.0.1:\(slots[0].port)"],
            ready: "test worker ready")
        defer { worker.stop() }
        var config = owner.config()
        config.apiHost = endpoints
        let client = try await LittleHorseClient.connect(config)
        for e in events { _ = try await client.putExternalEventDef(.with { $0.name = e }) }
        _ = try await client.putWfSpec(workflow.compile())
        await client.close()
        try await body(owner, try await LittleHorseClient.connect(config), gates, slots, store)
    }

    /// Waits until the servers' shares add up to every partition, none
    /// without a share (the last joined took its share from the others).
    static func waitForShares(_ servers: [ServerProcess], partitions: Int, timeout: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let counts = servers.map { s -> Int in
                let line = s.ownership
                if line.contains("owns every partition") { return partitions }
                guard let range = line.range(of: "owns "), let n = Int(line[range.upperBound...].prefix { $0.isNumber })
                else { return 0 }
                return n
            }
            if counts.reduce(0, +) == partitions && !counts.contains(0) { return }
            if Date() > deadline {
                throw LHError(.unavailable, "shares \(counts) never added up to \(partitions) partitions")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// The slot whose server owns `wfRunId`'s partition (16 partitions).
    static func ownerSlot(of wfRunId: String, store: String, slots: [PostgresChaosTests.Slot]) async throws
        -> PostgresChaosTests.Slot
    {
        let p = PostgresStore.partition(of: wfRunId, count: 16)
        let address = try await PostgresFailoverTests.psql(
            store, "SELECT m.address FROM lh_partitions l JOIN lh_members m ON m.id = l.owner WHERE l.p = \(p)")
        guard let slot = slots.first(where: { "127.0.0.1:\($0.port)" == address }) else {
            throw LHError(.notFound, "no server of the test owns partition \(p) (owner at '\(address)')")
        }
        return slot
    }

    /// Calls `body` with a fresh client of the cluster until the cluster
    /// answers (a failover in between gives UNAVAILABLE or a closed connection).
    func onCluster<T>(_ config: LHConfig, _ body: (LittleHorseClient) async throws -> T) async throws -> T {
        var retries = 0
        var result: T?
        try await PostgresFailoverTests.retrying(config, retries: &retries) { client in result = try await body(client)
        }
        return result!
    }

    @Test func anInterruptWhileTheTaskIsInFlightWaitsForItsReportAtTheServerThatTookOver() async throws {
        let wf = Workflow("in-flight") { wf in
            let note = wf.declareStr("note")
            wf.execute("slow-step", note, options: TaskOptions(retries: 0, timeoutSeconds: 60))
            wf.execute("read-note", note)
            wf.registerInterruptHandler("update-note") { h in
                let input = h.declareStr(WorkflowThread.handlerInputVar)
                h.mutate(note, .assign, input)
            }
        }
        try await cluster(tasks: ["slow-step:gate", "read-note:echo"], events: ["update-note"], workflow: wf) {
            owner, client, gates, slots, store in
            var config = owner.config()
            config.apiHost = slots.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
            _ = try await client.runWf(
                .with {
                    $0.wfSpecName = "in-flight"; $0.id = "wf-c"; $0.variables["note"] = .with { $0.str = "before" }
                })
            try await eventually("slow-step is in the worker's hands") {
                try await client.listTaskRuns("wf-c").results.first?.status == .taskRunning
            }
            _ = try await client.putExternalEvent(
                .with {
                    $0.wfRunID.id = "wf-c"; $0.externalEventDefID.name = "update-note"; $0.content.str = "after"
                })
            #expect(try await client.getWfRun("wf-c").threadRuns[0].status == .halting)
            await client.close()

            let victim = try await Self.ownerSlot(of: "wf-c", store: store, slots: slots)
            progress("cluster interrupt test: kill -9 of wf-c's owner (server-\(victim.index)) with the task in flight")
            await victim.kill9()
            // The server that took over keeps the thread HALTING: the attempt is
            // still in the worker's hands (it claims it on its new connection).
            try await Task.sleep(for: .seconds(5))
            let during = try await onCluster(config) { try await $0.getWfRun("wf-c") }
            #expect(during.threadRuns[0].status == .halting, "HALTING at the new owner until the report")
            #expect(during.threadRuns.count == 1, "no handler before the report")
            let tasks = try await onCluster(config) { try await $0.listTaskRuns("wf-c").results }
            #expect(tasks.first?.status == .taskRunning && tasks.first?.attempts.count == 1, "the same attempt")

            #expect(FileManager.default.createFile(atPath: gates.appendingPathComponent("wf-c").path, contents: Data()))
            try await eventually("wf-c COMPLETED", timeout: 30) {
                try await onCluster(config) { try await $0.getWfRun("wf-c").status } == .completed
            }
            let done = try await onCluster(config) { try await $0.getWfRun("wf-c") }
            #expect(done.threadRuns[1].type == .interrupt && done.threadRuns[1].status == .completed)
            let read = try await onCluster(config) {
                try await $0.listTaskRuns("wf-c").results.first { $0.taskDefID.name == "read-note" }
            }
            #expect(read?.inputVariables.first?.value.str == "after", "the next task saw the handler's mutation")
            let slow = try await onCluster(config) {
                try await $0.listTaskRuns("wf-c").results.first { $0.taskDefID.name == "slow-step" }
            }
            #expect(slow?.attempts.count == 1, "the in-flight attempt reported across the failover, not retried")
        }
    }

    @Test func aStopWithATaskInFlightIsHaltedOnlyAfterItsReportAtTheServerThatTookOver() async throws {
        let wf = Workflow("stoppable") { wf in
            wf.execute("slow-step", "x", options: TaskOptions(retries: 0, timeoutSeconds: 60))
            wf.execute("after", "y")
        }
        try await cluster(tasks: ["slow-step:gate", "after:echo"], events: [], workflow: wf) {
            owner, client, gates, slots, store in
            var config = owner.config()
            config.apiHost = slots.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
            _ = try await client.runWf(
                .with {
                    $0.wfSpecName = "stoppable"; $0.id = "wf-s"
                })
            try await eventually("slow-step in flight") {
                try await client.listTaskRuns("wf-s").results.first?.status == .taskRunning
            }
            try await client.stopWfRun("wf-s")
            #expect(try await client.getWfRun("wf-s").status == .halting)
            await client.close()
            try await Self.ownerSlot(of: "wf-s", store: store, slots: slots).kill9()
            try await Task.sleep(for: .seconds(5))
            #expect(try await onCluster(config) { try await $0.getWfRun("wf-s").status } == .halting)
            #expect(FileManager.default.createFile(atPath: gates.appendingPathComponent("wf-s").path, contents: Data()))
            try await eventually("HALTED after the report", timeout: 30) {
                try await onCluster(config) { try await $0.getWfRun("wf-s").status } == .halted
            }
            #expect(try await onCluster(config) { try await $0.listTaskRuns("wf-s").results.count } == 1)
            try await onCluster(config) { try await $0.resumeWfRun("wf-s") }
            try await eventually("COMPLETED after resume", timeout: 30) {
                try await onCluster(config) { try await $0.getWfRun("wf-s").status } == .completed
            }
        }
    }

    /// A worker given one server's address, that server killed (-9): while
    /// its main connection is down the worker follows the other servers'
    /// lists of members, so a server that joins meanwhile is connected to
    /// and hands out the TaskRuns of its share.
    @Test func aWorkerWhoseOnlyServerIsKilledIsLedToAServerThatJoinsAfter() async throws {
        try await Self.withSlots(3, "lh-join") { store, arguments, slots in
            try await workerLedToAJoiner(store: store, arguments: arguments, slots: slots)
        }
    }

    private func workerLedToAJoiner(store: String, arguments: [String], slots: [PostgresChaosTests.Slot])
        async throws
    {
        let first = try await slots[0].launch(arguments).value
        let second = try await slots[1].launch(arguments).value
        try await Self.waitForShares([first, second], partitions: 16)
        let worker = try await first.startWorker(
            "lh-test-worker", ["joined:echo"], environment: ["LHC_API_HOST": "127.0.0.1:\(slots[0].port)"],
            ready: "test worker ready")
        defer { worker.stop() }
        try await eventually("the worker connected to the second server") {
            worker.stderr.withLockedValue { $0.contains("127.0.0.1:\(slots[1].port)") }
        }
        await slots[0].kill9()
        try await second.waitUntil(owning: "owns every partition")
        let third = try await slots[2].launch(arguments).value
        try await Self.waitForShares([second, third], partitions: 16)
        try await eventually("the worker, its main server dead, connected to the server that joined", timeout: 30) {
            worker.stderr.withLockedValue { $0.contains("127.0.0.1:\(slots[2].port)") }
        }

        var config = second.config()
        config.apiHost = "127.0.0.1:\(slots[1].port),127.0.0.1:\(slots[2].port)"
        let owned = try await PostgresFailoverTests.psql(
            store,
            "SELECT string_agg(l.p::text, ',') FROM lh_partitions l JOIN lh_members m ON m.id = l.owner WHERE m.address = '127.0.0.1:\(slots[2].port)'"
        ).split(separator: ",").compactMap { Int($0) }
        try #require(!owned.isEmpty, "the server that joined owns no partition")
        let ids = (0..<500).map { "joined-\($0)" }.filter {
            owned.contains(Int(PostgresStore.partition(of: $0, count: 16)))
        }.prefix(4)
        try await onCluster(config) { client in
            _ = try await client.putWfSpec(Workflow("joined") { $0.execute("joined", "x") }.compile())
        }
        for id in ids {
            try await onCluster(config) { client in
                _ = try await client.runWf(
                    .with {
                        $0.wfSpecName = "joined"; $0.id = id
                    })
            }
        }
        for id in ids {
            try await eventually("\(id) (a partition of the server that joined) COMPLETED", timeout: 30) {
                try await onCluster(config) { try await $0.getWfRun(id).status } == .completed
            }
        }
    }

    /// Mutual TLS in a cluster: the servers ask clients for a certificate
    /// of their client CA, and a server forwarding a command to another
    /// presents one too — by default its own (the development CA's, issued
    /// for client authentication too; here the client CA is that CA), or
    /// `--peer-cert`/`--peer-key` issued by another client CA. Commands and
    /// metadata through the server that owns neither are forwarded and
    /// served in both setups.
    @Test(arguments: ["own certificate", "--peer-cert"])
    func underMutualTLSAServerForwardsWithItsOwnOrItsPeerCertificate(_ identity: String) async throws {
        try await Self.withSlots(2, "lh-mtls") { store, arguments, slots in
            // The shared development CA, made before the servers (they find it).
            let caDir = URL(fileURLWithPath: arguments[arguments.firstIndex(of: "--dev-ca-dir")! + 1])
            let devCA = try DevCertificateAuthority.ensure(
                in: caDir.appendingPathComponent("probe"), sharedCA: caDir)
            let dir = try ServerProcess.temporaryDirectory("lh-mtls-files")
            func write(_ text: String, _ name: String) throws -> String {
                let path = dir.appendingPathComponent(name).path
                try text.write(toFile: path, atomically: true, encoding: .utf8)
                return path
            }
            let clientCA =
                identity == "--peer-cert"
                ? try DevCertificateAuthority.makeCA(commonName: "client CA")
                : try DevCertificateAuthority.loadCA(certPath: devCA.caCertPath, keyPath: devCA.caKeyPath)
            var serverArguments = arguments + ["--client-ca", try write(clientCA.certificatePEM, "client-ca.pem")]
            if identity == "--peer-cert" {
                let peer = try DevCertificateAuthority.issue(commonName: "peers", usages: [.clientAuth], by: clientCA)
                serverArguments += [
                    "--peer-cert", try write(peer.certificatePEM, "peer.pem"), "--peer-key",
                    try write(peer.keyPEM, "peer-key.pem"),
                ]
            }
            let user = try DevCertificateAuthority.issue(commonName: "user", usages: [.clientAuth], by: clientCA)
            let first = try await slots[0].launch(serverArguments).value
            let second = try await slots[1].launch(serverArguments).value
            try await Self.waitForShares([first, second], partitions: 16)

            var config = second.config(caPath: devCA.caCertPath)
            config.clientCertPath = try write(user.certificatePEM, "user.pem")
            config.clientKeyPath = try write(user.keyPEM, "user-key.pem")
            let client = try await LittleHorseClient.connect(config)
            defer { Task { await client.close() } }
            // Metadata is written by partition 0's owner; WfRuns of the
            // first server's partitions go there: both forwarded when the
            // second does not own them.
            let firstOwns = try await PostgresFailoverTests.psql(
                store,
                "SELECT string_agg(l.p::text, ',') FROM lh_partitions l JOIN lh_members m ON m.id = l.owner WHERE m.address = '127.0.0.1:\(slots[0].port)'"
            ).split(separator: ",").compactMap { Int($0) }
            try #require(!firstOwns.isEmpty)
            _ = try await client.putExternalEventDef(.with { $0.name = "mtls-event" })
            _ = try await client.putWfSpec(
                Workflow("mtls") { wf in _ = wf.waitForEvent("mtls-event") }.compile())
            let id = try #require(
                (0..<500).map { "mtls-\($0)" }.first {
                    firstOwns.contains(Int(PostgresStore.partition(of: $0, count: 16)))
                })
            _ = try await client.runWf(
                .with {
                    $0.wfSpecName = "mtls"; $0.id = id
                })
            _ = try await client.putExternalEvent(
                .with {
                    $0.wfRunID.id = id; $0.externalEventDefID.name = "mtls-event"; $0.content.str = "x"
                })
            try await eventually("\(id), forwarded to the first server, COMPLETED") {
                try await client.getWfRun(id).status == .completed
            }
        }
    }
}
