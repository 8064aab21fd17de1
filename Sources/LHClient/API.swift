import Foundation
import LHProto
import LHWire
import LHWireProto

/// The admin API, one method per request (LittleHorse's names).
extension LittleHorseClient {
    private func expect<T>(
        _ request: Lhwire_Envelope.OneOf_Kind, _ name: String, _ pick: (Lhwire_Envelope.OneOf_Kind) -> T?
    ) async throws -> T {
        let reply = try await call(request)
        guard let value = pick(reply) else {
            throw LHError(.malformedFrame, "the server answered \(name) with \(Lhwire_Envelope(id: 0, reply).kindName)")
        }
        return value
    }

    public func putTaskDef(_ r: Littlehorse_PutTaskDefRequest) async throws -> Littlehorse_TaskDef {
        try await expect(.putTaskDef(r), "put_task_def") { if case .taskDef(let v) = $0 { v } else { nil } }
    }
    public func getTaskDef(_ name: String) async throws -> Littlehorse_TaskDef {
        try await expect(.getTaskDef(.with { $0.name = name }), "get_task_def") {
            if case .taskDef(let v) = $0 { v } else { nil }
        }
    }
    public func putExternalEventDef(_ r: Littlehorse_PutExternalEventDefRequest) async throws
        -> Littlehorse_ExternalEventDef
    {
        try await expect(.putExternalEventDef(r), "put_external_event_def") {
            if case .externalEventDef(let v) = $0 { v } else { nil }
        }
    }
    public func getExternalEventDef(_ name: String) async throws -> Littlehorse_ExternalEventDef {
        try await expect(.getExternalEventDef(.with { $0.name = name }), "get_external_event_def") {
            if case .externalEventDef(let v) = $0 { v } else { nil }
        }
    }
    public func putWfSpec(_ r: Littlehorse_PutWfSpecRequest) async throws -> Littlehorse_WfSpec {
        try await expect(.putWfSpec(r), "put_wf_spec") { if case .wfSpec(let v) = $0 { v } else { nil } }
    }
    public func getWfSpec(_ id: Littlehorse_WfSpecId) async throws -> Littlehorse_WfSpec {
        try await expect(.getWfSpec(id), "get_wf_spec") { if case .wfSpec(let v) = $0 { v } else { nil } }
    }
    public func getLatestWfSpec(_ name: String, majorVersion: Int32? = nil) async throws -> Littlehorse_WfSpec {
        try await expect(
            .getLatestWfSpec(
                .with {
                    $0.name = name; if let majorVersion { $0.majorVersion = majorVersion }
                }), "get_latest_wf_spec"
        ) {
            if case .wfSpec(let v) = $0 { v } else { nil }
        }
    }
    public func runWf(_ r: Littlehorse_RunWfRequest) async throws -> Littlehorse_WfRun {
        try await expect(.runWf(r), "run_wf") { if case .wfRun(let v) = $0 { v } else { nil } }
    }
    public func getWfRun(_ id: String) async throws -> Littlehorse_WfRun {
        try await expect(.getWfRun(.with { $0.id = id }), "get_wf_run") {
            if case .wfRun(let v) = $0 { v } else { nil }
        }
    }
    public func stopWfRun(_ id: String, threadRunNumber: Int32 = 0) async throws {
        _ = try await call(
            .stopWfRun(
                .with {
                    $0.wfRunID.id = id; $0.threadRunNumber = threadRunNumber
                }))
    }
    public func resumeWfRun(_ id: String, threadRunNumber: Int32 = 0) async throws {
        _ = try await call(
            .resumeWfRun(
                .with {
                    $0.wfRunID.id = id; $0.threadRunNumber = threadRunNumber
                }))
    }
    public func deleteWfRun(_ id: String) async throws {
        _ = try await call(.deleteWfRun(.with { $0.id.id = id }))
    }
    public func putExternalEvent(_ r: Littlehorse_PutExternalEventRequest) async throws -> Littlehorse_ExternalEvent {
        try await expect(.putExternalEvent(r), "put_external_event") {
            if case .externalEvent(let v) = $0 { v } else { nil }
        }
    }
    public func getExternalEvent(_ id: Littlehorse_ExternalEventId) async throws -> Littlehorse_ExternalEvent {
        try await expect(.getExternalEvent(id), "get_external_event") {
            if case .externalEvent(let v) = $0 { v } else { nil }
        }
    }
    public func listExternalEvents(_ wfRunId: String) async throws -> Littlehorse_ExternalEventList {
        try await expect(.listExternalEvents(.with { $0.wfRunID.id = wfRunId }), "list_external_events") {
            if case .externalEventList(let v) = $0 { v } else { nil }
        }
    }
    public func getNodeRun(_ id: Littlehorse_NodeRunId) async throws -> Littlehorse_NodeRun {
        try await expect(.getNodeRun(id), "get_node_run") { if case .nodeRun(let v) = $0 { v } else { nil } }
    }
    public func listNodeRuns(_ wfRunId: String, threadRunNumber: Int32? = nil) async throws -> Littlehorse_NodeRunList {
        try await expect(
            .listNodeRuns(
                .with {
                    $0.wfRunID.id = wfRunId; if let threadRunNumber { $0.threadRunNumber = threadRunNumber }
                }), "list_node_runs"
        ) {
            if case .nodeRunList(let v) = $0 { v } else { nil }
        }
    }
    public func getTaskRun(_ id: Littlehorse_TaskRunId) async throws -> Littlehorse_TaskRun {
        try await expect(.getTaskRun(id), "get_task_run") { if case .taskRun(let v) = $0 { v } else { nil } }
    }
    public func listTaskRuns(_ wfRunId: String) async throws -> Littlehorse_TaskRunList {
        try await expect(.listTaskRuns(.with { $0.wfRunID.id = wfRunId }), "list_task_runs") {
            if case .taskRunList(let v) = $0 { v } else { nil }
        }
    }
    public func getVariable(_ id: Littlehorse_VariableId) async throws -> Littlehorse_Variable {
        try await expect(.getVariable(id), "get_variable") { if case .variable(let v) = $0 { v } else { nil } }
    }
    public func listVariables(_ wfRunId: String) async throws -> Littlehorse_VariableList {
        try await expect(.listVariables(.with { $0.wfRunID.id = wfRunId }), "list_variables") {
            if case .variableList(let v) = $0 { v } else { nil }
        }
    }
    public func searchWfRun(_ r: Littlehorse_SearchWfRunRequest) async throws -> Littlehorse_WfRunIdList {
        try await expect(.searchWfRun(r), "search_wf_run") { if case .wfRunIDList(let v) = $0 { v } else { nil } }
    }
    public func searchTaskRun(_ r: Littlehorse_SearchTaskRunRequest) async throws -> Littlehorse_TaskRunIdList {
        try await expect(.searchTaskRun(r), "search_task_run") { if case .taskRunIDList(let v) = $0 { v } else { nil } }
    }
    public func searchVariable(_ r: Littlehorse_SearchVariableRequest) async throws -> Littlehorse_VariableIdList {
        try await expect(.searchVariable(r), "search_variable") {
            if case .variableIDList(let v) = $0 { v } else { nil }
        }
    }
}
