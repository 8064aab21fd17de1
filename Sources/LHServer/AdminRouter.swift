import LHProto
import LHWire

/// The server's request router. Requests the server does not implement yet
/// are refused with UNIMPLEMENTED naming the request.
public struct LHAdminRouter: LHRequestRouter {
    public init() {}

    public func handle(_ request: Lhwire_Envelope.OneOf_Kind, session: LHSession) async throws -> Lhwire_Envelope.OneOf_Kind? {
        switch request {
        case .getServerVersion:
            return .serverVersion(LHServer.version)
        case .heartbeat:
            return nil
        case .welcome, .error, .empty, .taskDef, .externalEventDef, .wfSpec, .wfRun, .externalEvent,
            .externalEventList, .nodeRun, .nodeRunList, .taskRun, .taskRunList, .variable, .variableList,
            .wfRunIDList, .taskRunIDList, .variableIDList, .serverVersion, .wfSpecIDList, .taskDefIDList,
            .externalEventDefIDList, .scheduledTask:
            throw LHError(.invalidArgument, "\(Lhwire_Envelope(id: 0, request).kindName) is a response, not a request")
        default:
            throw LHError(.unimplemented, "\(Lhwire_Envelope(id: 0, request).kindName) is not implemented by this server yet")
        }
    }
}
