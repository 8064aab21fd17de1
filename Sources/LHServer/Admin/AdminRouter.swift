import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import LHWireProto
import SwiftProtobuf

/// Our protocol's door to the ``AdminService``: decodes a request, calls the
/// service and encodes its answer. No rule lives here.
package struct LHAdminRouter: LHRequestRouter {
    let service: AdminService

    package init(core: LHCore) {
        self.service = core.admin
    }

    package func handle(_ request: Lhwire_Envelope.OneOf_Kind, session: LHSession) async throws -> Lhwire_Envelope
        .OneOf_Kind?
    {
        var request = request
        if let cluster = service.cluster {
            request = service.withId(request)
            if case .forward(let owner) = try await cluster.route(request, fromPeer: session.isPeer, patience: 3) {
                // A worker's report of a TaskRun this server handed out
                // before its partition moved: once settled (not UNAVAILABLE,
                // which the worker sends again), the worker has room here again.
                var settled = true
                defer {
                    if settled, case .reportTask(let report) = request, session.role == .worker {
                        service.reported(report, connection: session.token.id)
                    }
                }
                do {
                    return try await cluster.forward(request, to: owner)
                } catch let error as LHError where error.code == .unavailable {
                    settled = false
                    throw error
                }
            }
        }
        switch request {
        case .getServerVersion: return .serverVersion(LHServerConfiguration.versionMessage)
        case .heartbeat, .hello: return nil
        case .putTaskDef, .getTaskDef, .searchTaskDef, .putExternalEventDef, .getExternalEventDef,
            .searchExternalEventDef,
            .putWfSpec, .getWfSpec, .getLatestWfSpec, .searchWfSpec:
            return try await metadata(request)
        case .runWf, .putExternalEvent, .stopWfRun, .resumeWfRun, .deleteWfRun, .reportTask, .subscribe:
            return try await command(request, session: session)
        case .getWfRun, .getNodeRun, .listNodeRuns, .getTaskRun, .listTaskRuns, .getVariable, .listVariables,
            .getExternalEvent, .listExternalEvents:
            return try await read(request)
        case .searchWfRun, .searchTaskRun, .searchVariable:
            return try search(request)
        default:
            throw LHError(.invalidArgument, "\(Lhwire_Envelope(id: 0, request).kindName) is a response, not a request")
        }
    }

    /// RunWf, ReportTask and PutExternalEvent go from the event loop straight
    /// into the processor's next group commit, answered from the commit
    /// thread once durable: no task, no actor hop.
    package func handleDirectly(
        _ request: Lhwire_Envelope.OneOf_Kind, session: LHSession,
        reply: @escaping @Sendable (Result<Lhwire_Envelope.OneOf_Kind?, Error>) -> Void
    ) -> Bool {
        var request = request
        if let cluster = service.cluster {
            // Not ours (or refused): answered by `handle`, in a task.
            request = service.withId(request)
            guard cluster.servedHere(request) else { return false }
        }
        switch request {
        case .reportTask(let report):
            let (service, connection) = (service, session.token.id)
            // The worker has room again once the report is settled, either way.
            service.enqueue(service.reportTask(report, from: connection)) { result in
                service.reported(report, connection: connection)
                reply(result.map { .empty(.init()) })
            }
        case .runWf(let r):
            return enqueue(reply: reply, { try service.runWf(r) }) { .wfRun($0) }
        case .putExternalEvent(let r):
            return enqueue(reply: reply, { try service.putExternalEvent(r) }) { .externalEvent($0) }
        default:
            return false
        }
        return true
    }

    /// Makes a request's job and enqueues it; `answer` turns its result into
    /// the response (an error making or running the job is the response).
    /// False (not handled) for a NOT_FOUND where the metadata may lag (a
    /// cluster member that does not write it): `handle` reads it again.
    private func enqueue<T: Sendable>(
        reply: @escaping @Sendable (Result<Lhwire_Envelope.OneOf_Kind?, Error>) -> Void,
        _ make: () throws -> WfRunJob<T>,
        answer: @escaping @Sendable (T) -> Lhwire_Envelope.OneOf_Kind
    ) -> Bool {
        do {
            service.enqueue(try make()) { result in reply(result.map { answer($0) }) }
        } catch let error as LHError where error.code == .notFound && service.metadataMayBeStale {
            return false
        } catch {
            reply(.failure(error))
        }
        return true
    }

    package func connectionClosed(_ session: LHSession) async {
        service.connectionClosed(session)
    }
}
