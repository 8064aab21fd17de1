import Foundation
import LHClient
import LHProto
import LHWorkflow
import Testing

@testable import LHServer

/// TaskRuns in workers' hands when the server dies (issue 27, item 3): a
/// worker back after the restart claims what it still holds and reports
/// it; what nobody claims is retried at once, not after its attempt
/// timeout (60 s here). Real lh-server and worker processes, kill -9.
@Suite(.serialized, .timeLimit(.minutes(3))) struct RestartClaimTests {
    static var workflow: Workflow {
        Workflow("held") { wf in
            wf.execute("held-step", "x", options: TaskOptions(retries: 1, timeoutSeconds: 60))
        }
    }

    /// A server on `dir` and `port` (0: a free one), with a claim grace.
    static func server(_ dir: URL, port: Int = 0, grace: Double) async throws -> ServerProcess {
        try await ServerProcess.start(arguments: ["--claim-grace", "\(grace)"], dataDir: dir, port: port)
    }

    /// Runs WfRun `id` until worker `worker` holds its TaskRun (the gate
    /// behaviour prints when it starts).
    static func runUntilHeld(_ server: ServerProcess, _ worker: LiveProcess, id: String) async throws {
        let client = try await server.client()
        defer { Task { await client.close() } }
        _ = try await client.putWfSpec(workflow.compile())
        _ = try await client.runWf(
            .with {
                $0.wfSpecName = "held"; $0.id = id
            })
        try await worker.waitFor("gate: \(id) waiting", timeout: 30)
    }

    static func attempts(_ server: ServerProcess, _ id: String) async throws -> [Littlehorse_TaskAttempt] {
        let client = try await server.client()
        defer { Task { await client.close() } }
        return try await client.listTaskRuns(id).results.first?.attempts ?? []
    }

    @Test func aWorkerBackAfterARestartClaimsItsTaskAndItsReportCountsWithNoRetry() async throws {
        let dir = try ServerProcess.temporaryDirectory("lh-claims")
        let gates = try ServerProcess.temporaryDirectory("gates")
        let first = try await Self.server(dir, grace: 2)
        let port = first.port
        var restarted: ServerProcess?
        let worker = try await first.startWorker(
            "lh-test-worker", ["held-step:gate"], environment: ["LH_TEST_GATE_DIR": gates.path],
            ready: "test worker ready")
        defer {
            worker.stop()
            first.stop()
            restarted?.stop()
        }
        try await Self.runUntilHeld(first, worker, id: "kept")
        first.kill9()
        let second = try await Self.server(dir, port: port, grace: 2)
        restarted = second
        // The worker reconnects and subscribes listing the task; the grace
        // passes; only then does the task finish.
        try await eventually("the worker subscribed again", timeout: 20) {
            let log = worker.stderr.withLockedValue { $0 } + worker.stdout.withLockedValue { $0 }
            return log.components(separatedBy: "subscribed").count - 1 >= 2
        }
        try await Task.sleep(for: .seconds(3))
        #expect(
            try await Self.attempts(second, "kept").map(\.status) == [.taskRunning],
            "claimed: not retried after the grace")
        _ = FileManager.default.createFile(atPath: gates.appendingPathComponent("kept").path, contents: Data())
        let client = try await second.client()
        defer { Task { await client.close() } }
        try await eventually("WfRun 'kept' COMPLETED", timeout: 20) {
            try await client.getWfRun("kept").status == .completed
        }
        let attempts = try await Self.attempts(second, "kept")
        #expect(attempts.map(\.status) == [.taskSuccess], "one attempt, reported across the restart")
    }

    /// A gate worker holds WfRun `id`'s task; the server and that worker are
    /// killed -9; the server restarts with `grace` and an echo worker (with
    /// `environment`) starts. Returns the seconds from the restart until the
    /// WfRun completed, and its TaskRun's attempts.
    static func recoveryAfterTheHolderDied(
        id: String, grace: Double, environment: [String: String] = [:]
    ) async throws -> (seconds: Double, attempts: [Littlehorse_TaskAttempt]) {
        let dir = try ServerProcess.temporaryDirectory("lh-claims")
        let gates = try ServerProcess.temporaryDirectory("gates")
        let first = try await server(dir, grace: grace)
        var restarted: ServerProcess?
        var second: LiveProcess?
        let worker = try await first.startWorker(
            "lh-test-worker", ["held-step:gate"],
            environment: environment.merging(["LH_TEST_GATE_DIR": gates.path]) { a, _ in a },
            ready: "test worker ready")
        defer {
            worker.stop()
            second?.stop()
            first.stop()
            restarted?.stop()
        }
        try await runUntilHeld(first, worker, id: id)
        first.kill9()
        worker.kill9()
        let server = try await server(dir, port: first.port, grace: grace)
        restarted = server
        let started = Date()
        second = try await server.startWorker(
            "lh-test-worker", ["held-step:echo"], environment: environment, ready: "test worker ready")
        let client = try await server.client()
        defer { Task { await client.close() } }
        try await eventually("WfRun '\(id)' COMPLETED", timeout: 30) {
            try await client.getWfRun(id).status == .completed
        }
        return (Date().timeIntervalSince(started), try await attempts(server, id))
    }

    @Test func anAttemptWhoseWorkerDiedWithTheServerIsRetriedAfterTheGraceNotTheTimeout() async throws {
        let (recovery, attempts) = try await Self.recoveryAfterTheHolderDied(id: "orphan", grace: 2)
        print("restart claims: an unclaimed attempt ran again \(String(format: "%.2f", recovery)) s after the restart")
        #expect(recovery < 20, "retried after the 2 s grace, not the 60 s attempt timeout")
        #expect(attempts.map(\.status) == [.taskTimeout, .taskSuccess])
        #expect(attempts.first?.error.message.contains("no worker claimed it within 2 s") == true)
    }

    @Test func aHolderBackWithoutItsTaskHasItRetriedAtOnceEvenWithALongGrace() async throws {
        // The same worker id, started afresh after the crash: it holds nothing.
        let (recovery, attempts) = try await Self.recoveryAfterTheHolderDied(
            id: "forgotten", grace: 120, environment: ["LHW_TASK_WORKER_ID": "the-holder"])
        print("restart claims: a holder back without its task: ran again after \(String(format: "%.2f", recovery)) s")
        #expect(recovery < 20, "neither the 120 s grace nor the 60 s timeout")
        #expect(attempts.map(\.status) == [.taskTimeout, .taskSuccess])
        #expect(attempts.first?.error.message.contains("came back without it") == true)
    }
}

