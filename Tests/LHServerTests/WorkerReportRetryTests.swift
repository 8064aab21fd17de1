import Foundation
import LHClient
import LHWorker
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// The worker SDK against a scripted peer over the real wire (TLS, frames,
/// hello): a report the server refuses while the connection stays up (its
/// storage failed, say) is sent again on that connection; it is not parked
/// until a reconnect that may never come.
@Suite struct WorkerReportRetryTests {
    @Test func aReportRefusedAsUnavailableIsSentAgainOnTheSameConnection() async throws {
        let seen = NIOLockedValueBox(RefusesTheFirstReport.Seen())
        // The peer answers on its event loop, so that the exchange does not
        // wait for Swift's pool threads (busy with the suite's other tests).
        let peer = try await ScriptedPeers.bind("report-retry") { channel in
            try channel.pipeline.syncOperations.addHandler(RefusesTheFirstReport(seen: seen))
        }
        defer { peer.listener.channel.close(promise: nil) }
        var config = LHConfig(clientId: "retry-test")
        config.apiHost = "127.0.0.1"
        config.apiPort = peer.port
        config.caCertPath = peer.caPath
        config.taskWorkerId = "worker-retry"
        let worker = LHTaskWorker(config: config, taskDefName: "retry-me", inputs: ["input"]) { (input: String) async throws -> String in
            "echo:\(input)"
        }
        let running = Task { try await worker.run() }
        defer { running.cancel() }
        try await eventually("the refused report is sent again", timeout: 30) { seen.withLockedValue { $0.reports.count } >= 2 }
        let (connections, reports) = seen.withLockedValue { ($0.connections, $0.reports) }
        #expect(connections == 1, "sent again on the same connection, not after a reconnect")
        #expect(reports[1] == reports[0], "the same report (reports are idempotent on the server)")
        #expect(reports[1].status == .taskSuccess && reports[1].output.str == "echo:x")
        try await eventually("the worker counts it once", timeout: 30) { worker.completedCount == 1 }
        #expect(seen.withLockedValue { $0.reports.count } == 2, "nothing sent after it was accepted")
    }
}

/// Subscribes the worker and pushes it one task; answers the first report as
/// a server whose group commit failed answers it, and accepts the ones after.
private final class RefusesTheFirstReport: ChannelInboundHandler, Sendable {
    typealias InboundIn = Lhwire_Envelope
    typealias OutboundOut = Lhwire_Envelope

    struct Seen {
        var connections = 0
        var reports: [Littlehorse_ReportTaskRun] = []
    }

    let seen: NIOLockedValueBox<Seen>
    init(seen: NIOLockedValueBox<Seen>) { self.seen = seen }

    func handlerAdded(context: ChannelHandlerContext) {
        seen.withLockedValue { $0.connections += 1 }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let request = unwrapInboundIn(data)
        switch request.kind {
        case .subscribe:
            context.write(wrapOutboundOut(Lhwire_Envelope(id: request.id, .empty(.init()))), promise: nil)
            let task = Littlehorse_ScheduledTask.with { t in
                t.taskRunID.wfRunID.id = "wf-retry"
                t.taskRunID.taskGuid = "0-1-t"
                t.taskDefID.name = "retry-me"
                t.variables = [.with { $0.varName = "input"; $0.value.str = "x" }]
            }
            context.writeAndFlush(wrapOutboundOut(Lhwire_Envelope(id: 0, .scheduledTask(task))), promise: nil)
        case .reportTask(let report):
            let n = seen.withLockedValue { $0.reports.append(report); return $0.reports.count }
            let answer: Lhwire_Envelope.OneOf_Kind = n == 1
                ? .error(LHError(.unavailable, "storage failed; the command was not applied").wire)
                : .empty(.init())
            context.writeAndFlush(wrapOutboundOut(Lhwire_Envelope(id: request.id, answer)), promise: nil)
        default:
            return  // hello and heartbeats
        }
    }
}
