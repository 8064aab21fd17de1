import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import LHWireProto
import SwiftProtobuf

/// A job of the group commit for one WfRun: its id and its work.
typealias WfRunJob<T> = (key: String, work: @Sendable (inout Staging) throws -> T)

/// WfRun commands. Each is a job (checked before it is made, so a bad
/// request is refused without a commit) that the caller either submits
/// and awaits, or enqueues from an event loop with a reply callback.
extension AdminService {
    /// Runs `job` in the next group commit and returns once it is durable.
    func submit<T: Sendable>(_ job: WfRunJob<T>) async throws -> T {
        try await processor.submit(key: job.key, job.work)
    }

    /// Enqueues `job` and calls `done` once it is durable or refused.
    func enqueue<T: Sendable>(_ job: WfRunJob<T>, done: @escaping @Sendable (Result<T, Error>) -> Void) {
        let work = job.work
        processor.enqueue(key: job.key, { try work(&$0) }) { result in done(result.map { $0 as! T }) }
    }

    /// Starts a WfRun; the events posted for its id before it existed are
    /// its first events.
    func runWf(_ r: Littlehorse_RunWfRequest) throws -> WfRunJob<Littlehorse_WfRun> {
        let metadata = self.metadata
        let major: Int32? = r.hasMajorVersion ? r.majorVersion : nil
        guard let spec = metadata.latestWfSpec(r.wfSpecName, major: major, revision: r.hasRevision ? r.revision : nil)
        else {
            throw LHError(.notFound, "WfSpec '\(r.wfSpecName)' not found")
        }
        let id = r.hasID ? r.id : LHIds.timeOrdered(now: clock.now())
        guard !id.isEmpty, !id.contains("/"), id.count <= 128 else {
            throw LHError(.invalidArgument, "WfRun id '\(id)' must be 1 to 128 characters without '/'")
        }
        let context = metadata.context(for: spec)
        return (
            id,
            { (s: inout Staging) -> Littlehorse_WfRun in
                if try s.state(id) != nil { throw LHError(.alreadyExists, "WfRun '\(id)' already exists") }
                let earlier = try s.orphanEvents(of: id)
                let (state, effects) = try LHError.mapping {
                    try WorkflowEngine.runWf(r, id: id, context: context, now: s.now, earlierEvents: earlier)
                }
                if !earlier.isEmpty { s.claimOrphanEvents(of: id) }
                s.save(id, state, effects)
                return state.wfRun
            }
        )
    }

    /// Posts an ExternalEvent: to its WfRun (interrupting or waking what
    /// waits for it), or kept as an orphan event for a WfRun that does not
    /// exist (yet). Idempotent by the event's guid.
    func putExternalEvent(_ r: Littlehorse_PutExternalEventRequest) throws -> WfRunJob<Littlehorse_ExternalEvent> {
        let wfRunId = r.wfRunID.id
        guard !wfRunId.isEmpty else { throw LHError(.invalidArgument, "wf_run_id is empty") }
        let defName = r.externalEventDefID.name
        guard metadata.externalEventDefs[defName] != nil else {
            throw LHError(.notFound, "ExternalEventDef '\(defName)' not found")
        }
        var event = Littlehorse_ExternalEvent()
        event.id.wfRunID = r.wfRunID
        event.id.externalEventDefID.name = defName
        event.id.guid = r.hasGuid ? r.guid : UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        event.createdAt = Google_Protobuf_Timestamp(date: clock.now())
        event.content = r.content
        if r.hasThreadRunNumber { event.threadRunNumber = r.threadRunNumber }
        if r.hasNodeRunPosition { event.nodeRunPosition = r.nodeRunPosition }
        let e = event
        return (
            wfRunId,
            { (s: inout Staging) -> Littlehorse_ExternalEvent in
                if let state = try s.state(wfRunId) {
                    if let existing = state.externalEvents.first(where: { $0.id == e.id }) { return existing }
                    try s.apply(.putExternalEvent(e), to: wfRunId)
                    return try s.state(wfRunId)?.externalEvents.last(where: { $0.id == e.id }) ?? e
                }
                if let existing = try s.orphanEvents(of: wfRunId).first(where: { $0.id == e.id }) { return existing }
                s.storeOrphanEvent(e)
                return e
            }
        )
    }

    /// A worker's report; `connection` is that worker's, which gets first
    /// refusal of the attempts the report makes ready. A worker of our
    /// protocol may report only an attempt it holds: one held by another
    /// worker id is refused with FAILED_PRECONDITION naming both (a late
    /// report for an attempt that is over changes nothing, as before). A
    /// connection that has not subscribed (a worker back after a
    /// reconnection, before it subscribes again) and gRPC's ReportTask (no
    /// worker identity in LittleHorse's message) are not checked.
    func reportTask(_ report: Littlehorse_ReportTaskRun, from connection: ObjectIdentifier?) -> WfRunJob<Void> {
        let id = report.taskRunID.wfRunID.id
        let arrived = Date()
        let reporter = connection.flatMap { dispatcher.workerId(connection: $0) }
        return (
            id,
            { s in
                if let reporter { try Self.checkHolder(of: report, in: s.state(id), reporter: reporter) }
                s.reportingWorker = connection
                s.reportArrivedAt = arrived
                defer {
                    s.reportingWorker = nil
                    s.reportArrivedAt = nil
                }
                try s.apply(.reportTask(report), to: id)
            }
        )
    }

    /// Refuses a report for a running attempt that another worker holds.
    static func checkHolder(of report: Littlehorse_ReportTaskRun, in state: WfRunState?, reporter: String) throws {
        let guid = report.taskRunID.taskGuid
        let n = Int(report.attemptNumber)
        guard let attempts = state?.taskRuns[guid]?.attempts, n >= 0, n < attempts.count,
            attempts[n].status == .taskRunning, !attempts[n].taskWorkerID.isEmpty,
            attempts[n].taskWorkerID != reporter
        else { return }
        throw LHError(
            .failedPrecondition,
            "attempt \(n) of TaskRun \(report.taskRunID.wfRunID.id)/\(guid) is held by worker '\(attempts[n].taskWorkerID)', not '\(reporter)': report refused"
        )
    }

    /// StopWfRun: the thread (and its children) halt with a manual halt reason.
    func stopWfRun(_ r: Littlehorse_StopWfRunRequest) -> WfRunJob<Void> {
        let id = r.wfRunID.id
        return (id, { s in try s.apply(.stopThread(r.threadRunNumber), to: id) })
    }

    /// ResumeWfRun: the manual halt reason is cleared.
    func resumeWfRun(_ r: Littlehorse_ResumeWfRunRequest) -> WfRunJob<Void> {
        let id = r.wfRunID.id
        return (id, { s in try s.apply(.resumeThread(r.threadRunNumber), to: id) })
    }

    /// DeleteWfRun: the WfRun with its TaskRuns, variables, events, queued
    /// attempts and timers.
    func deleteWfRun(_ r: Littlehorse_DeleteWfRunRequest) -> WfRunJob<Void> {
        let id = r.id.id
        return (
            id,
            { s in
                guard try s.state(id) != nil else { throw LHError(.notFound, "WfRun '\(id)' not found") }
                s.delete(id)
            }
        )
    }
}
