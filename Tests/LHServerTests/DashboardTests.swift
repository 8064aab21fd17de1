import Foundation
import LHClient
import LHServer
import LHTestKit
import LHWire
import LHWorkflow
import Testing

/// The HTTP door: /metrics counts what happened and parses with the
/// Prometheus client's parser; the dashboard in a real headless Chromium
/// shows interrupt threads, a HALTING thread's reason then HALTED, and
/// every node of a WfSpec; actions are refused when off or unauthenticated.
@Suite(.timeLimit(.minutes(5))) struct DashboardTests {
    /// Seed 003's WfRun with two interrupts, then done: what /metrics says.
    @Test func metricsCountTheInterruptsTasksAndRequestsOfAScriptedWfRun() async throws {
        guard let python = try await DashboardTools.pythonOrSkip("metrics parse test") else { return }
        try await TestServer.with(http: .init(host: "127.0.0.1", port: 0)) { server in
            let worker = try await server.startWorker("collect-underpants-worker", [], ready: "workers ready")
            try await withProcesses([worker]) {
                let reg = try await server.command("collect-underpants-register", [])
                #expect(reg.status == 0, "register: \(reg.stderr)")
                try await server.lhctl("run", "collect-underpants", "--wfRunId", "m-wf", "all-underpants", "[]")
                let client = try await server.connectClient()
                try await eventually("m-wf waits for done-collecting-underpants") {
                    try await client.getWfRun("m-wf").threadRuns[0].currentNodePosition == 2
                }
                for who in ["obiwan", "anakin"] {
                    try await server.lhctl("postEvent", "m-wf", "underpant-collected", "STR", who)
                }
                try await eventually("both handlers completed") {
                    try await client.getWfRun("m-wf").threadRuns.filter { $0.status == .completed }.count == 2
                }
                try await server.lhctl("postEvent", "m-wf", "done-collecting-underpants", "STR", "done")
                try await eventually("m-wf COMPLETED") { try await client.getWfRun("m-wf").status == .completed }
                await client.close()

                let url = "https://127.0.0.1:\(server.httpPort!)/metrics"
                let (m, contentType) = try await DashboardTools.metrics(python, url, ca: server.caPath)
                #expect(contentType.hasPrefix("text/plain"))
                #expect(m["lh_wf_runs_started_total"] == 1)
                #expect(m["lh_wf_runs_ended_total{status=\"COMPLETED\"}"] == 1)
                #expect(m["lh_wf_runs{status=\"COMPLETED\"}"] == 1)
                #expect(m["lh_wf_runs{status=\"RUNNING\"}"] == 0)
                #expect(m["lh_external_events_total"] == 3)
                #expect(m["lh_interrupts_total"] == 2)
                #expect(m["lh_handler_threads_started_total{type=\"INTERRUPT\"}"] == 2)
                #expect(m["lh_thread_runs_halted_total"] == 2, "thread 0 halted once per interrupt")
                // start-underpants-collection, collect-underpant twice, profit.
                #expect(m["lh_task_runs_scheduled_total"] == 4)
                #expect(m["lh_task_attempts_dispatched_total"] == 4)
                #expect(m["lh_task_attempts_completed_total"] == 4)
                #expect(m["lh_task_attempts_failed_total"] == 0)
                #expect(m["lh_task_schedule_to_start_seconds_count"] == 4)
                #expect(m["lh_commands_applied_total{command=\"REPORT_TASK\"}"] == 4)
                #expect(m["lh_commands_applied_total{command=\"PUT_EXTERNAL_EVENT\"}"] == 3)
                #expect(m["lh_requests_total{code=\"OK\",kind=\"RunWf\"}"] == 1)
                #expect(m["lh_requests_total{code=\"OK\",kind=\"PutExternalEvent\"}"] == 3)
                #expect(m["lh_requests_total{code=\"OK\",kind=\"ReportTask\"}"] == 4)
                #expect(m["lh_task_queue_depth{task_def=\"profit\"}"] == 0)
                #expect((m["lh_task_workers_connected{task_def=\"profit\"}"] ?? 0) >= 1)
                #expect((m["lh_group_commits_total"] ?? 0) >= 5)
                #expect(m["lh_group_commit_jobs_count"] == m["lh_group_commits_total"])
                #expect((m["lh_store_commit_seconds_count"] ?? 0) >= 1)
                #expect((m["lh_connections_open"] ?? 0) >= 1, "the worker's connection")
                #expect(m["lh_timers_pending"] != nil)
            }
        }
    }

    /// The WfRun page in Chromium: thread 0 and two INTERRUPT children with
    /// their parent; a stop while a task is in flight shows HALTING with
    /// the worker that holds the task, then (the page refreshing itself)
    /// HALTED after the report; the WfSpec page draws every node.
    @Test func chromiumShowsInterruptThreadsTheHaltingReasonThenHaltedAndEveryNode() async throws {
        guard let python = try await DashboardTools.pythonOrSkip("dashboard browser test") else { return }
        let shots = try DashboardTools.screenshotDirectory()
        let gates = try ServerProcess.temporaryDirectory("gates")
        try await withServer(arguments: ["--http-listen", "127.0.0.1:0"]) { server in
            let base = try #require(server.dashboardURL, "the dashboard's address at start-up:\n\(server.announced)")
            #expect(base.hasPrefix("https://127.0.0.1:"))
            let underpants = try await server.startWorker("collect-underpants-worker", [], ready: "workers ready")
            let gate = try await server.startWorker(
                "lh-test-worker", ["slow-step:gate", "after:echo"], environment: ["LH_TEST_GATE_DIR": gates.path],
                ready: "test worker ready")
            try await withProcesses([underpants, gate]) {
                let reg = try await server.command("collect-underpants-register", [])
                #expect(reg.status == 0, "register: \(reg.stderr)")
                try await server.lhctl("run", "collect-underpants", "--wfRunId", "my-wf", "all-underpants", "[]")
                let client = try await server.connectClient()
                try await eventually("my-wf waits for done-collecting-underpants") {
                    try await client.getWfRun("my-wf").threadRuns[0].currentNodePosition == 2
                }
                try await server.lhctl("postEvent", "my-wf", "underpant-collected", "STR", "obiwan")
                try await server.lhctl("postEvent", "my-wf", "underpant-collected", "STR", "anakin")
                try await eventually("two handlers completed") {
                    try await client.getWfRun("my-wf").threadRuns.filter {
                        $0.type == .interrupt && $0.status == .completed
                    }
                    .count == 2
                }

                // Thread 0 and its two INTERRUPT children.
                let run = try await DashboardTools.browse(
                    python, "\(base)wfRuns/my-wf", screenshot: shots.appendingPathComponent("wfrun-interrupts.png").path
                )
                let threads = try #require(run["threads"] as? [[String: Any]])
                #expect(threads.count == 3, "\(threads)")
                #expect(threads.first?["type"] as? String == "ENTRYPOINT")
                let handlers = threads.filter { $0["type"] as? String == "INTERRUPT" }
                #expect(handlers.count == 2)
                #expect(
                    handlers.allSatisfy { $0["parent"] as? String == "0" && $0["status"] as? String == "COMPLETED" })
                let text = run["text"] as? String ?? ""
                #expect(text.contains("INTERRUPT handler of event underpant-collected"))
                #expect(text.contains("interrupted thread 0; handler thread 1"), "the events say what they triggered")
                #expect(text.contains("\"obiwan\"") && text.contains("collect-underpant"))
                #expect(
                    run["scripts"] as? Int == 0 && run["external"] as? Int == 0, "no script, nothing fetched elsewhere")
                let drawn = try #require(run["nodes"] as? [[String: Any]])
                #expect(drawn.contains { $0["status"] as? String == "COMPLETED" })
                #expect(
                    drawn.contains {
                        ($0["type"] as? String ?? "").hasPrefix("EXTERNAL_EVENT")
                            && $0["status"] as? String == "RUNNING"
                    })

                // The WfSpec page draws every node of every ThreadSpec.
                let spec = try await client.getLatestWfSpec("collect-underpants")
                let page = try await DashboardTools.browse(
                    python, "\(base)wfSpecs/collect-underpants",
                    screenshot: shots.appendingPathComponent("wfspec.png").path)
                let sections = try #require(page["sections"] as? [[String: Any]])
                #expect(sections.count == spec.threadSpecs.count)
                for section in sections {
                    let name = section["threadSpec"] as? String ?? ""
                    let drawnNodes = Set(section["drawn"] as? [String] ?? [])
                    #expect(drawnNodes == Set(spec.threadSpecs[name]?.nodes.keys.map { $0 } ?? []), "\(name)")
                    #expect((section["edges"] as? Int ?? 0) > 0)
                }
                #expect((page["text"] as? String ?? "").contains("interrupt handler"))

                // A stop while slow-step is in flight: HALTING, and why.
                _ = try await client.putWfSpec(
                    Workflow("stoppable") { wf in
                        wf.execute("slow-step", "x")
                        wf.execute("after", "y")
                    }.compile())
                try await server.lhctl("run", "stoppable", "--wfRunId", "wf-stop")
                try await eventually("slow-step in flight") {
                    try await client.listTaskRuns("wf-stop").results.first?.status == .taskRunning
                }
                try await server.lhctl("stop", "wfRun", "wf-stop")
                let halting = try await DashboardTools.browse(
                    python, "\(base)wfRuns/wf-stop", screenshot: shots.appendingPathComponent("wfrun-halting.png").path)
                let haltingText = halting["text"] as? String ?? ""
                #expect(haltingText.contains("WfRun wf-stop HALTING"), "\(haltingText)")
                #expect(haltingText.contains("halting: waiting for TaskRun"), "\(haltingText)")
                #expect(haltingText.contains("held by worker"), "\(haltingText)")
                #expect(haltingText.contains("will halt: stopped by an operator (StopWfRun)"), "\(haltingText)")

                // The same page, left open, refreshes itself to HALTED once
                // the worker reports.
                async let halted = DashboardTools.browse(
                    python, "\(base)wfRuns/wf-stop", screenshot: shots.appendingPathComponent("wfrun-halted.png").path,
                    waitText: "WfRun wf-stop HALTED")
                try await Task.sleep(for: .seconds(4))
                #expect(
                    FileManager.default.createFile(
                        atPath: gates.appendingPathComponent("wf-stop").path, contents: Data()))
                let haltedText = try await halted["text"] as? String ?? ""
                #expect(haltedText.contains("WfRun wf-stop HALTED"))
                #expect(haltedText.contains("halted: stopped by an operator (StopWfRun)"), "\(haltedText)")
                #expect(try await client.getWfRun("wf-stop").status == .halted)
                await client.close()
            }
        }
    }

    /// A frame too large and a plaintext client on the TLS port are counted
    /// as a frame error and a TLS error; connections open and close.
    @Test func frameAndTLSErrorsAreCounted() async throws {
        try await TestServer.with(configure: { $0.maxFrameBytes = 4096 }, http: .init(host: "127.0.0.1", port: 0)) {
            server in
            let raw = try await RawClient.connect(port: server.port, caPath: server.caPath)
            try await raw.send(RawClient.hello())
            var header: [UInt8] = []
            withUnsafeBytes(of: UInt32(4097).bigEndian) { header.append(contentsOf: $0) }
            try await raw.send(header)
            #expect(await raw.waitForClose())
            let plain = try await runTool(
                "/usr/bin/env",
                [
                    "python3", "-c",
                    "import socket; s = socket.create_connection(('127.0.0.1', \(server.port))); "
                        + "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); s.settimeout(10); s.recv(100)",
                ])
            #expect(plain.status == 0, "\(plain.stderr)")
            let url = "https://127.0.0.1:\(server.httpPort!)/metrics"
            try await eventually("both errors counted") {
                let text = try await DashboardTools.request("GET", url, ca: server.caPath).body
                return text.contains("lh_frame_errors_total 1\n") && text.contains("lh_tls_errors_total 1\n")
                    && text.contains("lh_connections_opened_total 2\n")
            }
            let text = try await DashboardTools.request("GET", url, ca: server.caPath).body
            #expect(text.contains("lh_connections_open 0.0\n"), "both connections closed")
        }
    }

    /// Read-only by default: a POST is refused with 403 and changes nothing.
    @Test func withActionsOffTheDashboardRefusesAPost() async throws {
        try await TestServer.with(http: .init(host: "127.0.0.1", port: 0)) { server in
            let client = try await server.connect()
            _ = try await client.putWfSpec(Workflow("waits") { $0.sleepSeconds(3600) }.compile())
            _ = try await client.runWf(
                .with {
                    $0.wfSpecName = "waits"; $0.id = "w1"
                })
            let base = "https://127.0.0.1:\(server.httpPort!)"
            let r = try await DashboardTools.request(
                "POST", "\(base)/wfRuns/w1/stop", ca: server.caPath, form: ["thread=0"])
            #expect(r.status == 403)
            #expect(r.body.contains("actions are off"))
            #expect(try await client.getWfRun("w1").status == .running)
            let page = try await DashboardTools.request("GET", "\(base)/wfRuns/w1", ca: server.caPath)
            #expect(page.status == 200)
            #expect(!page.body.contains("id=\"actions\""), "no action forms when actions are off")
            let missing = try await DashboardTools.request("GET", "\(base)/wfRuns/nope", ca: server.caPath)
            #expect(missing.status == 404)
            #expect(missing.body.contains("WfRun &#39;nope&#39; not found") || missing.body.contains("nope"))
            await client.close()
        }
    }

    /// With actions on, a POST without the token (or with a wrong one) is
    /// refused with 401; with it, the WfRun stops and the browser is sent
    /// back to its page.
    @Test func withActionsOnAPostNeedsTheToken() async throws {
        try await TestServer.with(http: .init(host: "127.0.0.1", port: 0, actions: true, token: "s3cret")) { server in
            let client = try await server.connect()
            _ = try await client.putWfSpec(Workflow("waits") { $0.sleepSeconds(3600) }.compile())
            _ = try await client.runWf(
                .with {
                    $0.wfSpecName = "waits"; $0.id = "w2"
                })
            let url = "https://127.0.0.1:\(server.httpPort!)/wfRuns/w2/stop"
            let none = try await DashboardTools.request("POST", url, ca: server.caPath, form: ["thread=0"])
            #expect(none.status == 401)
            let wrong = try await DashboardTools.request(
                "POST", url, ca: server.caPath, form: ["thread=0"], headers: ["Authorization: Bearer s3creT"])
            #expect(wrong.status == 401)
            #expect(try await client.getWfRun("w2").status == .running)
            let ok = try await DashboardTools.request(
                "POST", url, ca: server.caPath, form: ["thread=0"], headers: ["Authorization: Bearer s3cret"])
            #expect(ok.status == 303)
            #expect(ok.headers["Location"] == "/wfRuns/w2")
            try await eventually("w2 HALTED") { try await client.getWfRun("w2").status == .halted }
            let form = try await DashboardTools.request(
                "POST", "https://127.0.0.1:\(server.httpPort!)/wfRuns/w2/resume", ca: server.caPath,
                form: ["thread=0", "token=s3cret"])
            #expect(form.status == 303)
            try await eventually("w2 RUNNING again") { try await client.getWfRun("w2").status == .running }
            await client.close()
        }
    }
}
