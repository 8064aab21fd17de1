import Foundation
import LHProto
import LHWire
import LHWireProto

/// Workers, whichever door they use: our protocol's subscribe (room = its
/// capacity, back on each report) or gRPC's PollTask (room = its unanswered
/// polls). Both take from the same task queues.
extension AdminService {
    /// A worker of our protocol subscribes to a TaskDef on its connection.
    /// In a cluster the answer lists the live servers: the worker connects
    /// to each (every server hands out its own partitions' TaskRuns).
    @discardableResult
    func subscribe(_ r: Lhwire_Subscribe, session: LHSession) throws -> Lhwire_ClusterMembers? {
        guard session.role == .worker else {
            throw LHError(.failedPrecondition, "subscribe is for connections whose hello has role WORKER")
        }
        _ = try taskDef(r.taskDefID.name)
        let workerId = r.taskWorkerID.isEmpty ? session.clientId : r.taskWorkerID
        let held = r.held.map { ($0.taskRunID.wfRunID.id, $0.taskRunID.taskGuid, $0.attemptNumber) }
        let lost = claims.claim(workerId: workerId, taskDef: r.taskDefID.name, held: held)
        // A worker of a cluster lists what it holds from every server; what
        // takes room here is what this server would hear the report of.
        let mine = cluster.map { c in held.filter { c.membership.owns(wfRunId: $0.0) } } ?? held
        dispatcher.subscribe(
            connection: session.token.id, workerId: workerId, taskDef: r.taskDefID.name,
            capacity: Int(max(1, r.capacity)), push: session.responder,
            holding: mine.map { DispatchState.key($0.0, $0.1) })
        for attempt in lost {
            processor.loseAttempt(
                attempt,
                reason:
                    "lost in a server restart: its worker '\(workerId)' came back without it (attempt \(attempt.attempt))"
            )
        }
        return clusterMembers()
    }

    /// The live servers of the cluster as a worker sees them (nil: not a
    /// cluster).
    func clusterMembers() -> Lhwire_ClusterMembers? {
        guard let membership = cluster?.membership else { return nil }
        return .with { list in
            list.members = membership.members.filter { !$0.address.isEmpty }.map { m in
                .with {
                    $0.memberID = m.id; $0.address = m.address; $0.thisServer = m.id == membership.memberId
                }
            }
        }
    }

    /// The worker on `connection` has room again once its report is settled.
    func reported(_ report: Littlehorse_ReportTaskRun, connection: ObjectIdentifier) {
        dispatcher.reported(
            connection: connection, wfRunId: report.taskRunID.wfRunID.id, guid: report.taskRunID.taskGuid)
    }

    func connectionClosed(_ session: LHSession) {
        dispatcher.disconnected(connection: session.token.id)
    }

    /// LittleHorse's RegisterTaskWorker: the hosts the worker should poll
    /// (never empty: a worker given none would sit idle without an error).
    func registerTaskWorker(_ r: Littlehorse_RegisterTaskWorkerRequest, advertising host: Littlehorse_LHHostInfo) throws
        -> Littlehorse_RegisterTaskWorkerResponse
    {
        guard !r.taskWorkerID.isEmpty else { throw LHError(.invalidArgument, "task_worker_id is empty") }
        _ = try taskDef(r.taskDefID.name)
        // A cluster: every live member with a gRPC listener (each hands out
        // the TaskRuns of its own partitions); this one as the client sees it.
        var hosts = [host]
        if let cluster {
            let me = cluster.membership.memberId
            for m in cluster.membership.members where m.id != me {
                guard let colon = m.grpcAddress.lastIndex(of: ":"),
                    let port = Int32(m.grpcAddress[m.grpcAddress.index(after: colon)...])
                else { continue }
                hosts.append(
                    .with {
                        $0.host = String(m.grpcAddress[..<colon]); $0.port = port
                    })
            }
        }
        return .with {
            $0.yourHosts = hosts
            $0.isClusterHealthy = true
        }
    }

    /// A gRPC PollTask stream starts polling `taskDef` (from its first request).
    func startPolling(_ first: Littlehorse_PollTaskRequest, stream: ObjectIdentifier, push: WorkerPush) throws {
        _ = try taskDef(first.taskDefID.name)
        claims.pollerSeen(workerId: first.clientID, taskDef: first.taskDefID.name)
        dispatcher.subscribePoller(
            connection: stream, workerId: first.clientID, taskDef: first.taskDefID.name, push: push)
    }

    /// One more PollTaskRequest on a polling stream.
    func poll(_ request: Littlehorse_PollTaskRequest, stream: ObjectIdentifier) {
        dispatcher.addCredit(connection: stream)
    }

    /// The polling stream ended: it gets nothing more.
    func stopPolling(stream: ObjectIdentifier) {
        dispatcher.disconnected(connection: stream)
    }
}
