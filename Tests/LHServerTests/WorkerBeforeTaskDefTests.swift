import Foundation
import LHClient
import LHTestKit
import LHWire
import LHWorker
import LHWorkflow
import Logging
import NIOConcurrencyHelpers
import Testing

/// A worker started before anyone registered its TaskDef says so (not
/// "connection lost"), keeps trying, and serves once the TaskDef exists.
@Suite(.timeLimit(.minutes(2))) struct WorkerBeforeTaskDefTests {
    /// Keeps the messages logged at warning and above.
    struct Recording: LogHandler {
        let lines: NIOLockedValueBox<[String]>
        var logLevel: Logger.Level = .warning
        var metadata: Logger.Metadata = [:]
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let error = event.metadata?["lh.error"].map { " [\($0)]" } ?? ""
            lines.withLockedValue { $0.append("\(event.message)\(error)") }
        }
    }

    /// A worker of `taskDef` answering "done:INPUT", logging into `lines`.
    static func worker(_ config: LHConfig, taskDef: String, lines: NIOLockedValueBox<[String]>) -> LHTaskWorker {
        LHTaskWorker(
            config: config, taskDefName: taskDef, inputs: ["input"], inputTypes: [.str], outputType: .str,
            logger: Logger(label: "test.\(taskDef)") { _ in Recording(lines: lines) }
        ) { _, values in
            .with { $0.str = "done:\(values.first?.str ?? "")" }
        }
    }

    /// Runs a one-task WfSpec of `taskDef` with `input` and waits until the
    /// worker's output is the TaskRun's.
    static func expectServed(_ client: LittleHorseClient, taskDef: String, input: String) async throws {
        _ = try await client.putWfSpec(Workflow("\(taskDef)-wf") { wf in wf.execute(taskDef, input) }.compile())
        _ = try await client.runWf(
            .with {
                $0.wfSpecName = "\(taskDef)-wf"; $0.id = "\(taskDef)-1"
            })
        try await eventually("the WfRun completes with the worker's output", timeout: 30) {
            let wfRun = try await client.getWfRun("\(taskDef)-1")
            let tasks = try await client.listTaskRuns("\(taskDef)-1").results
            return wfRun.status == .completed && tasks.first?.attempts.last?.output.str == "done:\(input)"
        }
    }

    @Test func aWorkerWhoseTaskDefIsNotRegisteredYetSaysSoAndServesOnceItIs() async throws {
        try await TestServer.with { server in
            let lines = NIOLockedValueBox<[String]>([])
            let worker = Self.worker(server.config(), taskDef: "later", lines: lines)
            let running = Task { try await worker.run() }
            defer { running.cancel() }
            try await eventually("the worker says the TaskDef is missing") {
                lines.withLockedValue { $0.contains { $0.hasPrefix("the server has no TaskDef of this name") } }
            }
            #expect(
                !lines.withLockedValue { $0.contains { $0.contains("connection to the server lost") } },
                "\(lines.withLockedValue { $0 })")

            let client = try await server.connectClient()
            _ = try await client.putTaskDef(worker.putTaskDefRequest)
            try await Self.expectServed(client, taskDef: "later", input: "x")
            await client.close()
        }
    }

    /// A worker whose CA file is not there yet (a container started before
    /// the server made its development CA) says it cannot connect, naming
    /// the file and the reason, keeps trying, and serves once the file is.
    @Test func aWorkerWhoseCAFileIsMissingNamesItAndServesOnceItAppears() async throws {
        try await TestServer.with { server in
            let lines = NIOLockedValueBox<[String]>([])
            let ca = try ServerProcess.temporaryDirectory("lh-late-ca").appendingPathComponent("ca.pem")
            let worker = Self.worker(server.config(caPath: ca.path), taskDef: "late-ca", lines: lines)
            let client = try await server.connectClient()
            _ = try await client.putTaskDef(worker.putTaskDefRequest)
            let running = Task { try await worker.run() }
            defer { running.cancel() }
            try await eventually("the worker names the missing CA file") {
                lines.withLockedValue {
                    $0.contains {
                        $0.hasPrefix("cannot connect to the server; trying again")
                            && $0.contains("\(ca.path) (LHC_CA_CERT): No such file or directory")
                    }
                }
            }
            #expect(
                !lines.withLockedValue {
                    $0.contains {
                        $0.contains("connection to the server lost") || $0.contains("failedToLoadCertificate")
                    }
                }, "\(lines.withLockedValue { $0 })")

            try FileManager.default.copyItem(atPath: server.caPath!, toPath: ca.path)
            try await Self.expectServed(client, taskDef: "late-ca", input: "y")
            await client.close()
        }
    }
}
