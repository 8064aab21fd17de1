@_exported import LHProto
import LHWire
import LHWireProto
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// An async client of the admin API over one connection. Safe to share:
/// many calls may be in flight at once.
///
/// ```swift
/// let client = try await LittleHorseClient.connect(try LHConfig.fromEnvironment())
/// let version = try await client.serverVersion()
/// ```
///
/// When its connection is lost (the server was killed, restarted, or a
/// cluster's member left), the next call connects again, to the first of
/// `LHC_API_HOST`'s servers that answers. A read (Get, List, Search) that
/// was in flight is sent again on the new connection; a command that was in
/// flight fails with UNAVAILABLE or CONNECTION_CLOSED, because the server
/// may have committed it: the caller retries it (with the WfRun id or the
/// event guid that make it idempotent).
public final class LittleHorseClient: Sendable {
    private struct State {
        var connection: LHWireConnection
        /// The endpoint of `connection` (of the config's list).
        var endpoint: (host: String, port: Int)?
        var reconnecting: Task<Opened, any Error>?
        var closed = false
    }

    private let state: Mutex<State>
    /// nil: made from a bare connection, which is never replaced.
    private let config: LHConfig?
    private let logger: Logger

    /// The current connection.
    package var connection: LHWireConnection { state.withLock { $0.connection } }

    package convenience init(
        connection: LHWireConnection, config: LHConfig? = nil, logger: Logger = Logger(label: "lh.client")
    ) {
        self.init(connection: connection, endpoint: nil, config: config, logger: logger)
    }

    private init(
        connection: LHWireConnection, endpoint: (host: String, port: Int)?, config: LHConfig?, logger: Logger
    ) {
        self.state = Mutex(State(connection: connection, endpoint: endpoint))
        self.config = config
        self.logger = logger
    }

    public static func connect(_ config: LHConfig, logger: Logger = Logger(label: "lh.client")) async throws
        -> LittleHorseClient
    {
        let (connection, endpoint) = try await Self.open(config, logger: logger)
        return LittleHorseClient(connection: connection, endpoint: endpoint, config: config, logger: logger)
    }

    private typealias Opened = (connection: LHWireConnection, endpoint: (host: String, port: Int))

    private static func open(_ config: LHConfig, passingOver lost: (host: String, port: Int)? = nil, logger: Logger)
        async throws -> Opened
    {
        try await config.connectToFirstReachable(role: .admin, passingOver: lost) { wire -> Opened in
            (try await LHWireConnection.connect(wire, logger: logger), (wire.host, wire.port))
        }
    }

    public func close() async {
        let (connection, reconnecting) = state.withLock { s in
            s.closed = true
            return (s.connection, s.reconnecting)
        }
        reconnecting?.cancel()
        await connection.close()
    }

    /// Sends any request and returns the response kind.
    package func call(_ request: Lhwire_Envelope.OneOf_Kind) async throws -> Lhwire_Envelope.OneOf_Kind {
        var connection = self.connection
        if !connection.channel.isActive, config != nil {
            connection = try await reconnect(replacing: connection)
        }
        do {
            return try await connection.request(request)
        } catch let error as LHError where config != nil && !connection.channel.isActive && Self.isRead(request) {
            // The connection was lost with a read in flight: reads have no
            // effect, so it goes again on a new connection.
            logger.debug("connection lost during a read; sending it again", metadata: [LHLog.error: "\(error)"])
            return try await reconnect(replacing: connection).request(request)
        }
    }

    /// Whether `request` only reads (Get, List, Search, the server's version).
    static func isRead(_ request: Lhwire_Envelope.OneOf_Kind) -> Bool {
        let name = Lhwire_Envelope(id: 0, request).kindName
        return name.hasPrefix("get_") || name.hasPrefix("list_") || name.hasPrefix("search_")
    }

    /// A new connection in place of `old` (lost): one connect for all the
    /// calls that found it lost at once.
    private func reconnect(replacing old: LHWireConnection) async throws -> LHWireConnection {
        guard let config else { return old }
        enum Step {
            case use(LHWireConnection)
            case wait(Task<Opened, any Error>)
            case closed
        }
        let logger = self.logger
        let step = state.withLock { s -> Step in
            if s.closed { return .closed }
            if s.connection !== old { return .use(s.connection) }
            if let pending = s.reconnecting { return .wait(pending) }
            let lost = s.endpoint
            let task = Task { try await Self.open(config, passingOver: lost, logger: logger) }
            s.reconnecting = task
            return .wait(task)
        }
        switch step {
        case .use(let connection):
            return connection
        case .closed:
            throw LHError(.connectionClosed, "this client was closed")
        case .wait(let task):
            let fresh: LHWireConnection
            let endpoint: (host: String, port: Int)
            do {
                (fresh, endpoint) = try await task.value
            } catch {
                state.withLock { s in if s.reconnecting == task { s.reconnecting = nil } }
                throw error
            }
            let (installed, closed) = state.withLock { s -> (Bool, Bool) in
                if s.reconnecting == task {
                    s.reconnecting = nil
                    s.connection = fresh
                    s.endpoint = endpoint
                    return (true, s.closed)
                }
                return (false, s.closed)
            }
            if installed { await old.close() }
            if closed {
                await fresh.close()
                throw LHError(.connectionClosed, "this client was closed")
            }
            return fresh
        }
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
