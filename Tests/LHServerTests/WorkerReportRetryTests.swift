import Foundation
import LHClient
import LHWire
import LHWireProto
import LHWorker
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// The worker SDK against a scripted peer over the real wire (TLS, frames,
/// hello): a report the server refuses while the connection stays up (its
/// storage failed, say) is sent again on that connection; it is not parked
/// until a reconnect that may never come.
@Suite struct WorkerReportRetryTests {
    struct Seen {
        var connections = 0
        var reports: [Littlehorse_ReportTaskRun] = []
    }

    @Test func aReportRefusedAsUnavailableIsSentAgainOnTheSameConnection() async throws {
        let seen = NIOLockedValueBox(Seen())
        let task = Littlehorse_ScheduledTask.with { t in
            t.taskRunID.wfRunID.id = "wf-retry"
            t.taskRunID.taskGuid = "0-1-t"
            t.taskDefID.name = "retry-me"
            t.variables = [
                .with {
                    $0.varName = "input"; $0.value.str = "x"
                }
            ]
        }
        // Subscribes the worker and pushes it the task; answers the first
        // report as a server whose group commit failed answers it, and
        // accepts the ones after it.
        let peer = try await ScriptedPeers.bind(
            "report-retry", accepted: { seen.withLockedValue { $0.connections += 1 } }
        ) { request in
            switch request.kind {
            case .subscribe:
                return [Lhwire_Envelope(id: request.id, .empty(.init())), Lhwire_Envelope(id: 0, .scheduledTask(task))]
            case .reportTask(let report):
                let n = seen.withLockedValue {
                    $0.reports.append(report); return $0.reports.count
                }
                return [
                    Lhwire_Envelope(
                        id: request.id,
                        n == 1
                            ? .error(LHError(.unavailable, "storage failed; the command was not applied").wire)
                            : .empty(.init()))
                ]
            default:
                return []  // hello and heartbeats
            }
        }
        defer { peer.listener.channel.close(promise: nil) }
        var config = LHConfig(clientId: "retry-test")
        config.apiHost = "127.0.0.1"
        config.apiPort = peer.port
        config.caCertPath = peer.caPath
        config.taskWorkerId = "worker-retry"
        let worker = LHTaskWorker(config: config, taskDefName: "retry-me", inputs: ["input"]) {
            (input: String) async throws -> String in
            "echo:\(input)"
        }
        let running = Task { try await worker.run() }
        defer { running.cancel() }
        try await eventually("the refused report is sent again", timeout: 30) {
            seen.withLockedValue { $0.reports.count } >= 2
        }
        let (connections, reports) = seen.withLockedValue { ($0.connections, $0.reports) }
        #expect(connections == 1, "sent again on the same connection, not after a reconnect")
        #expect(reports[1] == reports[0], "the same report (reports are idempotent on the server)")
        #expect(reports[1].status == .taskSuccess && reports[1].output.str == "echo:x")
        try await eventually("the worker counts it once", timeout: 30) { worker.completedCount == 1 }
        #expect(seen.withLockedValue { $0.reports.count } == 2, "nothing sent after it was accepted")
    }
}
