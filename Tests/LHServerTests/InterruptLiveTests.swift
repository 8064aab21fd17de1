import Foundation
import LHClient
import LHTestKit
import LHWire
import LHWorkflow
import Testing

/// Where a live test runs: one server (the embedded SQLite store), or
/// three servers on one PostgreSQL, each owning a share of the partitions
/// (commands forwarded to the owner, the worker given the first server's
/// address only and connected to all three).
enum LiveTopology: String, CustomStringConvertible, Sendable {
    case single, cluster
    var description: String { rawValue }
}

/// Interrupts and halting end to end: real lh-server, real worker processes
/// (lh-test-worker), TLS on; each on one server and on a 3-server cluster.
/// Named after the rules they show.
@Suite(.serialized, .timeLimit(.minutes(3))) struct InterruptLiveTests {
    static let topologies: [LiveTopology] = [.single, .cluster]

    /// Starts a server (or a cluster) and a test worker with `tasks`
    /// (TASKDEF:BEHAVIOUR), registers `events`, deploys `workflow`, and runs
    /// `body` with a server for lhctl, a client and the gate directory.
    func scenario(
        _ topology: LiveTopology, tasks: [String], events: [String], workflow: Workflow,
        _ body: (any LiveServer, LittleHorseClient, URL) async throws -> Void
    ) async throws {
        let gates = try ServerProcess.temporaryDirectory("gates")
        switch topology {
        case .single:
            try await TestServer.with { server in
                let worker = try await server.startWorker(
                    "lh-test-worker", tasks, environment: ["LH_TEST_GATE_DIR": gates.path], ready: "test worker ready"
                )
                try await withProcesses([worker]) {
                    let client = try await server.connectClient()
                    for e in events { _ = try await client.putExternalEventDef(.with { $0.name = e }) }
                    _ = try await client.putWfSpec(workflow.compile())
                    try await body(server, client, gates)
                    await client.close()
                }
            }
        case .cluster:
            guard let store = try PostgresFailoverTests.database() else { return }
            let ca = try ServerProcess.temporaryDirectory("lh-interrupt-cluster-ca")
            let arguments = PostgresFailoverTests.member(store, ca: ca) + ["--http-listen", "off"]
            var servers: [ServerProcess] = []
            defer { for s in servers { s.stop() } }
            for _ in 0..<3 { servers.append(try await ServerProcess.start(arguments: arguments)) }
            try await ClusterInterruptLiveTests.waitForShares(servers, partitions: 16)
            let worker = try await servers[0].startWorker(
                "lh-test-worker", tasks, environment: ["LH_TEST_GATE_DIR": gates.path], ready: "test worker ready")
            try await withProcesses([worker]) {
                var config = servers[0].config()
                config.apiHost = servers.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
                let client = try await LittleHorseClient.connect(config)
                // Metadata is forwarded to its owner: retried as a client of a
                // cluster does when the peer link timed out under load.
                for e in events {
                    try await retryingUnavailable("PutExternalEventDef") {
                        _ = try await client.putExternalEventDef(.with { $0.name = e })
                    }
                }
                try await retryingUnavailable("PutWfSpec") { _ = try await client.putWfSpec(workflow.compile()) }
                // lhctl through the second server: its commands are forwarded
                // where the first or the third owns the WfRun.
                try await body(servers[1], client, gates)
                await client.close()
            }
        }
    }

    func run(_ client: LittleHorseClient, _ spec: String, id: String, _ vars: [String: Littlehorse_VariableValue] = [:])
        async throws
    {
        // With an id, a retry after UNAVAILABLE (a forward that timed out) is safe.
        try await retryingUnavailable("RunWf \(id)") {
            _ = try await client.runWf(
                .with {
                    $0.wfSpecName = spec; $0.id = id; $0.variables = vars
                })
        }
    }

    func post(_ client: LittleHorseClient, _ id: String, _ event: String, _ content: Littlehorse_VariableValue)
        async throws
    {
        _ = try await client.putExternalEvent(
            .with {
                $0.wfRunID.id = id; $0.externalEventDefID.name = event; $0.content = content
            })
    }

    @Test(arguments: Self.topologies)
    func interruptWhileTaskInFlightIsHaltingUntilTheWorkerReportsThenTheNextTaskSeesTheHandlersMutation(
        _ topology: LiveTopology
    ) async throws {
        let wf = Workflow("in-flight") { wf in
            let note = wf.declareStr("note")
            wf.execute("slow-step", note)
            wf.execute("read-note", note)
            wf.registerInterruptHandler("update-note") { h in
                let input = h.declareStr(WorkflowThread.handlerInputVar)
                h.mutate(note, .assign, input)
            }
        }
        try await scenario(
            topology, tasks: ["slow-step:gate", "read-note:echo"], events: ["update-note"], workflow: wf
        ) {
            _, client, gates in
            try await run(client, "in-flight", id: "wf-a", ["note": .with { $0.str = "before" }])
            try await eventually("slow-step is in the worker's hands") {
                try await client.listTaskRuns("wf-a").results.first?.status == .taskRunning
            }
            try await post(client, "wf-a", "update-note", .with { $0.str = "after" })
            // HALTING, and it stays so while the worker holds the task.
            try await Task.sleep(for: .milliseconds(300))
            let halting = try await client.getWfRun("wf-a")
            #expect(halting.threadRuns[0].status == .halting)
            #expect(halting.threadRuns.count == 1, "no handler before the thread is HALTED")
            #expect(
                halting.threadRuns[0].haltReasons.first?.pendingInterrupt.externalEventID.externalEventDefID.name
                    == "update-note")
            let node = try await client.getNodeRun(
                .with {
                    $0.wfRunID.id = "wf-a"; $0.threadRunNumber = 0; $0.position = 1
                })
            #expect(node.status == .halting)
            // The worker reports: the handler runs, then the next task sees its mutation.
            #expect(
                FileManager.default.createFile(atPath: gates.appendingPathComponent("wf-a").path, contents: Data()),
                "the gate file")
            try await eventually("wf-a COMPLETED") { try await client.getWfRun("wf-a").status == .completed }
            let done = try await client.getWfRun("wf-a")
            #expect(done.threadRuns[1].type == .interrupt && done.threadRuns[1].status == .completed)
            let read = try #require(
                try await client.listTaskRuns("wf-a").results.first { $0.taskDefID.name == "read-note" })
            #expect(read.inputVariables.first?.value.str == "after")
            #expect(read.attempts.last?.output.str == "echo:after")
        }
    }

    @Test(arguments: Self.topologies) func interruptDuringSleepStartsTheHandlerAtOnce(_ topology: LiveTopology)
        async throws
    {
        let wf = Workflow("sleepy") { wf in
            let count = wf.declareInt("count")
            wf.sleepSeconds(30)
            wf.registerInterruptHandler("ping") { h in
                _ = h.declareStr(WorkflowThread.handlerInputVar)
                h.mutate(count, .add, 1)
                h.execute("mark", "pinged")
            }
        }
        try await scenario(topology, tasks: ["mark:echo"], events: ["ping"], workflow: wf) { _, client, _ in
            try await run(client, "sleepy", id: "wf-s", ["count": .with { $0.int = 0 }])
            try await post(client, "wf-s", "ping", .with { $0.str = "x" })
            try await eventually("handler completed", timeout: 10) {
                let wf = try await client.getWfRun("wf-s")
                return wf.threadRuns.count == 2 && wf.threadRuns[1].status == .completed
            }
            let wf = try await client.getWfRun("wf-s")
            #expect(wf.threadRuns[0].status == .running, "back to sleeping")
            #expect(wf.status == .running)
            let count = try await client.getVariable(
                .with {
                    $0.wfRunID.id = "wf-s"; $0.name = "count"
                })
            #expect(count.value.int == 1)
        }
    }

    @Test(arguments: Self.topologies) func interruptingAParentHaltsItsWaitingChild(_ topology: LiveTopology)
        async throws
    {
        let wf = Workflow("parent-child") { wf in
            let child = wf.spawnThread("child") { c in
                c.execute("child-step", "c")
            }
            wf.waitForThreads(child)
            wf.registerInterruptHandler("ping") { h in
                _ = h.declareStr(WorkflowThread.handlerInputVar)
                h.execute("mark", "handled")
            }
        }
        try await scenario(topology, tasks: ["child-step:gate", "mark:echo"], events: ["ping"], workflow: wf) {
            _, client, gates in
            try await run(client, "parent-child", id: "wf-p")
            try await eventually("child task in flight") {
                try await client.listTaskRuns("wf-p").results.first?.status == .taskRunning
            }
            try await post(client, "wf-p", "ping", .with { $0.str = "x" })
            try await eventually("child HALTING with parent_halted") {
                let wf = try await client.getWfRun("wf-p")
                return wf.threadRuns[1].status == .halting
                    && wf.threadRuns[1].haltReasons.first?.parentHalted.parentThreadID == 0
            }
            #expect(try await client.getWfRun("wf-p").threadRuns[0].status == .halting)
            #expect(
                FileManager.default.createFile(atPath: gates.appendingPathComponent("wf-p").path, contents: Data()),
                "the gate file")
            try await eventually("wf-p COMPLETED") { try await client.getWfRun("wf-p").status == .completed }
            let wf = try await client.getWfRun("wf-p")
            #expect(wf.threadRuns.map(\.type) == [.entrypoint, .child, .interrupt])
        }
    }

    @Test(arguments: Self.topologies) func handlerErrorFailsTheInterruptedNodeWithChildFailureAndExceptionPropagates(
        _ topology: LiveTopology
    ) async throws {
        let wf = Workflow("failing-handlers") { wf in
            wf.waitForEvent("never")
            wf.registerInterruptHandler("error-ping") { h in
                _ = h.declareStr(WorkflowThread.handlerInputVar)
                h.execute("broken", "x")
            }
            wf.registerInterruptHandler("exception-ping") { h in
                _ = h.declareStr(WorkflowThread.handlerInputVar)
                h.execute("throws", "x")
            }
        }
        try await scenario(
            topology,
            tasks: ["broken:fail", "throws:exception"], events: ["never", "error-ping", "exception-ping"], workflow: wf
        ) { _, client, _ in
            try await run(client, "failing-handlers", id: "wf-err")
            try await post(client, "wf-err", "error-ping", .with { $0.str = "x" })
            try await eventually("wf-err ERROR") { try await client.getWfRun("wf-err").status == .error }
            let errNode = try await client.getNodeRun(
                .with {
                    $0.wfRunID.id = "wf-err"; $0.position = 1
                })
            #expect(errNode.failures.first?.failureName == "CHILD_FAILURE")

            try await run(client, "failing-handlers", id: "wf-exc")
            try await post(client, "wf-exc", "exception-ping", .with { $0.str = "x" })
            try await eventually("wf-exc EXCEPTION") { try await client.getWfRun("wf-exc").status == .exception }
            let excNode = try await client.getNodeRun(
                .with {
                    $0.wfRunID.id = "wf-exc"; $0.position = 1
                })
            #expect(excNode.failures.first?.failureName == "test-exception")
            #expect(excNode.failures.first?.message.contains("thrown on purpose") == true)
        }
    }

    @Test(arguments: Self.topologies) func inputOfTheWrongTypeFailsTheHandlerWithAnError(_ topology: LiveTopology)
        async throws
    {
        let wf = Workflow("typed-input") { wf in
            wf.waitForEvent("never")
            wf.registerInterruptHandler("number") { h in
                _ = h.declareInt(WorkflowThread.handlerInputVar)
            }
        }
        try await scenario(topology, tasks: [], events: ["never", "number"], workflow: wf) { _, client, _ in
            try await run(client, "typed-input", id: "wf-t")
            try await post(client, "wf-t", "number", .with { $0.str = "not a number" })
            try await eventually("wf-t ERROR") { try await client.getWfRun("wf-t").status == .error }
            let wf = try await client.getWfRun("wf-t")
            #expect(wf.threadRuns[1].status == .error)
            #expect(wf.threadRuns[1].errorMessage.contains("INT") && wf.threadRuns[1].errorMessage.contains("STR"))
        }
    }

    @Test(arguments: Self.topologies) func twoThreadRunsOfOneThreadSpecAreBothInterruptedByOneEvent(
        _ topology: LiveTopology
    ) async throws {
        let wf = Workflow("two-children") { wf in
            let count = wf.declareInt("count")
            let a = wf.spawnThread("waiter") { w in
                w.waitForEvent("go")
                w.registerInterruptHandler("ping") { h in
                    _ = h.declareStr(WorkflowThread.handlerInputVar)
                    h.mutate(count, .add, 1)
                    h.execute("mark", "x")
                }
            }
            let b = wf.spawnThread("waiter") { _ in }
            wf.waitForThreads(a, b)
        }
        try await scenario(topology, tasks: ["mark:echo"], events: ["go", "ping"], workflow: wf) { _, client, _ in
            try await run(client, "two-children", id: "wf-2", ["count": .with { $0.int = 0 }])
            try await post(client, "wf-2", "ping", .with { $0.str = "x" })
            try await eventually("two handlers completed") {
                try await client.getWfRun("wf-2").threadRuns.filter { $0.type == .interrupt && $0.status == .completed }
                    .count == 2
            }
            let wf = try await client.getWfRun("wf-2")
            #expect(Set(wf.threadRuns.filter { $0.type == .interrupt }.map(\.parentThreadID)) == [1, 2])
            #expect(
                try await client.getVariable(
                    .with {
                        $0.wfRunID.id = "wf-2"; $0.name = "count"
                    }
                ).value.int == 2)
        }
    }

    @Test(arguments: Self.topologies) func stopWithATaskInFlightIsHaltingUntilTheWorkerReportsThenHaltedAndResumeRuns(
        _ topology: LiveTopology
    ) async throws {
        let wf = Workflow("stoppable") { wf in
            wf.execute("slow-step", "x")
            wf.execute("after", "y")
        }
        try await scenario(topology, tasks: ["slow-step:gate", "after:echo"], events: [], workflow: wf) {
            server, client, gates in
            try await run(client, "stoppable", id: "wf-stop")
            try await eventually("slow-step in flight") {
                try await client.listTaskRuns("wf-stop").results.first?.status == .taskRunning
            }
            try await server.lhctl("stop", "wfRun", "wf-stop")
            #expect(try await client.getWfRun("wf-stop").status == .halting)
            #expect(
                FileManager.default.createFile(atPath: gates.appendingPathComponent("wf-stop").path, contents: Data()),
                "the gate file")
            try await eventually("HALTED after the report") { try await client.getWfRun("wf-stop").status == .halted }
            #expect(try await client.listTaskRuns("wf-stop").results.count == 1, "nothing runs while stopped")
            try await server.lhctl("resume", "wfRun", "wf-stop")
            try await eventually("COMPLETED after resume") { try await client.getWfRun("wf-stop").status == .completed }
        }
    }
}
