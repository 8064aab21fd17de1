import Foundation
import LHClient
import LHTestKit
import LHWire
import Testing

/// Seed 003's walkthrough across processes: lh-server, the example's worker
/// process, its registration program, and lhctl commands exactly as printed
/// in the seed.
@Suite(.timeLimit(.minutes(3))) struct SeedWalkthroughTests {
    @Test func collectUnderpantsWorksAsPrintedInTheSeed() async throws {
        try await withServer { server in
            let worker = try await server.startWorker("collect-underpants-worker", [], ready: "workers ready")
            try await withProcesses([worker]) {
                let reg = try await server.command("collect-underpants-register", [])
                #expect(reg.status == 0, "register: \(reg.stderr)")
                #expect(reg.stdout.contains("registered WfSpec collect-underpants"))

                let run = try await server.lhctl(
                    "run", "collect-underpants", "--wfRunId", "my-wf", "all-underpants", "[]")
                #expect(run.contains("\"status\": \"RUNNING\""))
                let client = try await server.connectClient()
                // The WfRun waits on done-collecting-underpants.
                try await eventually("my-wf waits for done-collecting-underpants") {
                    try await client.getWfRun("my-wf").threadRuns[0].currentNodePosition == 2
                }

                try await server.lhctl("postEvent", "my-wf", "underpant-collected", "STR", "obiwan")
                try await eventually("the first handler completes") {
                    let wf = try await client.getWfRun("my-wf")
                    return wf.threadRuns.count == 2 && wf.threadRuns[1].status == .completed
                }
                let first = try await server.lhctl("get", "variable", "my-wf", "0", "all-underpants")
                // As the seed prints it, every line, but for the time it was made.
                #expect(Self.withoutCreatedAt(first) == Self.seedsVariable, "lhctl get variable printed:\n\(first)")

                try await server.lhctl("postEvent", "my-wf", "underpant-collected", "STR", "anakin")
                try await server.lhctl("postEvent", "my-wf", "underpant-collected", "STR", "yoda")
                try await eventually("three handler ThreadRuns completed") {
                    let wf = try await client.getWfRun("my-wf")
                    return wf.threadRuns.filter { $0.type == .interrupt && $0.status == .completed }.count == 3
                }
                let grown = try await server.lhctl("get", "variable", "my-wf", "0", "all-underpants")
                #expect(grown.contains(#""jsonArr": "[\"obiwan\",\"anakin\",\"yoda\"]""#), "printed: \(grown)")

                try await server.lhctl("postEvent", "my-wf", "done-collecting-underpants", "STR", "done!")
                try await eventually("my-wf COMPLETED") { try await client.getWfRun("my-wf").status == .completed }
                let tasks = try await client.listTaskRuns("my-wf").results
                let profit = try #require(tasks.first { $0.taskDefID.name == "profit" })
                #expect(profit.inputVariables.first?.value.jsonArr == #"["obiwan","anakin","yoda"]"#)
                #expect(profit.attempts.last?.output.str == "Collected 3 underpants!")
                #expect(tasks.filter { $0.taskDefID.name == "collect-underpant" }.count == 3)
                await client.close()
            }
        }
    }

    /// Seed 003's output of `lhctl get variable my-wf 0 all-underpants`,
    /// its `createdAt` taken out.
    static let seedsVariable = #"""
        {
          "id": {
            "wfRunId": {
              "id": "my-wf"
            },
            "threadRunNumber": 0,
            "name": "all-underpants"
          },
          "value": {
            "jsonArr": "[\"obiwan\"]"
          },
          "createdAt": "…",
          "wfSpecId": {
            "name": "collect-underpants",
            "majorVersion": 0,
            "revision": 0
          },
          "masked": false
        }
        """#

    static func withoutCreatedAt(_ printed: String) -> String {
        printed.trimmingCharacters(in: .whitespacesAndNewlines)
            .replacingOccurrences(of: #""createdAt": "[^"]*""#, with: #""createdAt": "…""#, options: .regularExpression)
    }

    /// In docker compose the register program and the worker start
    /// together: the register waits for the TaskDefs the worker registers,
    /// saying so, instead of failing the WfSpec.
    @Test func theRegisterWaitsForTheTaskDefsOfAWorkerThatStartsLater() async throws {
        try await TestServer.with { server in
            let reg = try LiveProcess("collect-underpants-register", [], environment: server.clientEnvironment())
            try await withProcesses([reg]) {
                try await eventually("the register says what it waits for") {
                    reg.stderr.withLockedValue {
                        $0.contains("waiting for TaskDef(s) collect-underpant, profit, start-underpants-collection")
                    }
                }
                #expect(reg.process.isRunning)
                let worker = try await server.startWorker("collect-underpants-worker", [], ready: "workers ready")
                try await withProcesses([worker]) {
                    try await reg.waitFor("registered WfSpec collect-underpants")
                    reg.process.waitUntilExit()
                    #expect(reg.process.terminationStatus == 0, "register: \(reg.stderr.withLockedValue { $0 })")
                }
            }
        }
    }

    /// Without a server the register fails with one line naming the
    /// problem and a non-zero exit, not a crash.
    @Test func theRegisterWithoutAServerFailsWithAnError() async throws {
        try await TestServer.with { server in
            let env = server.clientEnvironment(["LHC_API_PORT": "1"])
            let reg = try LiveProcess("collect-underpants-register", [], environment: env)
            try await withProcesses([reg]) {
                try await eventually("the register exits") { !reg.process.isRunning }
                let stderr = reg.stderr.withLockedValue { $0 }
                #expect(reg.process.terminationStatus == 1, "exit \(reg.process.terminationStatus): \(stderr)")
                #expect(reg.process.terminationReason == .exit)
                #expect(stderr.hasPrefix("collect-underpants-register: "), "stderr: \(stderr)")
                #expect(!stderr.contains("Fatal error"))
            }
        }
    }
}
