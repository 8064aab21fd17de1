import LHProto

/// Identifies one connection for as long as it is open.
public final class LHConnectionToken: Sendable {
    public init() {}
    public var id: ObjectIdentifier { ObjectIdentifier(self) }
}

/// What the server knows of one connection.
public struct LHSession: Sendable {
    public let token = LHConnectionToken()
    public var remote: String
    public var clientId = ""
    public var role = Lhwire_Role.admin
    /// Sends a frame to this connection's peer (e.g. a pushed ScheduledTask).
    public let responder: LHResponder

    init(remote: String, responder: LHResponder) {
        self.remote = remote
        self.responder = responder
    }
}
