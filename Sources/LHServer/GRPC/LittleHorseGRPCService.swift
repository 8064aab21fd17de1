import Foundation
import GRPCCore
import GRPCProtobuf
import LHProto
import SwiftProtobuf

/// LittleHorse's gRPC service (`littlehorse.LittleHorse`) over the
/// ``AdminService``: each RPC decodes its request, calls the service and
/// encodes the answer, as ``LHAdminRouter`` does for our protocol, so no rule
/// exists twice. Methods not registered here answer UNIMPLEMENTED.
struct LittleHorseGRPCService: RegistrableRPCService {
    static let serviceName = "littlehorse.LittleHorse"

    let admin: AdminService
    /// The host and port a worker is told to poll (RegisterTaskWorker), given
    /// the `:authority` host it used to reach us, if any.
    let advertise: @Sendable (_ authority: String?) -> Littlehorse_LHHostInfo

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        registerMetadata(with: &router)
        registerWfRuns(with: &router)
        registerReads(with: &router)
        registerWorkers(with: &router)
    }

    /// Registers a unary RPC: tenant and unknown fields checked, errors
    /// answered with LittleHorse's status codes.
    func unary<In: Message & Sendable, Out: Message & Sendable, Transport: ServerTransport>(
        _ router: inout RPCRouter<Transport>, _ method: String,
        _ body: @escaping @Sendable (In, Metadata) async throws -> Out
    ) {
        router.registerHandler(
            forMethod: MethodDescriptor(fullyQualifiedService: Self.serviceName, method: method),
            deserializer: ProtobufDeserializer<In>(), serializer: ProtobufSerializer<Out>()
        ) { request, _ in
            do {
                let single = try await ServerRequest(stream: request)
                try Self.checkTenant(single.metadata)
                try UnknownFields.refuse(in: single.message)
                return StreamingServerResponse(
                    single: ServerResponse(message: try await body(single.message, single.metadata)))
            } catch {
                return StreamingServerResponse(error: Self.rpcError(error, method: method))
            }
        }
    }

    /// Until tenants exist, the only tenant is `default` (the header absent
    /// means `default`, as on LittleHorse's server).
    static func checkTenant(_ metadata: Metadata) throws {
        guard let tenant = metadata[stringValues: "tenantid"].first(where: { _ in true }), tenant != "default" else {
            return
        }
        throw LHError(
            .invalidArgument, "tenant '\(tenant)' does not exist: this server has only the tenant 'default'")
    }

    static func rpcError(_ error: any Error, method: String) -> RPCError {
        if let rpc = error as? RPCError { return rpc }
        return LHError(answering: error, request: method).rpcError
    }
}

