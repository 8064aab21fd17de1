import Foundation
import LHClient
import LHTestKit
import LHWire
import LHWorkflow
import Testing

/// Acknowledged means durable: crashes of the server and of workers lose
/// nothing a client was told succeeded.
/// Progress of the long live tests, unbuffered on stderr.
func progress(_ line: String) {
    FileHandle.standardError.write(Data("[live] \(line)\n".utf8))
}

@Suite(.serialized, .timeLimit(.minutes(3))) struct DurabilityTests {
    static var durableWorkflow: Workflow {
        Workflow("durable") { wf in
            let count = wf.declareInt("count")
            // A TaskRun handed over just before a crash is held by no worker: its
            // attempt times out (2 s here) and is retried.
            wf.execute("step-one", "a", options: TaskOptions(retries: 3, timeoutSeconds: 2))
            wf.waitForEvent("go")
            wf.execute("step-two", count, options: TaskOptions(retries: 3, timeoutSeconds: 2))
            wf.registerInterruptHandler("ping") { h in
                _ = h.declareStr(WorkflowThread.handlerInputVar)
                h.mutate(count, .add, 1)
            }
        }
    }

    /// Retries `body` (reconnecting) until it succeeds: what a careful client
    /// does across server crashes, with idempotent ids and guids.
    func retrying<T>(
        _ server: @escaping @Sendable () -> ServerProcess?, retries: inout Int,
        _ body: (LittleHorseClient) async throws -> T
    ) async throws -> T {
        let deadline = Date().addingTimeInterval(60)
        var attempt = 0
        while true {
            if attempt > 0 { retries += 1 }
            attempt += 1
            do {
                guard let s = server() else { throw LHError(.unavailable, "no server") }
                let client = try await s.client()
                defer { Task { await client.close() } }
                return try await body(client)
            } catch let e as LHError where e.code == .unavailable || e.code == .connectionClosed {
                if Date() > deadline { throw e }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    @Test func killMinus9InTheMiddleOfARunLosesNothingAcknowledged() async throws {
        let dir = try ServerProcess.temporaryDirectory("lh-kill9")
        let port = try ServerProcess.freePort()
        final class Current: @unchecked Sendable {
            let lock = NSLock()
            var server: ServerProcess?
            func get() -> ServerProcess? { lock.lock(); defer { lock.unlock() }; return server }
            func set(_ s: ServerProcess?) { lock.lock(); server = s; lock.unlock() }
        }
        let current = Current()
        let first = try await ServerProcess.start(dataDir: dir, port: port)
        current.set(first)
        let worker = try await first.startWorker(
            "lh-test-worker", ["step-one:echo", "step-two:echo"], ready: "test worker ready")
        defer { worker.stop(); current.get()?.stop() }
        let setup = try await first.client()
        for e in ["go", "ping"] { _ = try await setup.putExternalEventDef(.with { $0.name = e }) }
        _ = try await setup.putWfSpec(Self.durableWorkflow.compile())
        await setup.close()

        // Three kill -9s while the client works.
        let killer = Task {
            for k in 0..<3 {
                try await Task.sleep(for: .milliseconds(700))
                progress("kill-9 test: killing the server (\(k + 1)/3)")
                current.get()?.kill9()
                current.set(try await ServerProcess.start(dataDir: dir, port: port))
                progress("kill-9 test: server restarted (\(k + 1)/3)")
            }
        }
        let runs = 40
        var retried = 0
        let started = Date()
        for i in 0..<runs {
            let id = "wf-\(i)"
            if i % 10 == 0 { progress("kill-9 test: WfRun \(i)/\(runs)") }
            _ = try await retrying(current.get, retries: &retried) { client in
                do {
                    _ = try await client.runWf(
                        .with {
                            $0.wfSpecName = "durable"; $0.id = id
                        })
                } catch let e as LHError where e.code == .alreadyExists {
                    // Committed before the crash: acknowledged now.
                }
            }
            for (event, guid) in [("ping", "ping-\(i)"), ("go", "go-\(i)")] {
                _ = try await retrying(current.get, retries: &retried) { client in
                    try await client.putExternalEvent(
                        .with {
                            $0.wfRunID.id = id; $0.externalEventDefID.name = event; $0.guid = guid; $0.content.str = "x"
                        })
                }
            }
        }
        progress("kill-9 test: client done, waiting for the killer")
        try await killer.value
        print(
            "kill -9 test: \(runs) WfRuns with 2 events each in \(Date().timeIntervalSince(started)) s, 3 kills, \(retried) requests retried after a crash"
        )
        #expect(retried > 0, "the kills happened while the client was working")
        let final = try #require(current.get())
        let client = try await final.client()
        do {
            try await eventually("all \(runs) WfRuns COMPLETED", timeout: 30) {
                for i in 0..<runs where try await client.getWfRun("wf-\(i)").status != .completed { return false }
                return true
            }
        } catch {
            for i in 0..<runs {
                let wf = try await client.getWfRun("wf-\(i)")
                if wf.status != .completed {
                    print(
                        "stuck: \(try wf.jsonString())\n tasks: \(try await client.listTaskRuns("wf-\(i)").jsonString())"
                    )
                }
            }
            throw error
        }
        for i in 0..<runs {
            let id = "wf-\(i)"
            let count = try await client.getVariable(
                .with {
                    $0.wfRunID.id = id; $0.name = "count"
                })
            #expect(count.value.int == 1, "the ping of \(id) was applied exactly once")
            let tasks = try await client.listTaskRuns(id).results
            #expect(tasks.count == 2, "no TaskRun lost or doubled in \(id)")
            #expect(
                tasks.first { $0.taskDefID.name == "step-two" }?.inputVariables.first?.value.str == "1",
                "step-two (a STR input) saw the count after the ping")
            let events = try await client.listExternalEvents(id).results
            #expect(events.count == 2, "each acknowledged event stored once in \(id)")
        }
        await client.close()
    }

    /// (Three retries: on a machine loaded by the whole suite worker-b's own
    /// 2 s window can pass before its report is committed; every attempt
    /// after the first is worker-b's all the same.)
    @Test func workerKilledHoldingATaskRunTimesOutAndTheRetryCompletesOnAnotherWorker() async throws {
        let wf = Workflow("retry-elsewhere") { wf in
            wf.execute("held", "x", options: TaskOptions(retries: 3, timeoutSeconds: 2))
        }
        try await TestServer.with { server in
            let hanging = try await server.startWorker(
                "lh-test-worker", ["held:hang"], environment: ["LHW_TASK_WORKER_ID": "worker-a"],
                ready: "test worker ready")
            let client = try await server.connectClient()
            _ = try await client.putWfSpec(wf.compile())
            _ = try await client.runWf(
                .with {
                    $0.wfSpecName = "retry-elsewhere"; $0.id = "wf-r"
                })
            try await eventually("worker-a holds the TaskRun") {
                try await client.listTaskRuns("wf-r").results.first?.attempts.first?.taskWorkerID == "worker-a"
            }
            hanging.kill9()
            let good = try await server.startWorker(
                "lh-test-worker", ["held:echo"], environment: ["LHW_TASK_WORKER_ID": "worker-b"],
                ready: "test worker ready")
            try await withProcesses([good]) {
                try await eventually("wf-r COMPLETED", timeout: 20) {
                    try await client.getWfRun("wf-r").status == .completed
                }
                let attempts = try #require(try await client.listTaskRuns("wf-r").results.first).attempts
                #expect(attempts.count >= 2)
                #expect(attempts.first?.status == .taskTimeout && attempts.first?.taskWorkerID == "worker-a")
                #expect(attempts.dropFirst().allSatisfy { $0.taskWorkerID == "worker-b" })
                #expect(attempts.dropFirst().dropLast().allSatisfy { $0.status == .taskTimeout })
                #expect(attempts.last?.status == .taskSuccess)
                if attempts.count > 2 {
                    print("retry-elsewhere: worker-b's own window passed \(attempts.count - 2) time(s)")
                }
            }
            await client.close()
        }
    }

    /// A task that finishes while the server is down cannot report; the
    /// worker keeps the report, reconnects when the server is back and
    /// sends it then: the first attempt's result completes the WfRun (no
    /// timeout, no retry).
    @Test func aReportMadeWhileTheServerWasDownIsSentWhenItIsBack() async throws {
        let dir = try ServerProcess.temporaryDirectory("lh-resend")
        let gates = try ServerProcess.temporaryDirectory("lh-resend-gates")
        let port = try ServerProcess.freePort()
        let wf = Workflow("resend") { wf in
            wf.execute("gated", "x", options: TaskOptions(timeoutSeconds: 60))
        }
        let first = try await ServerProcess.start(dataDir: dir, port: port)
        var second: ServerProcess?
        let worker: LiveProcess
        do {
            worker = try await first.startWorker(
                "lh-test-worker", ["gated:gate"],
                environment: ["LH_TEST_GATE_DIR": gates.path, "LHW_TASK_WORKER_ID": "worker-r"],
                ready: "test worker ready")
        } catch {
            first.stop()
            throw error
        }
        defer {
            worker.stop()
            first.stop()
            second?.stop()
        }
        let client = try await first.client()
        _ = try await client.putWfSpec(wf.compile())
        _ = try await client.runWf(
            .with {
                $0.wfSpecName = "resend"; $0.id = "wf-resend"
            })
        // The worker itself says it has the task: the server's TASK_RUNNING
        // alone is not enough, as the push leaves after the commit, and a
        // server killed in between leaves the attempt to its timeout (60 s).
        try await worker.waitFor("gate: wf-resend waiting", timeout: 20)
        #expect(try await client.listTaskRuns("wf-resend").results.first?.attempts.first?.taskWorkerID == "worker-r")
        await client.close()
        first.kill9()
        // The task returns while nothing listens: its report fails and is kept.
        #expect(
            FileManager.default.createFile(atPath: gates.appendingPathComponent("wf-resend").path, contents: Data()))
        try await Task.sleep(for: .milliseconds(500))
        second = try await ServerProcess.start(dataDir: dir, port: port)
        let again = try await second!.client()
        let log = { worker.stdout.withLockedValue { $0 } + worker.stderr.withLockedValue { $0 } }
        do {
            try await eventually("wf-resend COMPLETED", timeout: 20) {
                try await again.getWfRun("wf-resend").status == .completed
            }
        } catch {
            print(
                "worker's log:\n\(log().suffix(4000))\nTaskRuns: \(try await again.listTaskRuns("wf-resend").jsonString())"
            )
            throw error
        }
        let attempts = try #require(try await again.listTaskRuns("wf-resend").results.first).attempts
        #expect(attempts.count == 1, "the first attempt's report, not a retry")
        #expect(attempts.first?.status == .taskSuccess)
        #expect(attempts.first?.output.str == "echo:x")
        #expect(log().contains("reconnecting"), "the worker lost the server and came back: \(log().suffix(2000))")
        await again.close()
    }

    @Test func sleepOfTwoSecondsCompletesOnTimeAcrossARestart() async throws {
        let dir = try ServerProcess.temporaryDirectory("lh-sleep")
        let port = try ServerProcess.freePort()
        let wf = Workflow("nap") { wf in wf.sleepSeconds(2) }
        let first = try await ServerProcess.start(dataDir: dir, port: port)
        do {
            let client = try await first.client()
            _ = try await client.putWfSpec(wf.compile())
            _ = try await client.runWf(
                .with {
                    $0.wfSpecName = "nap"; $0.id = "wf-nap"
                })
            await client.close()
        } catch {
            first.stop()
            throw error
        }
        first.kill9()
        try await withServer(dataDir: dir) { _ in }  // a plain restart in between must not matter
        let second = try await ServerProcess.start(dataDir: dir, port: port)
        defer { second.stop() }
        let client = try await second.client()
        try await eventually("wf-nap COMPLETED", timeout: 10) {
            try await client.getWfRun("wf-nap").status == .completed
        }
        let run = try await client.getWfRun("wf-nap")
        let took = run.endTime.date.timeIntervalSince(run.startTime.date)
        print("SLEEP 2 s across a restart completed after \(took) s")
        #expect(took >= 2 && took < 3.5, "SLEEP of 2 s took \(took) s")
        await client.close()
    }

    @Test func corruptOrNewerDataDirectoryIsRefusedAndLeftUntouched() async throws {
        let dir = try ServerProcess.temporaryDirectory("lh-corrupt")
        let db = dir.appendingPathComponent("lh.sqlite")
        let garbage = Data((0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try garbage.write(to: db)
        let error = await #expect(throws: LHError.self) { _ = try await ServerProcess.start(dataDir: dir) }
        #expect("\(error!)".contains("refusing") || "\(error!)".contains("cannot"), "\(error!)")
        #expect(try Data(contentsOf: db) == garbage, "the file was not overwritten")

        let newer = try ServerProcess.temporaryDirectory("lh-newer")
        try await withServer(dataDir: newer) { _ in }
        let sqlite = Process()
        sqlite.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        sqlite.arguments = [
            "python3", "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"update meta set value='99' where key='format'\"); c.commit()",
            newer.appendingPathComponent("lh.sqlite").path,
        ]
        try sqlite.run()
        sqlite.waitUntilExit()
        let refused = await #expect(throws: LHError.self) { _ = try await ServerProcess.start(dataDir: newer) }
        #expect("\(refused!)".contains("format 99"), "\(refused!)")
    }

    /// A real data file cut short (a copy gone wrong, a full disk outside
    /// SQLite's control): refused at start with a message, never half-read,
    /// and left as it was.
    @Test func aTruncatedDataFileIsRefusedAtStartAndLeftAsItWas() async throws {
        let dir = try ServerProcess.temporaryDirectory("lh-truncated")
        try await withServer(dataDir: dir) { server in
            let client = try await server.client()
            _ = try await client.putExternalEventDef(.with { $0.name = "go" })
            _ = try await client.putWfSpec(
                Workflow("waits") { wf in
                    _ = wf.declare("note", .str, default: .with { $0.str = String(repeating: "x", count: 2000) })
                    wf.waitForEvent("go")
                }.compile())
            for i in 0..<300 {
                _ = try await client.runWf(
                    .with {
                        $0.wfSpecName = "waits"; $0.id = "t-\(i)"
                    })
            }
            await client.close()
        }
        // Stopped gracefully: the WAL is checkpointed into lh.sqlite.
        let db = dir.appendingPathComponent("lh.sqlite")
        for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: db.path + suffix) }
        let whole = try Data(contentsOf: db)
        #expect(whole.count > 256 * 1024, "a database of many pages (\(whole.count) bytes)")
        let cut = whole.prefix(whole.count / 2)
        try cut.write(to: db)
        let error = await #expect(throws: LHError.self) { _ = try await ServerProcess.start(dataDir: dir) }
        let text = "\(error!)"
        #expect(text.contains("exited with 2"), "\(text)")
        #expect(text.contains(db.path) && (text.contains("damaged") || text.contains("cannot")), "\(text)")
        #expect(try Data(contentsOf: db) == cut, "the file was left as it was")
    }

    @Test func aDataDirectoryThatCannotBeMadeIsNamedWithTheReason() async throws {
        let dir = try ServerProcess.temporaryDirectory("lh-notdir")
        let file = dir.appendingPathComponent("plain-file")
        try Data("x".utf8).write(to: file)
        let error = await #expect(throws: LHError.self) {
            _ = try await ServerProcess.start(dataDir: file.appendingPathComponent("data"))
        }
        let text = "\(error!)"
        #expect(text.contains("cannot create the data directory \(file.path)/data: Not a directory"), "\(text)")
        #expect(!FileManager.default.fileExists(atPath: file.appendingPathComponent("data").path))
        #expect(!text.contains("NSCocoaErrorDomain"), "\(text)")
    }

    /// A certificate file that is missing fails before the store is opened
    /// (nothing is made in the data directory); an address in use is named
    /// with the system's reason. Both exit 2 with one `lh-server:` line.
    @Test func unusableTLSFilesAndAnAddressInUseAreNamedWithTheReason() async throws {
        let dir = try ServerProcess.temporaryDirectory("lh-tls-missing")
        let missing = dir.appendingPathComponent("server.pem").path
        let error = await #expect(throws: LHError.self) {
            _ = try await ServerProcess.start(
                arguments: ["--tls-cert", missing, "--tls-key", missing], dataDir: dir.appendingPathComponent("data"))
        }
        let text = "\(error!)"
        #expect(text.contains("exited with 2"), "\(text)")
        #expect(
            text.contains("lh-server: cannot read the TLS certificate \(missing): No such file or directory"), "\(text)"
        )
        #expect(!text.contains("failedToLoadCertificate"), "\(text)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("data/lh.sqlite").path))

        try await withServer { server in
            let taken = await #expect(throws: LHError.self) { _ = try await ServerProcess.start(port: server.port) }
            let text = "\(taken!)"
            #expect(
                text.contains("lh-server: cannot listen on 127.0.0.1:\(server.port): Address already in use"), "\(text)"
            )
            #expect(text.contains("exited with 2"), "\(text)")
        }
    }

    @Test func badInputGetsClearErrorsNamingWhatWasWrong() async throws {
        let wf = Workflow("typed") { wf in
            _ = wf.declare("count", .int, required: true)
            wf.waitForEvent("go")
        }
        try await TestServer.with { server in
            let client = try await server.connectClient()
            _ = try await client.putExternalEventDef(.with { $0.name = "go" })
            _ = try await client.putWfSpec(wf.compile())
            let wrongType = await #expect(throws: LHError.self) {
                _ = try await client.runWf(
                    .with {
                        $0.wfSpecName = "typed"; $0.variables["count"] = .with { $0.str = "many" }
                    })
            }
            #expect(wrongType?.code == .invalidArgument && wrongType?.message.contains("'count'") == true)
            let undeclared = await #expect(throws: LHError.self) {
                _ = try await client.runWf(
                    .with {
                        $0.wfSpecName = "typed"; $0.variables["count"] = .with { $0.int = 1 };
                        $0.variables["nope"] = .with { $0.int = 1 }
                    })
            }
            #expect(undeclared?.code == .invalidArgument && undeclared?.message.contains("'nope'") == true)
            let unknownSpec = await #expect(throws: LHError.self) {
                _ = try await client.runWf(.with { $0.wfSpecName = "ghost" })
            }
            #expect(unknownSpec?.code == .notFound && unknownSpec?.message.contains("'ghost'") == true)
            _ = try await client.runWf(
                .with {
                    $0.wfSpecName = "typed"; $0.id = "once"; $0.variables["count"] = .with { $0.int = 1 }
                })
            let twice = await #expect(throws: LHError.self) {
                _ = try await client.runWf(
                    .with {
                        $0.wfSpecName = "typed"; $0.id = "once"; $0.variables["count"] = .with { $0.int = 1 }
                    })
            }
            #expect(twice?.code == .alreadyExists)
            let missing = await #expect(throws: LHError.self) { _ = try await client.getWfRun("no-such-run") }
            #expect(missing?.code == .notFound && missing?.message.contains("'no-such-run'") == true)
            let badSpec = await #expect(throws: LHError.self) {
                _ = try await client.putWfSpec(Workflow("Bad_Name") { $0.execute("nope") }.compile())
            }
            #expect(badSpec?.code == .invalidArgument)
            // A report for a TaskRun that does not exist: NOT_FOUND, and the server goes on.
            var worker = server.config()
            worker.clientId = "stray-worker"
            let conn = try await LHWireConnection.connect(worker.connectionConfiguration(role: .worker))
            let stray = await #expect(throws: LHError.self) {
                _ = try await conn.request(
                    .reportTask(
                        .with {
                            $0.taskRunID.wfRunID.id = "once"; $0.taskRunID.taskGuid = "no-such-task";
                            $0.status = .taskSuccess
                        }))
            }
            #expect(stray?.code == .notFound)
            await conn.close()
            #expect(try await client.getWfRun("once").status == .running)
            await client.close()
        }
    }
}
