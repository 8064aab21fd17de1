import Foundation
import LHProto
import LHWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The `lh-server` process's listener as a Service: accepts connections and
/// answers each request through its ``LHRequestRouter``: the frequent ones
/// handed to it on the event loop, the rest in a task each, so many requests
/// may be in flight on one connection. Stops accepting on graceful shutdown.
public final class LHServer: Service, Sendable {
    public let configuration: LHServerConfiguration
    private let router: any LHRequestRouter
    fileprivate let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        var connections: [ObjectIdentifier: any Channel] = [:]
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
        let serverChannel: NIOAsyncChannel<any Channel, Never>
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
            ) { channel in
                // Requests are answered by a handler on the connection's event
                // loop: no task per connection or per frequent request.
                try channel.pipeline.syncOperations.addHandler(LHRequestHandler(server: self, channel: channel))
                return channel
            }
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
            try await serverChannel.executeThenClose { inbound in
                for try await channel in inbound {
                    let open = state.withLockedValue { s -> Bool in
                        guard !s.shuttingDown else { return false }
                        s.connections[ObjectIdentifier(channel)] = channel
                        return true
                    }
                    if !open { channel.close(promise: nil) }
                }
            }
        } onGracefulShutdown: {
            self.logger.notice("shutting down: no longer accepting connections")
            serverChannel.channel.close(promise: nil)
            // Requests being answered finish (their commits are durable either
            // way); then the open connections are closed.
            let open = self.state.withLockedValue { s -> [any Channel] in
                s.shuttingDown = true
                return Array(s.connections.values)
            }
            for channel in open {
                channel.eventLoop.scheduleTask(in: .milliseconds(200)) { channel.close(promise: nil) }
            }
        }
        // Stopped accepting: wait for the connections still open to close.
        let open = state.withLockedValue { Array($0.connections.values) }
        for channel in open { try? await channel.closeFuture.get() }
    }

    static var version: LittleHorseVersion {
        var v = LittleHorseVersion()
        v.majorVersion = LHServerConfiguration.version.major
        v.minorVersion = LHServerConfiguration.version.minor
        v.patchVersion = LHServerConfiguration.version.patch
        return v
    }

    /// Answers one request of a connection: the frequent ones handed
    /// straight to the processor (``LHRequestRouter/handleDirectly``), the
    /// others in a task of their own. Never throws: one request's trouble
    /// never reaches another.
    fileprivate func dispatch(_ envelope: Lhwire_Envelope, session: LHSession, logger: Logger) {
        let responder = session.responder
        let id = envelope.id
        guard let kind = envelope.kind else {
            responder.yield(Lhwire_Envelope(id: id, .error(LHError(.invalidArgument, "empty envelope: no request kind set").wire)))
            return
        }
        let handled = router.handleDirectly(kind, session: session) { result in
            if let reply = Self.reply(to: id, kind, result, logger: logger) { responder.yield(reply) }
        }
        guard !handled else { return }
        Task {
            let result: Result<Lhwire_Envelope.OneOf_Kind?, Error>
            do {
                result = .success(try await self.router.handle(kind, session: session))
            } catch {
                result = .failure(error)
            }
            if let reply = Self.reply(to: id, kind, result, logger: logger) { responder.yield(reply) }
        }
    }

    fileprivate func connectionEnded(_ session: LHSession, channel: any Channel) {
        _ = state.withLockedValue { $0.connections.removeValue(forKey: ObjectIdentifier(channel)) }
        let router = self.router
        Task { await router.connectionClosed(session) }
    }

    /// The frame that answers request `id`: none for id 0 or no response.
    static func reply(to id: UInt64, _ request: Lhwire_Envelope.OneOf_Kind, _ result: Result<Lhwire_Envelope.OneOf_Kind?, Error>,
                      logger: Logger) -> Lhwire_Envelope? {
        switch result {
        case .success(let reply):
            guard let reply, id != 0 else { return nil }
            return Lhwire_Envelope(id: id, reply)
        case .failure(let error as LHError):
            return Lhwire_Envelope(id: id, .error(error.wire))
        case .failure(let error):
            let name = Lhwire_Envelope(id: id, request).kindName
            logger.error("request failed", metadata: [LHLog.error: "\(error)", "lh.kind": "\(name)"])
            return Lhwire_Envelope(id: id, .error(LHError(.internal, "\(name) failed: \(error)").wire))
        }
    }
}

