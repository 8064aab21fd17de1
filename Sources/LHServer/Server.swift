import Foundation
import LHProto
import LHWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The `lh-server` process's listener as a Service: accepts connections and
/// answers each request through its ``LHRequestRouter``, one child task per
/// connection and per request, so many requests may be in flight on one
/// connection. Stops accepting on graceful shutdown.
public final class LHServer: Service, Sendable {
    public let configuration: LHServerConfiguration
    private let router: any LHRequestRouter
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        var connections: [ObjectIdentifier: Channel] = [:]
        var shuttingDown = false
        var boundPort: Int?
        var caPath: String?
        var listeners: [CheckedContinuation<Int, Error>] = []
        var failure: Error?
    }

    public init(configuration: LHServerConfiguration, router: any LHRequestRouter, logger: Logger) {
        self.configuration = configuration
        self.router = router
        self.logger = logger
    }

    /// The CA file clients should trust, when the server made a development CA.
    public var developmentCAPath: String? { state.withLockedValue { $0.caPath } }

    /// Waits until the listener is bound and returns its port.
    public func boundPort() async throws -> Int {
        try await withCheckedThrowingContinuation { continuation in
            let ready: Result<Int, Error>? = state.withLockedValue { state in
                if let port = state.boundPort { return .success(port) }
                if let failure = state.failure { return .failure(failure) }
                state.listeners.append(continuation)
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    /// Resolves the TLS settings, making the development CA when needed.
    func listenerTLS() throws -> LHTLS.ServerConfiguration? {
        switch configuration.tls {
        case .plaintext:
            logger.warning("TLS IS OFF: lh-server accepts plaintext connections (--plaintext); never do this outside a trusted network")
            return nil
        case .files(let cert, let key):
            return .init(certificatePath: cert, keyPath: key, clientCAPath: configuration.clientCAPath)
        case .developmentCA:
            let files = try DevCertificateAuthority.ensure(in: configuration.dataDirectory.appendingPathComponent("tls"), hostnames: configuration.tlsHostnames)
            state.withLockedValue { $0.caPath = files.caCertPath }
            logger.notice(
                files.created ? "made a development CA and server certificate" : "using the development CA",
                metadata: ["lh.caCert": "\(files.caCertPath)"]
            )
            return .init(certificatePath: files.serverCertPath, keyPath: files.serverKeyPath, clientCAPath: configuration.clientCAPath)
        }
    }

    public func run() async throws {
        let serverChannel: NIOAsyncChannel<LHListener.Connection, Never>
        do {
            var welcome = Lhwire_Welcome()
            welcome.serverID = configuration.serverId
            welcome.serverVersion = Self.version
            serverChannel = try await LHListener.bind(
                .init(
                    host: configuration.host, port: configuration.port, tls: try listenerTLS(),
                    maxFrameBytes: configuration.maxFrameBytes, heartbeatInterval: configuration.heartbeatInterval,
                    welcome: welcome
                ),
                logger: logger
            )
        } catch {
            let waiting = state.withLockedValue { state in
                state.failure = error
                defer { state.listeners = [] }
                return state.listeners
            }
            waiting.forEach { $0.resume(throwing: error) }
            throw error
        }
        let port = serverChannel.channel.localAddress?.port ?? configuration.port
        let waiting = state.withLockedValue { state in
            state.boundPort = port
            defer { state.listeners = [] }
            return state.listeners
        }
        waiting.forEach { $0.resume(returning: port) }
        logger.notice("listening", metadata: ["lh.address": "\(configuration.host):\(port)"])

        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await serverChannel.executeThenClose { inbound in
                    for try await connection in inbound {
                        let channel = connection.channel
                        let open = state.withLockedValue { s -> Bool in
                            guard !s.shuttingDown else { return false }
                            s.connections[ObjectIdentifier(channel)] = channel
                            return true
                        }
                        guard open else {
                            channel.close(promise: nil)
                            continue
                        }
                        group.addTask {
                            await self.serve(connection)
                            _ = self.state.withLockedValue { $0.connections.removeValue(forKey: ObjectIdentifier(channel)) }
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            self.logger.notice("shutting down: no longer accepting connections")
            serverChannel.channel.close(promise: nil)
            // Requests being answered finish (their commits are durable either
            // way); then the open connections are closed.
            let open = self.state.withLockedValue { s -> [Channel] in
                s.shuttingDown = true
                return Array(s.connections.values)
            }
            for channel in open {
                channel.eventLoop.scheduleTask(in: .milliseconds(200)) { channel.close(promise: nil) }
            }
        }
    }

    static var version: LittleHorseVersion {
        var v = LittleHorseVersion()
        v.majorVersion = LHServerConfiguration.version.major
        v.minorVersion = LHServerConfiguration.version.minor
        v.patchVersion = LHServerConfiguration.version.patch
        return v
    }

    /// Serves one connection until it closes. Never throws: one connection's
    /// trouble never reaches another.
    private func serve(_ connection: LHListener.Connection) async {
        let remote = connection.channel.remoteAddress.map { "\($0)" } ?? "?"
        var logger = self.logger
        logger[metadataKey: LHLog.remote] = "\(remote)"
        let responder = LHResponder(channel: connection.channel)
        do {
            try await connection.executeThenClose { inbound, _ in
                try await withThrowingDiscardingTaskGroup { group in
                    var session = LHSession(remote: remote, responder: responder)
                    do {
                        for try await envelope in inbound {
                            if case .hello(let hello) = envelope.kind {
                                session.clientId = hello.clientID
                                session.role = hello.role
                                logger[metadataKey: LHLog.clientId] = "\(hello.clientID)"
                                logger.debug("client connected", metadata: ["lh.role": "\(hello.role)"])
                                continue
                            }
                            let current = session
                            let requestLogger = logger
                            group.addTask {
                                let reply = await self.answer(envelope, session: current, logger: requestLogger)
                                if let reply { responder.yield(reply) }
                            }
                        }
                    } catch {
                        logger.debug("connection ended with an error", metadata: [LHLog.error: "\(error)"])
                    }
                    await self.router.connectionClosed(session)
                }
            }
        } catch {
            logger.debug("connection closed", metadata: [LHLog.error: "\(error)"])
        }
    }

    private func answer(_ envelope: Lhwire_Envelope, session: LHSession, logger: Logger) async -> Lhwire_Envelope? {
        guard let kind = envelope.kind else {
            return Lhwire_Envelope(id: envelope.id, .error(LHError(.invalidArgument, "empty envelope: no request kind set").wire))
        }
        do {
            guard let reply = try await router.handle(kind, session: session) else { return nil }
            return envelope.id == 0 ? nil : Lhwire_Envelope(id: envelope.id, reply)
        } catch let error as LHError {
            return Lhwire_Envelope(id: envelope.id, .error(error.wire))
        } catch {
            logger.error("request failed", metadata: [LHLog.error: "\(error)", "lh.kind": "\(envelope.kindName)"])
            return Lhwire_Envelope(id: envelope.id, .error(LHError(.internal, "\(envelope.kindName) failed: \(error)").wire))
        }
    }
}

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

/// Sends frames to one connection's peer from any thread: straight into the
/// channel (NIO hops to its event loop), no task or stream in between.
/// Frames sent from one thread go out in the order sent; after the
/// connection closed they are dropped.
public struct LHResponder: Sendable {
    let channel: any Channel

    public init(channel: any Channel) { self.channel = channel }

    public func yield(_ envelope: Lhwire_Envelope) {
        channel.writeAndFlush(envelope, promise: nil)
    }
}

/// Answers requests. The server calls `handle` concurrently for requests of
/// one connection and of many.
public protocol LHRequestRouter: Sendable {
    /// The response kind, nil for a frame that needs no response, or an
    /// ``LHError`` thrown to answer with an error.
    func handle(_ request: Lhwire_Envelope.OneOf_Kind, session: LHSession) async throws -> Lhwire_Envelope.OneOf_Kind?
    /// Called once when a connection ends.
    func connectionClosed(_ session: LHSession) async
}

extension LHRequestRouter {
    public func connectionClosed(_ session: LHSession) async {}
}

public typealias LittleHorseVersion = Littlehorse_LittleHorseVersion
