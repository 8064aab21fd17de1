import LHProto
import LHStore
import LHWire
import LHWireProto

/// The router's request kinds by group: each decodes, calls the service and
/// encodes.
extension LHAdminRouter {
    func metadata(_ request: Lhwire_Envelope.OneOf_Kind) async throws -> Lhwire_Envelope.OneOf_Kind {
        switch request {
        case .putTaskDef, .putExternalEventDef, .putWfSpec: return try await service.execute(request, from: nil)
        case .getTaskDef(let id): return .taskDef(try service.taskDef(id.name))
        case .searchTaskDef(let r):
            return .taskDefIDList(.with { $0.results = service.searchTaskDefs(prefix: r.hasPrefix ? r.prefix : nil) })
        case .getExternalEventDef(let id): return .externalEventDef(try service.externalEventDef(id.name))
        case .searchExternalEventDef(let r):
            return .externalEventDefIDList(
                .with { $0.results = service.searchExternalEventDefs(prefix: r.hasPrefix ? r.prefix : nil) })
        case .getWfSpec(let id): return .wfSpec(try service.wfSpec(id))
        case .getLatestWfSpec(let r):
            return .wfSpec(try service.latestWfSpec(r.name, majorVersion: r.hasMajorVersion ? r.majorVersion : nil))
        case .searchWfSpec(let r): return .wfSpecIDList(.with { $0.results = service.searchWfSpecs(r) })
        default: throw Self.misrouted(request)
        }
    }

    func command(_ request: Lhwire_Envelope.OneOf_Kind, session: LHSession) async throws -> Lhwire_Envelope.OneOf_Kind {
        if case .subscribe(let r) = request {
            if let members = try service.subscribe(r, session: session) { return .clusterMembers(members) }
            return .empty(.init())
        }
        return try await service.freshOnMiss { try await service.execute(request, from: session.token.id) }
    }

    func read(_ request: Lhwire_Envelope.OneOf_Kind) async throws -> Lhwire_Envelope.OneOf_Kind {
        switch request {
        case .getWfRun(let id): return .wfRun(try await service.wfRun(id.id))
        case .getNodeRun(let id): return .nodeRun(try await service.nodeRun(id))
        case .listNodeRuns(let r):
            let list = try await service.nodeRuns(r)
            return .nodeRunList(.with { $0.results = list })
        case .getTaskRun(let id): return .taskRun(try await service.taskRun(id))
        case .listTaskRuns(let r):
            let list = try await service.taskRuns(r)
            return .taskRunList(.with { $0.results = list })
        case .getVariable(let id): return .variable(try await service.variable(id))
        case .listVariables(let r):
            let list = try await service.variables(r)
            return .variableList(.with { $0.results = list })
        case .getExternalEvent(let id): return .externalEvent(try await service.externalEvent(id))
        case .listExternalEvents(let r):
            let events = (try? await service.externalEvents(of: r.wfRunID.id)) ?? []
            return .externalEventList(.with { $0.results = events })
        default: throw Self.misrouted(request)
        }
    }

    func search(_ request: Lhwire_Envelope.OneOf_Kind) throws -> Lhwire_Envelope.OneOf_Kind {
        switch request {
        case .searchWfRun(let r): return .wfRunIDList(try service.searchWfRuns(r))
        case .searchTaskRun(let r): return .taskRunIDList(try service.searchTaskRuns(r))
        case .searchVariable(let r): return .variableIDList(try service.searchVariables(r))
        default: throw Self.misrouted(request)
        }
    }

    static func misrouted(_ request: Lhwire_Envelope.OneOf_Kind) -> LHError {
        LHError(.internal, "\(Lhwire_Envelope(id: 0, request).kindName) reached the wrong handler")
    }
}