/// The last handler of a server connection's pipeline: learns the client's
/// id and role from the hello and hands every other envelope to the server,
/// on the event loop.
final class LHRequestHandler: ChannelInboundHandler {
    typealias InboundIn = Lhwire_Envelope

    private let server: LHServer
    private var session: LHSession
    private var logger: Logger

    init(server: LHServer, channel: any Channel) {
        let remote = channel.remoteAddress.map { "\($0)" } ?? "?"
        self.server = server
        session = LHSession(remote: remote, responder: LHResponder(channel: channel))
        logger = server.logger
        logger[metadataKey: LHLog.remote] = "\(remote)"
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        if case .hello(let hello) = envelope.kind {
            session.clientId = hello.clientID
            session.role = hello.role
            logger[metadataKey: LHLog.clientId] = "\(hello.clientID)"
            logger.debug("client connected", metadata: ["lh.role": "\(hello.role)"])
            return
        }
        server.dispatch(envelope, session: session, logger: logger)
    }

    func channelInactive(context: ChannelHandlerContext) {
        logger.debug("connection closed")
        server.connectionEnded(session, channel: context.channel)
        context.fireChannelInactive()
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
        if let group = FrameGroup.current {
            group.add(envelope, to: channel)
        } else {
            channel.writeAndFlush(envelope, promise: nil)
        }
    }

    /// Runs `body`; the frames it yields (on this thread) are sent when it
    /// returns, in one hand-over per event loop instead of one per frame,
    /// and each connection's frames in one flush (a report's answer and the
    /// next task for the same worker leave in one write). Order per
    /// connection is kept. Nested calls join the outer one.
    public static func grouping(_ body: () -> Void) {
        guard FrameGroup.current == nil else { return body() }
        let group = FrameGroup()
        FrameGroup.current = group
        body()
        FrameGroup.current = nil
        group.send()
    }
}

/// The frames yielded inside ``LHResponder/grouping(_:)`` on one thread.
private final class FrameGroup {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
        return key
    }()

    /// The group collecting on this thread, if any.
    static var current: FrameGroup? {
        get { pthread_getspecific(key).map { Unmanaged<FrameGroup>.fromOpaque($0).takeUnretainedValue() } }
        set { pthread_setspecific(key, newValue.map { Unmanaged.passUnretained($0).toOpaque() }) }
    }

    private var loops: [ObjectIdentifier: (loop: any EventLoop, frames: [(any Channel, Lhwire_Envelope)])] = [:]

    func add(_ envelope: Lhwire_Envelope, to channel: any Channel) {
        loops[ObjectIdentifier(channel.eventLoop), default: (channel.eventLoop, [])].frames.append((channel, envelope))
    }

    func send() {
        for (loop, frames) in loops.values {
            loop.execute {
                var written: [ObjectIdentifier: any Channel] = [:]
                for (channel, envelope) in frames {
                    channel.write(envelope, promise: nil)
                    written[ObjectIdentifier(channel)] = channel
                }
                for channel in written.values { channel.flush() }
            }
        }
        loops = [:]
    }
}

/// Answers requests. The server calls `handle` concurrently for requests of
/// one connection and of many.
public protocol LHRequestRouter: Sendable {
    /// Takes a request without a task when it can (on the connection's event
    /// loop: must not block): returns true and calls `reply` once, from any
    /// thread, with what `handle` would return; false to have `handle`
    /// called in a task instead.
    func handleDirectly(_ request: Lhwire_Envelope.OneOf_Kind, session: LHSession,
                        reply: @escaping @Sendable (Result<Lhwire_Envelope.OneOf_Kind?, Error>) -> Void) -> Bool
    /// The response kind, nil for a frame that needs no response, or an
    /// ``LHError`` thrown to answer with an error.
    func handle(_ request: Lhwire_Envelope.OneOf_Kind, session: LHSession) async throws -> Lhwire_Envelope.OneOf_Kind?
    /// Called once when a connection ends.
    func connectionClosed(_ session: LHSession) async
}

extension LHRequestRouter {
    public func connectionClosed(_ session: LHSession) async {}
    public func handleDirectly(_ request: Lhwire_Envelope.OneOf_Kind, session: LHSession,
                               reply: @escaping @Sendable (Result<Lhwire_Envelope.OneOf_Kind?, Error>) -> Void) -> Bool { false }
}

public typealias LittleHorseVersion = Littlehorse_LittleHorseVersion