/// The claim rules alone.
@Suite struct RestartClaimsRules {
    static func attempt(_ wf: String, worker: String, def: String = "t") -> RestartClaims.Attempt {
        .init(wfRunId: wf, guid: "g", attempt: 0, workerId: worker, taskDef: def)
    }

    @Test func aHolderLosesWhatItDoesNotListAndKeepsWhatItDoes() {
        let claims = RestartClaims(
            [Self.attempt("a", worker: "w"), Self.attempt("b", worker: "w"), Self.attempt("c", worker: "v")], grace: 5)
        let lost = claims.claim(workerId: "w", taskDef: "t", held: [("a", "g", 0)])
        #expect(lost.map(\.wfRunId) == ["b"])
        #expect(
            claims.claim(workerId: "w", taskDef: "t", held: []).isEmpty,
            "claimed once: a second subscribe loses nothing")
        #expect(claims.expire().map(\.wfRunId) == ["c"], "what nobody claimed is lost at the end of the grace")
        #expect(claims.expire().isEmpty)
        #expect(!claims.isOpen)
    }

    @Test func anotherTaskDefOfTheSameWorkerOrAPollerKeepsItsAttempts() {
        let claims = RestartClaims(
            [
                Self.attempt("a", worker: "w", def: "t"), Self.attempt("b", worker: "w", def: "u"),
                Self.attempt("c", worker: "p"),
            ], grace: 5)
        #expect(claims.claim(workerId: "w", taskDef: "t", held: []).map(\.wfRunId) == ["a"])
        claims.pollerSeen(workerId: "p", taskDef: "t")
        #expect(claims.expire().map(\.wfRunId) == ["b"], "the poller's attempt is left to its timeout")
    }

    @Test func anAttemptListedByAnotherWorkerIsClaimed() {
        let claims = RestartClaims([Self.attempt("a", worker: "w")], grace: 5)
        #expect(claims.claim(workerId: "v", taskDef: "t", held: [("a", "g", 0)]).isEmpty)
        #expect(claims.expire().isEmpty)
    }

    @Test func noAttemptsMeansNoGrace() {
        let claims = RestartClaims([], grace: 5)
        #expect(!claims.isOpen)
    }
}
