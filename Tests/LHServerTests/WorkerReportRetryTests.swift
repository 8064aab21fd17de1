import Foundation
import LHClient
import LHWorker
import Logging
import NIOConcurrencyHelpers
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
        let scripted = try await ScriptedPeers.bind("report-retry")
        let listener = scripted.listener
        let task = Littlehorse_ScheduledTask.with { t in
            t.taskRunID.wfRunID.id = "wf-retry"
            t.taskRunID.taskGuid = "0-1-t"
            t.taskDefID.name = "retry-me"
            t.variables = [.with { $0.varName = "input"; $0.value.str = "x" }]
        }
        let seen = NIOLockedValueBox(Seen())
        // The first report is answered as a server whose group commit failed
        // answers it; the ones after it are accepted.
        let peer = Task {
            try await listener.executeThenClose { inbound in
                for try await connection in inbound {
                    seen.withLockedValue { $0.connections += 1 }
                    try await connection.executeThenClose { requests, responses in
                        for try await request in requests {
                            switch request.kind {
                            case .subscribe:
                                try await responses.write(Lhwire_Envelope(id: request.id, .empty(.init())))
                                try await responses.write(Lhwire_Envelope(id: 0, .scheduledTask(task)))
                            case .reportTask(let report):
                                let n = seen.withLockedValue { $0.reports.append(report); return $0.reports.count }
                                let answer: Lhwire_Envelope.OneOf_Kind = n == 1
                                    ? .error(LHError(.unavailable, "storage failed; the command was not applied").wire)
                                    : .empty(.init())
                                try await responses.write(Lhwire_Envelope(id: request.id, answer))
                            default:
                                continue  // hello and heartbeats
                            }
                        }
                    }
                }
            }
        }
        defer { peer.cancel(); listener.channel.close(promise: nil) }
        var config = LHConfig(clientId: "retry-test")
        config.apiHost = "127.0.0.1"
        config.apiPort = scripted.port
        config.caCertPath = scripted.caPath
        config.taskWorkerId = "worker-retry"
        let worker = LHTaskWorker(config: config, taskDefName: "retry-me", inputs: ["input"]) { (input: String) async throws -> String in
            "echo:\(input)"
        }
        let running = Task { try await worker.run() }
        defer { running.cancel() }
        try await eventually("the refused report is sent again", timeout: 10) { seen.withLockedValue { $0.reports.count } >= 2 }
        let (connections, reports) = seen.withLockedValue { ($0.connections, $0.reports) }
        #expect(connections == 1, "sent again on the same connection, not after a reconnect")
        #expect(reports[1] == reports[0], "the same report (reports are idempotent on the server)")
        #expect(reports[1].status == .taskSuccess && reports[1].output.str == "echo:x")
        try await eventually("the worker counts it once", timeout: 5) { worker.completedCount == 1 }
        #expect(reports.count == 2, "nothing sent after it was accepted")
    }
}
