import Foundation
import LHClient
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

    @Test func aWorkerWhoseTaskDefIsNotRegisteredYetSaysSoAndServesOnceItIs() async throws {
        try await withServer { server in
            let lines = NIOLockedValueBox<[String]>([])
            let worker = LHTaskWorker(config: server.config(), taskDefName: "later", inputs: ["input"], inputTypes: [.str], outputType: .str,
                                      logger: Logger(label: "test.later") { _ in Recording(lines: lines) }) { _, values in
                .with { $0.str = "done:\(values.first?.str ?? "")" }
            }
            let running = Task { try await worker.run() }
            defer { running.cancel() }
            try await eventually("the worker says the TaskDef is missing") {
                lines.withLockedValue { $0.contains { $0.hasPrefix("the server has no TaskDef of this name") } }
            }
            #expect(!lines.withLockedValue { $0.contains { $0.contains("connection to the server lost") } }, "\(lines.withLockedValue { $0 })")

            let client = try await server.client()
            _ = try await client.putTaskDef(worker.putTaskDefRequest)
            _ = try await client.putWfSpec(Workflow("later-wf") { wf in wf.execute("later", "x") }.compile())
            _ = try await client.runWf(.with { $0.wfSpecName = "later-wf"; $0.id = "later-1" })
            try await eventually("the WfRun completes with the worker's output", timeout: 30) {
                let wfRun = try await client.getWfRun("later-1")
                let tasks = try await client.listTaskRuns("later-1").results
                return wfRun.status == .completed && tasks.first?.attempts.last?.output.str == "done:x"
            }
            await client.close()
        }
    }

    /// A worker whose CA file is not there yet (a container started before
    /// the server made its development CA) says it cannot connect, naming
    /// the file and the reason, keeps trying, and serves once the file is.
    @Test func aWorkerWhoseCAFileIsMissingNamesItAndServesOnceItAppears() async throws {
        try await withServer { server in
            let lines = NIOLockedValueBox<[String]>([])
            let ca = try ServerProcess.temporaryDirectory("lh-late-ca").appendingPathComponent("ca.pem")
            let worker = LHTaskWorker(config: server.config(caPath: ca.path), taskDefName: "late-ca", inputs: ["input"], inputTypes: [.str],
                                      outputType: .str, logger: Logger(label: "test.late-ca") { _ in Recording(lines: lines) }) { _, values in
                .with { $0.str = "done:\(values.first?.str ?? "")" }
            }
            let client = try await server.client()
            _ = try await client.putTaskDef(worker.putTaskDefRequest)
            let running = Task { try await worker.run() }
            defer { running.cancel() }
            try await eventually("the worker names the missing CA file") {
                lines.withLockedValue { $0.contains { $0.hasPrefix("cannot connect to the server; trying again") && $0.contains("\(ca.path) (LHC_CA_CERT): No such file or directory") } }
            }
            #expect(!lines.withLockedValue { $0.contains { $0.contains("connection to the server lost") || $0.contains("failedToLoadCertificate") } }, "\(lines.withLockedValue { $0 })")

            try FileManager.default.copyItem(atPath: server.caPath!, toPath: ca.path)
            _ = try await client.putWfSpec(Workflow("late-ca-wf") { wf in wf.execute("late-ca", "y") }.compile())
            _ = try await client.runWf(.with { $0.wfSpecName = "late-ca-wf"; $0.id = "late-ca-1" })
            try await eventually("the WfRun completes with the worker's output", timeout: 30) {
                let wfRun = try await client.getWfRun("late-ca-1")
                let tasks = try await client.listTaskRuns("late-ca-1").results
                return wfRun.status == .completed && tasks.first?.attempts.last?.output.str == "done:y"
            }
            await client.close()
        }
    }
}
