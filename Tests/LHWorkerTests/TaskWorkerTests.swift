import Foundation
import LHProto
import Synchronization
import Testing

@testable import LHWorker

struct Parcel: Codable, Equatable, LHTaskValue {
    var owner: String
    var count: Int
}

/// The worker SDK without a server: closures' types become the TaskDef,
/// results and errors become reports.
@Suite struct TaskWorkerTests {
    let config = LHConfig(clientId: "unit")

    func task(_ inputs: [Littlehorse_VariableValue], attempt: Int32 = 0) -> Littlehorse_ScheduledTask {
        .with { t in
            t.taskRunID.wfRunID.id = "wf-1"
            t.taskRunID.taskGuid = "0-1-t"
            t.attemptNumber = attempt
            t.variables = inputs.enumerated().map { i, v in
                .with {
                    $0.varName = "arg\(i)"; $0.value = v
                }
            }
        }
    }

    @Test func taskDefComesFromTheClosuresTypes() {
        let worker = LHTaskWorker(config: config, taskDefName: "ship", inputs: ["owner", "count", "parcel", "tags"]) {
            (owner: String, count: Int, parcel: Parcel, tags: [String]) async throws -> Double in 1.5
        }
        let r = worker.putTaskDefRequest
        #expect(r.name == "ship")
        #expect(r.inputVars.map(\.name) == ["owner", "count", "parcel", "tags"])
        #expect(r.inputVars.map(\.typeDef.primitiveType) == [.str, .int, .jsonObj, .jsonArr])
        #expect(r.returnType.returnType.primitiveType == .double)
        let void = LHTaskWorker(config: config, taskDefName: "noop") { () async throws -> Void in }
        #expect(!void.putTaskDefRequest.returnType.hasReturnType)
    }

    @Test func successReportsTheOutputAndTheContextsLog() async {
        let worker = LHTaskWorker(config: config, taskDefName: "greet", inputs: ["who"]) {
            (ctx: WorkerContext, who: String) async throws -> String in
            ctx.log("greeting \(who), key \(ctx.idempotencyKey), attempt \(ctx.attemptNumber)")
            return "hello \(who)"
        }
        let report = await worker.execute(task([.with { $0.str = "yoda" }], attempt: 2))
        #expect(report.status == .taskSuccess)
        #expect(report.output.str == "hello yoda")
        #expect(report.attemptNumber == 2)
        #expect(report.logOutput.str == "greeting yoda, key wf-1/0-1-t, attempt 2")
    }

    @Test func codableValuesTravelAsJSON() async {
        let worker = LHTaskWorker(config: config, taskDefName: "count", inputs: ["parcel"]) {
            (p: Parcel) async throws -> [String] in
            Array(repeating: p.owner, count: p.count)
        }
        let report = await worker.execute(task([.with { $0.jsonObj = #"{"owner":"obiwan","count":2}"# }]))
        #expect(report.status == .taskSuccess)
        #expect(report.output.jsonArr == #"["obiwan","obiwan"]"#)
    }

    @Test func lhTaskExceptionReportsATaskExceptionWithItsName() async {
        let worker = LHTaskWorker(config: config, taskDefName: "pay", inputs: ["amount"]) {
            (amount: Int) async throws -> Void in
            throw LHTaskException(name: "card-declined", message: "declined \(amount)", content: amount)
        }
        let report = await worker.execute(task([.with { $0.int = 7 }]))
        #expect(report.status == .taskException)
        #expect(report.exception.name == "card-declined")
        #expect(report.exception.message == "declined 7")
        #expect(report.exception.content.int == 7)
    }

    @Test func otherErrorsReportTaskFailed() async {
        struct Boom: Error {}
        let worker = LHTaskWorker(config: config, taskDefName: "boom") { () async throws -> String in throw Boom() }
        let report = await worker.execute(task([]))
        #expect(report.status == .taskFailed)
        #expect(report.error.message.contains("Boom"))
    }

    @Test func inputsThatDoNotConvertReportInputVarSubError() async {
        let worker = LHTaskWorker(config: config, taskDefName: "add", inputs: ["n"]) { (n: Int) async throws -> Int in
            n + 1
        }
        let report = await worker.execute(task([.with { $0.bool = true }]))
        #expect(report.status == .taskInputVarSubError)
        #expect(report.error.message.contains("'n'"))
        let missing = await worker.execute(task([]))
        #expect(missing.status == .taskInputVarSubError)
    }

    @Test func configReadsLittleHorsesVariablesAndNamesBadOnes() throws {
        let c = try LHConfig.fromEnvironment(
            [
                "LHC_API_HOST": "h", "LHC_API_PORT": "2024", "LHC_API_PROTOCOL": "PLAINTEXT",
                "LHC_CA_CERT": "/ca.pem", "LHC_CLIENT_ID": "me", "LHW_TASK_WORKER_ID": "w",
                "LHW_NUM_WORKER_THREADS": "3",
            ],
            configFile: "/nonexistent")
        #expect(c.apiHost == "h" && c.apiPort == 2024 && c.apiProtocol == .plaintext && c.caCertPath == "/ca.pem")
        #expect(c.clientId == "me" && c.taskWorkerId == "w" && c.numWorkerThreads == 3)
        let bad = #expect(throws: LHError.self) {
            try LHConfig.fromEnvironment(["LHC_API_PORT": "many"], configFile: "/nonexistent")
        }
        #expect(bad?.message.contains("LHC_API_PORT") == true)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("littlehorse-\(UUID()).config")
        try "LHC_API_HOST=from-file\nLHC_API_PORT=2025\n".write(to: file, atomically: true, encoding: .utf8)
        let fromFile = try LHConfig.fromEnvironment(["LHC_API_PORT": "2026"], configFile: file.path)
        #expect(fromFile.apiHost == "from-file" && fromFile.apiPort == 2026, "the environment wins over the file")
    }
}

/// The tasks of one connection: each counts until its report is settled,
/// which may be after its task returned (the answer comes on the event loop).
@Suite struct RunningTasksTests {
    @Test func settledWaitsForEveryReportToBeSettledNotOnlyForTheTasks() async throws {
        let running = RunningTasks()
        let later = Mutex<[@Sendable () -> Void]>([])
        for _ in 0..<3 {
            // The task returns at once; its report is settled later, elsewhere.
            running.start { settled in later.withLock { $0.append(settled) } }
        }
        while later.withLock({ $0.count }) < 3 { try await Task.sleep(for: .milliseconds(1)) }
        let done = Mutex(false)
        let waiter = Task {
            await running.settled()
            done.withLock { $0 = true }
        }
        try await Task.sleep(for: .milliseconds(50))
        #expect(!done.withLock { $0 }, "settled() returned with three reports unsettled")
        let settles = later.withLock { $0 }
        settles[0]()
        settles[1]()
        try await Task.sleep(for: .milliseconds(20))
        #expect(!done.withLock { $0 }, "settled() returned with one report unsettled")
        settles[2]()
        await waiter.value
        #expect(done.withLock { $0 })
    }

    @Test func cancelAllCancelsRunningTasksAndThoseStartedAfter() async throws {
        let running = RunningTasks()
        let cancelled = Mutex(0)
        let body: @Sendable (@escaping @Sendable () -> Void) async -> Void = { settled in
            while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(1)) }
            cancelled.withLock { $0 += 1 }
            settled()
        }
        running.start(body)
        running.start(body)
        running.cancelAll()
        running.start(body)
        await running.settled()
        #expect(cancelled.withLock { $0 } == 3)
    }
}
