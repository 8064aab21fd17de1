import Foundation
import LHClient
import LHTestKit
import LHWire
import LHWireProto
import LHWorkflow
import Testing

/// Workers that report what they should not: an attempt another worker
/// holds (refused, naming both), a TaskRun of no WfRun (not found), a
/// report repeated after the attempt is over (changes nothing). The real
/// worker's task is untouched by all of it.
@Suite(.timeLimit(.minutes(3))) struct HostileWorkerTests {
    @Test func aReportForAnAttemptAnotherWorkerHoldsIsRefusedAndChangesNothing() async throws {
        let gates = try ServerProcess.temporaryDirectory("gates")
        try await TestServer.with { server in
            let worker = try await server.startWorker(
                "lh-test-worker", ["held:gate"],
                environment: ["LH_TEST_GATE_DIR": gates.path, "LHW_TASK_WORKER_ID": "owner"],
                ready: "test worker ready")
            try await withProcesses([worker]) {
                let client = try await server.connect()
                _ = try await client.putWfSpec(Workflow("held") { $0.execute("held", "x") }.compile())
                _ = try await client.runWf(
                    .with {
                        $0.wfSpecName = "held"; $0.id = "h1"
                    })
                try await eventually("the owner holds the task") {
                    try await client.listTaskRuns("h1").results.first?.status == .taskRunning
                }
                let guid = try #require(try await client.listTaskRuns("h1").results.first?.id.taskGuid)

                // An intruder: a worker of another id, subscribed to the same TaskDef.
                let raw = try await RawClient.connect(port: server.port, caPath: server.caPath)
                var hello = RawClient.hello()
                hello.hello.role = .worker
                hello.hello.clientID = "intruder"
                try await raw.send(hello)
                try await raw.send(
                    Lhwire_Envelope(
                        id: 2,
                        .subscribe(
                            .with {
                                $0.taskDefID.name = "held"; $0.taskWorkerID = "intruder"; $0.capacity = 1
                            })))
                // Subscribed (answered) before it reports: a connection that
                // has not subscribed is not checked (a worker back after a
                // reconnection sends its kept reports first).
                try await eventually("the subscribe is answered") {
                    try raw.frames().contains { $0.id == 2 && $0.kind == .empty(.init()) }
                }
                func report(_ id: UInt64, wfRun: String, guid: String, output: String) async throws -> Lhwire_Envelope {
                    try await raw.send(
                        Lhwire_Envelope(
                            id: id,
                            .reportTask(
                                .with {
                                    $0.taskRunID.wfRunID.id = wfRun
                                    $0.taskRunID.taskGuid = guid
                                    $0.attemptNumber = 0
                                    $0.status = .taskSuccess
                                    $0.output.str = output
                                })))
                    var answer: Lhwire_Envelope?
                    try await eventually("an answer to request \(id)") {
                        answer = try raw.frames().first { $0.id == id }
                        return answer != nil
                    }
                    return answer!
                }
                let stolen = try await report(3, wfRun: "h1", guid: guid, output: "stolen")
                #expect(stolen.error.code == .failedPrecondition, "\(stolen)")
                #expect(
                    stolen.error.message.contains("held by worker 'owner', not 'intruder'"), "\(stolen.error.message)")
                let attempt = try #require(
                    try await client.getTaskRun(
                        .with {
                            $0.wfRunID.id = "h1"; $0.taskGuid = guid
                        }
                    ).attempts.first)
                #expect(attempt.status == .taskRunning, "the owner still holds it")

                let nowhere = try await report(4, wfRun: "no-such-wf", guid: guid, output: "x")
                #expect(nowhere.error.code == .notFound, "\(nowhere)")

                // The owner finishes; the intruder's late report changes nothing.
                #expect(
                    FileManager.default.createFile(atPath: gates.appendingPathComponent("h1").path, contents: Data()))
                try await eventually("h1 COMPLETED") { try await client.getWfRun("h1").status == .completed }
                let late = try await report(5, wfRun: "h1", guid: guid, output: "late")
                #expect(
                    late.kind == .empty(.init()),
                    "a report for an attempt that is over is accepted and ignored: \(late)")
                let done = try await client.getTaskRun(
                    .with {
                        $0.wfRunID.id = "h1"; $0.taskGuid = guid
                    })
                #expect(done.attempts.count == 1)
                #expect(done.attempts[0].output.str == "echo:x")
                #expect(done.attempts[0].taskWorkerID == "owner")
                await raw.close()
                await client.close()
            }
        }
    }
    /// A worker that takes a task and never reports (alive and connected):
    /// the attempt times out and is retried elsewhere; the silent worker's
    /// room stays taken by the task it still runs, so it is given nothing
    /// more, and the WfRun completes on another worker. (Three retries: on a
    /// machine loaded by the whole suite the good worker's own 2 s window can
    /// pass before its report is committed; such an attempt is the good
    /// worker's too, never the silent one's.)
    @Test func aWorkerThatNeverReportsHasItsAttemptTimedOutAndRetriedElsewhere() async throws {
        try await TestServer.with { server in
            let silent = try await server.startWorker(
                "lh-test-worker", ["held:hang"],
                environment: ["LHW_TASK_WORKER_ID": "silent", "LHW_NUM_WORKER_THREADS": "1"],
                ready: "test worker ready")
            var good: LiveProcess?
            defer { good?.stop() }
            try await withProcesses([silent]) {
                let client = try await server.connect()
                defer { Task { await client.close() } }
                _ = try await client.putWfSpec(
                    Workflow("never") { wf in
                        wf.execute("held", "x", options: TaskOptions(retries: 3, timeoutSeconds: 2))
                    }.compile())
                _ = try await client.runWf(
                    .with {
                        $0.wfSpecName = "never"; $0.id = "n1"
                    })
                try await eventually("attempt 0 timed out and attempt 1 waits", timeout: 20) {
                    let attempts = try await client.listTaskRuns("n1").results.first?.attempts ?? []
                    return attempts.count == 2 && attempts[0].status == .taskTimeout
                }
                let t0 = Date()
                func step(_ what: String) {
                    print("[live] never-reports: \(what) at \(Date().timeIntervalSince(t0)) s")
                }
                step("attempt 0 timed out")
                try await Task.sleep(for: .seconds(1))
                let waiting = try #require(try await client.listTaskRuns("n1").results.first).attempts
                #expect(waiting[1].status == .taskScheduled, "not handed to the silent worker: it has no room")
                good = try await server.startWorker(
                    "lh-test-worker", ["held:echo"], environment: ["LHW_TASK_WORKER_ID": "good"],
                    ready: "test worker ready")
                step("good worker ready")
                do {
                    try await eventually("n1 COMPLETED", timeout: 20) {
                        try await client.getWfRun("n1").status == .completed
                    }
                } catch {
                    let seen = try await client.listTaskRuns("n1").results.first?.attempts ?? []
                    step("not COMPLETED; attempts \(seen.map { "\($0.taskWorkerID) \($0.status)" })")
                    throw error
                }
                step("n1 COMPLETED")
                let attempts = try #require(try await client.listTaskRuns("n1").results.first).attempts
                if attempts.count > 2 { step("the good worker's own window passed \(attempts.count - 2) time(s)") }
                #expect(attempts.first?.taskWorkerID == "silent")
                #expect(attempts.first?.status == .taskTimeout)
                #expect(attempts.dropFirst().allSatisfy { $0.taskWorkerID == "good" }, "the silent worker got more")
                #expect(attempts.last?.status == .taskSuccess)
                #expect(attempts.dropFirst().dropLast().allSatisfy { $0.status == .taskTimeout })
            }
        }
    }
}
