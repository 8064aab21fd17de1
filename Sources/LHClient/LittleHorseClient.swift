@_exported import LHProto
import LHWire
import LHWireProto
import Logging
import NIOCore
import NIOPosix

/// An async client of the admin API over one connection. Safe to share:
/// many calls may be in flight at once.
///
/// ```swift
/// let client = try await LittleHorseClient.connect(try LHConfig.fromEnvironment())
/// let version = try await client.serverVersion()
/// ```
public final class LittleHorseClient: Sendable {
    package let connection: LHWireConnection

    package init(connection: LHWireConnection) {
        self.connection = connection
    }

    public static func connect(_ config: LHConfig, logger: Logger = Logger(label: "lh.client")) async throws
        -> LittleHorseClient
    {
        LittleHorseClient(
            connection: try await config.connectToFirstReachable(role: .admin) {
                try await LHWireConnection.connect($0, logger: logger)
            }
        )
    }

    public func close() async { await connection.close() }

    /// Sends any request and returns the response kind.
    package func call(_ request: Lhwire_Envelope.OneOf_Kind) async throws -> Lhwire_Envelope.OneOf_Kind {
        try await connection.request(request)
    }

    private func unexpected(_ reply: Lhwire_Envelope.OneOf_Kind, for request: String) -> LHError {
        LHError(.malformedFrame, "the server answered \(request) with \(Lhwire_Envelope(id: 0, reply).kindName)")
    }

    public func serverVersion() async throws -> Littlehorse_LittleHorseVersion {
        let reply = try await call(.getServerVersion(.init()))
        guard case .serverVersion(let v) = reply else { throw unexpected(reply, for: "get_server_version") }
        return v
    }
}
