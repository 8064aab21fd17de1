import LHProto
import LHWireProto

/// Identifies one connection for as long as it is open.
package final class LHConnectionToken: Sendable {
    package init() {}
    package var id: ObjectIdentifier { ObjectIdentifier(self) }
}

/// What the server knows of one connection.
package struct LHSession: Sendable {
    package let token = LHConnectionToken()
    package var remote: String
    package var clientId = ""
    package var role = Lhwire_Role.admin
    /// Sends a frame to this connection's peer (e.g. a pushed ScheduledTask).
    package let responder: LHResponder

    /// Another server of the cluster forwarding requests it does not own.
    package var isPeer: Bool { clientId.hasPrefix(ClusterRouting.peerPrefix) }

    init(remote: String, responder: LHResponder) {
        self.remote = remote
        self.responder = responder
    }
}
