import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire

/// Reads of committed WfRuns (never of what is still being written) and the
/// store's searches.
extension AdminService {
    func wfRunState(_ id: String) async throws -> WfRunState {
        guard !id.isEmpty else { throw LHError(.invalidArgument, "wf_run_id is empty") }
        guard let s = try await LHError.mappingAsync({ try await processor.read(id) }) else {
            throw LHError(.notFound, "WfRun '\(id)' not found")
        }
        return s
    }

    func wfRun(_ id: String) async throws -> Littlehorse_WfRun { try await wfRunState(id).wfRun }

    func nodeRun(_ id: Littlehorse_NodeRunId) async throws -> Littlehorse_NodeRun {
        guard
            let n = try await wfRunState(id.wfRunID.id).nodeRuns[
                NodeRunKey(thread: id.threadRunNumber, position: id.position)]
        else {
            throw LHError(
                .notFound, "NodeRun \(id.threadRunNumber)/\(id.position) of WfRun '\(id.wfRunID.id)' not found")
        }
        return n
    }

    func nodeRuns(_ r: Littlehorse_ListNodeRunsRequest) async throws -> [Littlehorse_NodeRun] {
        let s = try await wfRunState(r.wfRunID.id)
        return s.nodeRuns.sorted { $0.key < $1.key }.map(\.value).filter {
            !r.hasThreadRunNumber || $0.id.threadRunNumber == r.threadRunNumber
        }
    }

    func taskRun(_ id: Littlehorse_TaskRunId) async throws -> Littlehorse_TaskRun {
        guard let t = try await wfRunState(id.wfRunID.id).taskRuns[id.taskGuid] else {
            throw LHError(.notFound, "TaskRun '\(id.taskGuid)' of WfRun '\(id.wfRunID.id)' not found")
        }
        return t
    }

    func taskRuns(_ r: Littlehorse_ListTaskRunsRequest) async throws -> [Littlehorse_TaskRun] {
        try await wfRunState(r.wfRunID.id).taskRuns.values.sorted {
            ($0.scheduledAt.date, $0.id.taskGuid) < ($1.scheduledAt.date, $1.id.taskGuid)
        }
    }

    func variable(_ id: Littlehorse_VariableId) async throws -> Littlehorse_Variable {
        guard
            let v = try await wfRunState(id.wfRunID.id).variables[
                VariableKey(thread: id.threadRunNumber, name: id.name)]
        else {
            throw LHError(
                .notFound, "Variable '\(id.name)' of thread \(id.threadRunNumber) in WfRun '\(id.wfRunID.id)' not found"
            )
        }
        return v
    }

    func variables(_ r: Littlehorse_ListVariablesRequest) async throws -> [Littlehorse_Variable] {
        try await wfRunState(r.wfRunID.id).variables.sorted { $0.key < $1.key }.map(\.value)
    }

    /// A WfRun's events; for a WfRun that does not exist (yet), its orphan events.
    func externalEvents(of wfRunId: String) async throws -> [Littlehorse_ExternalEvent] {
        try await LHError.mappingAsync {
            if let s = try await processor.read(wfRunId) { return s.externalEvents }
            return try store.orphanEvents(of: wfRunId)
        }
    }

    func externalEvent(_ id: Littlehorse_ExternalEventId) async throws -> Littlehorse_ExternalEvent {
        let events = try await externalEvents(of: id.wfRunID.id)
        guard
            let e = events.first(where: {
                $0.id.guid == id.guid && $0.id.externalEventDefID.name == id.externalEventDefID.name
            })
        else {
            throw LHError(
                .notFound,
                "ExternalEvent '\(id.externalEventDefID.name)/\(id.guid)' of WfRun '\(id.wfRunID.id)' not found")
        }
        return e
    }

    /// A page of the WfRuns of a WfSpec, as the API answers it.
    func searchWfRuns(_ r: Littlehorse_SearchWfRunRequest) throws -> Littlehorse_WfRunIdList {
        guard !r.wfSpecName.isEmpty else { throw LHError(.invalidArgument, "search wfRun needs wf_spec_name") }
        let page = try LHError.mapping { try store.searchWfRuns(r) }
        return .with { l in
            l.results = page.results.map { id in .with { $0.id = id } }
            if let b = page.bookmark { l.bookmark = b }
        }
    }

    /// A page of the TaskRuns of a TaskDef, as the API answers it.
    func searchTaskRuns(_ r: Littlehorse_SearchTaskRunRequest) throws -> Littlehorse_TaskRunIdList {
        guard !r.taskDefName.isEmpty else { throw LHError(.invalidArgument, "search taskRun needs task_def_name") }
        let page = try LHError.mapping { try store.searchTaskRuns(r) }
        return .with { l in
            l.results = page.results
            if let b = page.bookmark { l.bookmark = b }
        }
    }

    /// A page of the variables with a name and value, as the API answers it.
    func searchVariables(_ r: Littlehorse_SearchVariableRequest) throws -> Littlehorse_VariableIdList {
        let page = try LHError.mapping { try store.searchVariables(r) }
        return .with { l in
            l.results = page.results
            if let b = page.bookmark { l.bookmark = b }
        }
    }
}