extension LittleHorseGRPCService {
    func registerMetadata<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let admin = self.admin
        unary(&router, "PutTaskDef") { (r: Littlehorse_PutTaskDefRequest, _) in
            try await admin.command(.putTaskDef(r)) { if case .taskDef(let t) = $0 { t } else { nil } }
        }
        unary(&router, "GetTaskDef") { (r: Littlehorse_TaskDefId, _) in try admin.taskDef(r.name) }
        unary(&router, "SearchTaskDef") { (r: Littlehorse_SearchTaskDefRequest, _) in
            Littlehorse_TaskDefIdList.with { $0.results = admin.searchTaskDefs(prefix: r.hasPrefix ? r.prefix : nil) }
        }
        unary(&router, "PutExternalEventDef") { (r: Littlehorse_PutExternalEventDefRequest, _) in
            try await admin.command(.putExternalEventDef(r)) {
                if case .externalEventDef(let e) = $0 { e } else { nil }
            }
        }
        unary(&router, "GetExternalEventDef") { (r: Littlehorse_ExternalEventDefId, _) in
            try admin.externalEventDef(r.name)
        }
        unary(&router, "SearchExternalEventDef") { (r: Littlehorse_SearchExternalEventDefRequest, _) in
            Littlehorse_ExternalEventDefIdList.with {
                $0.results = admin.searchExternalEventDefs(prefix: r.hasPrefix ? r.prefix : nil)
            }
        }
        unary(&router, "PutWfSpec") { (r: Littlehorse_PutWfSpecRequest, _) in
            try await admin.command(.putWfSpec(r)) { if case .wfSpec(let s) = $0 { s } else { nil } }
        }
        unary(&router, "GetWfSpec") { (r: Littlehorse_WfSpecId, _) in try admin.wfSpec(r) }
        unary(&router, "GetLatestWfSpec") { (r: Littlehorse_GetLatestWfSpecRequest, _) in
            try admin.latestWfSpec(r.name, majorVersion: r.hasMajorVersion ? r.majorVersion : nil)
        }
        unary(&router, "SearchWfSpec") { (r: Littlehorse_SearchWfSpecRequest, _) in
            Littlehorse_WfSpecIdList.with { $0.results = admin.searchWfSpecs(r) }
        }
        unary(&router, "GetServerVersion") { (_: Google_Protobuf_Empty, _) in LHServerConfiguration.versionMessage }
    }

    func registerWfRuns<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let admin = self.admin
        unary(&router, "RunWf") { (r: Littlehorse_RunWfRequest, _) in
            try await admin.command(.runWf(r)) { if case .wfRun(let w) = $0 { w } else { nil } }
        }
        unary(&router, "PutExternalEvent") { (r: Littlehorse_PutExternalEventRequest, _) in
            try await admin.command(.putExternalEvent(r)) { if case .externalEvent(let e) = $0 { e } else { nil } }
        }
        unary(&router, "StopWfRun") { (r: Littlehorse_StopWfRunRequest, _) in
            try await admin.command(.stopWfRun(r)) { _ in () }
            return Google_Protobuf_Empty()
        }
        unary(&router, "ResumeWfRun") { (r: Littlehorse_ResumeWfRunRequest, _) in
            try await admin.command(.resumeWfRun(r)) { _ in () }
            return Google_Protobuf_Empty()
        }
        unary(&router, "DeleteWfRun") { (r: Littlehorse_DeleteWfRunRequest, _) in
            try await admin.command(.deleteWfRun(r)) { _ in () }
            return Google_Protobuf_Empty()
        }
    }

    func registerReads<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let admin = self.admin
        unary(&router, "GetWfRun") { (r: Littlehorse_WfRunId, _) in try await admin.wfRun(r.id) }
        unary(&router, "GetNodeRun") { (r: Littlehorse_NodeRunId, _) in try await admin.nodeRun(r) }
        unary(&router, "ListNodeRuns") { (r: Littlehorse_ListNodeRunsRequest, _) in
            let list = try await admin.nodeRuns(r)
            return Littlehorse_NodeRunList.with { $0.results = list }
        }
        unary(&router, "GetTaskRun") { (r: Littlehorse_TaskRunId, _) in try await admin.taskRun(r) }
        unary(&router, "ListTaskRuns") { (r: Littlehorse_ListTaskRunsRequest, _) in
            let list = try await admin.taskRuns(r)
            return Littlehorse_TaskRunList.with { $0.results = list }
        }
        unary(&router, "GetVariable") { (r: Littlehorse_VariableId, _) in try await admin.variable(r) }
        unary(&router, "ListVariables") { (r: Littlehorse_ListVariablesRequest, _) in
            let list = try await admin.variables(r)
            return Littlehorse_VariableList.with { $0.results = list }
        }
        unary(&router, "GetExternalEvent") { (r: Littlehorse_ExternalEventId, _) in try await admin.externalEvent(r) }
        unary(&router, "ListExternalEvents") { (r: Littlehorse_ListExternalEventsRequest, _) in
            let list = try await admin.externalEvents(of: r.wfRunID.id)
            return Littlehorse_ExternalEventList.with { $0.results = list }
        }
        unary(&router, "SearchWfRun") { (r: Littlehorse_SearchWfRunRequest, _) in try admin.searchWfRuns(r) }
        unary(&router, "SearchTaskRun") { (r: Littlehorse_SearchTaskRunRequest, _) in try admin.searchTaskRuns(r) }
        unary(&router, "SearchVariable") { (r: Littlehorse_SearchVariableRequest, _) in try admin.searchVariables(r) }
    }
}
