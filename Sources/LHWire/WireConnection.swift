import LHProto
import LHWireProto
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// One client connection to an `lh-server`: TLS, framing, hello, heartbeats,
/// and many requests in flight at once, each matched to its response by id.
///
/// ```swift
/// let conn = try await LHWireConnection.connect(.init(host: "127.0.0.1", port: 2023,
///                                                     tls: .init(caCertPath: "lh-data/tls/ca.pem")))
/// let reply = try await conn.request(.getServerVersion(.init()))
/// ```
public final class LHWireConnection: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// TLS settings; nil connects in plaintext (only to a server started
        /// with plaintext explicitly allowed).
        public var tls: LHTLS.ClientConfiguration?
        public var clientId: String
        public var role: Lhwire_Role
        public var maxFrameBytes: Int
        public var heartbeatInterval: TimeAmount
        public var connectTimeout: TimeAmount
        /// A request with no answer within this time fails with UNAVAILABLE
        /// (the connection stays open; a late answer is dropped). Checked
        /// once a second (or four times per timeout, when shorter), so it
        /// fails up to that much later.
        public var requestTimeout: TimeAmount
        /// Set: the TLS handshake and the hello must be done this long after
        /// the TCP connection, else the connection is given up (a client
        /// with several servers moves on from a paused one at once instead
        /// of after the heartbeat timeout). nil: the request timeout.
        public var helloTimeout: TimeAmount?

        public init(
            host: String, port: Int, tls: LHTLS.ClientConfiguration? = .init(),
            clientId: String = "lh-client", role: Lhwire_Role = .admin,
            maxFrameBytes: Int = LHFrame.defaultMaxFrameBytes,
            heartbeatInterval: TimeAmount = .seconds(5), connectTimeout: TimeAmount = .seconds(10),
            requestTimeout: TimeAmount = .seconds(30)
        ) {
            self.requestTimeout = requestTimeout
            self.host = host
            self.port = port
            self.tls = tls
            self.clientId = clientId
            self.role = role
            self.maxFrameBytes = maxFrameBytes
            self.heartbeatInterval = heartbeatInterval
            self.connectTimeout = connectTimeout
        }
    }

    /// Called on the event loop for each frame that is not a response (id 0),
    /// such as a ScheduledTask pushed to a worker.
    public typealias PushHandler = @Sendable (Lhwire_Envelope) -> Void

    public let channel: Channel
    /// The server's welcome.
    public let welcome: Lhwire_Welcome
    private let handler: NIOLoopBound<LHClientRequestHandler>
    private let stats: LHClientRequestHandler.Stats

    private init(
        channel: Channel, welcome: Lhwire_Welcome, handler: NIOLoopBound<LHClientRequestHandler>,
        stats: LHClientRequestHandler.Stats
    ) {
        self.channel = channel
        self.welcome = welcome
        self.handler = handler
        self.stats = stats
    }

    /// Connects, does the TLS handshake and the hello.
    public static func connect(
        _ config: Configuration,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "lh.wire.client"),
        onPush: PushHandler? = nil
    ) async throws -> LHWireConnection {
        let sslContext = try config.tls.map { try LHTLS.makeClientContext($0) }
        let stats = LHClientRequestHandler.Stats()
        let endpoint = "\(config.host):\(config.port)"
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(config.connectTimeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        if let sslContext {
                            try sync.addHandler(
                                NIOSSLClientHandler(
                                    context: sslContext, serverHostname: LHTLS.serverHostname(for: config.host)))
                        }
                        try sync.addHandler(LHFlushCoalescingHandler())
                        try sync.addHandler(ByteToMessageHandler(LHFrameDecoder(maxFrameBytes: config.maxFrameBytes)))
                        try sync.addHandler(MessageToByteHandler(LHFrameEncoder()))
                        try sync.addHandlers(
                            LHHeartbeatHandler.handlers(interval: config.heartbeatInterval, logger: logger))
                        try sync.addHandler(
                            LHClientRequestHandler(
                                endpoint: endpoint, stats: stats, logger: logger, requestTimeout: config.requestTimeout,
                                onPush: onPush))
                    }
                }
                .connect(host: config.host, port: config.port).get()
        } catch {
            throw LHError(.unavailable, "cannot connect to \(endpoint): \(error)", cause: error)
        }
        let handler: NIOLoopBound<LHClientRequestHandler>
        do {
            handler = try await channel.eventLoop.submit {
                NIOLoopBound(
                    try channel.pipeline.syncOperations.handler(type: LHClientRequestHandler.self),
                    eventLoop: channel.eventLoop)
            }.get()
        } catch {
            // The connection closed before it was set up (e.g. a failed TLS handshake).
            throw stats.closeReason.withLockedValue { $0 }
                ?? LHError(.unavailable, "connection to \(endpoint) closed while connecting: \(error)", cause: error)
        }

        var hello = Lhwire_Hello()
        hello.protocolVersion = LHProtocol.version
        hello.clientID = config.clientId
        hello.role = config.role
        hello.heartbeatIntervalSeconds = UInt32(max(1, config.heartbeatInterval.nanoseconds / 1_000_000_000))
        let reply: Lhwire_Envelope.OneOf_Kind
        let gaveUp = NIOLockedValueBox<LHError?>(nil)
        let helloTimer = config.helloTimeout.map { timeout in
            channel.eventLoop.scheduleTask(in: timeout) {
                gaveUp.withLockedValue {
                    $0 = LHError(
                        .unavailable,
                        "no welcome from \(endpoint) within \(LHClientRequestHandler.describe(timeout)) (the server is paused or overloaded)"
                    )
                }
                channel.close(promise: nil)
            }
        }
        do {
            reply = try await Self.send(.hello(hello), on: channel, stats: stats)
            helloTimer?.cancel()
            // The welcome came as the timer gave up (the channel is closing).
            if let late = gaveUp.withLockedValue({ $0 }) { throw late }
        } catch {
            helloTimer?.cancel()
            channel.close(promise: nil)
            throw gaveUp.withLockedValue { $0 } ?? error
        }
        guard case .welcome(let welcome) = reply else {
            channel.close(promise: nil)
            throw LHError(
                .malformedFrame,
                "server at \(endpoint) answered the hello with \(Lhwire_Envelope(id: 0, reply).kindName)")
        }
        return LHWireConnection(channel: channel, welcome: welcome, handler: handler, stats: stats)
    }

    /// Sends one request and waits for its response. An error response is
    /// thrown as ``LHError``.
    public func request(_ kind: Lhwire_Envelope.OneOf_Kind) async throws -> Lhwire_Envelope.OneOf_Kind {
        try await Self.send(kind, on: channel, stats: stats)
    }

    /// Sends one request; `completion` gets its response (an error response
    /// as ``LHError``) on the connection's event loop: no task waits for it.
    public func request(
        _ kind: Lhwire_Envelope.OneOf_Kind,
        completion: @escaping @Sendable (Result<Lhwire_Envelope.OneOf_Kind, Error>) -> Void
    ) {
        Self.response(to: kind, on: channel, stats: stats).whenComplete { result in
            completion(result.flatMap(Self.unwrap))
        }
    }

    private static func send(
        _ kind: Lhwire_Envelope.OneOf_Kind, on channel: Channel, stats: LHClientRequestHandler.Stats
    ) async throws -> Lhwire_Envelope.OneOf_Kind {
        try unwrap(try await response(to: kind, on: channel, stats: stats).get()).get()
    }

    private static func response(
        to kind: Lhwire_Envelope.OneOf_Kind, on channel: Channel,
        stats: LHClientRequestHandler.Stats
    ) -> EventLoopFuture<Lhwire_Envelope> {
        let promise = channel.eventLoop.makePromise(of: Lhwire_Envelope.self)
        // A write that never reaches the handler (the channel closed already)
        // must still fail the request; failing a completed promise is a no-op.
        channel.writeAndFlush(LHClientRequestHandler.Outbound(kind: kind, promise: promise)).whenFailure { error in
            promise.fail(
                stats.closeReason.withLockedValue { $0 }
                    ?? LHError(
                        .connectionClosed, "connection closed before the request was sent: \(error)", cause: error))
        }
        return promise.futureResult
    }

    private static func unwrap(_ response: Lhwire_Envelope) -> Result<Lhwire_Envelope.OneOf_Kind, Error> {
        if case .error(let error) = response.kind {
            return .failure(LHError(wire: error))
        }
        guard let kind = response.kind else {
            return .failure(LHError(.malformedFrame, "response \(response.id) is an empty envelope"))
        }
        return .success(kind)
    }

    /// Sends a frame that expects no response (id 0).
    public func send(_ kind: Lhwire_Envelope.OneOf_Kind) async throws {
        try await channel.writeAndFlush(LHClientRequestHandler.Outbound(kind: kind, promise: nil))
    }

    /// Responses that matched no request in flight (logged and dropped).
    public var unmatchedResponses: Int { stats.unmatched.withLockedValue { $0 } }

    /// Closes the connection; requests in flight fail with
    /// ``LHError/Code/connectionClosed``.
    public func close() async {
        try? await channel.close()
    }

    /// Completes when the connection is closed, from either side.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }
}

/// Matches responses to requests by id on the event loop.
final class LHClientRequestHandler: ChannelDuplexHandler {
    typealias InboundIn = Lhwire_Envelope
    typealias OutboundIn = Outbound
    typealias OutboundOut = Lhwire_Envelope

    struct Outbound: Sendable {
        var kind: Lhwire_Envelope.OneOf_Kind
        /// nil: a frame with id 0 that expects no response.
        var promise: EventLoopPromise<Lhwire_Envelope>?
    }

    final class Stats: Sendable {
        let unmatched = NIOLockedValueBox(0)
        /// Why the connection closed, readable off the event loop.
        let closeReason = NIOLockedValueBox<LHError?>(nil)
    }

    private let endpoint: String
    private let stats: Stats
    private let logger: Logger
    private let onPush: LHWireConnection.PushHandler?
    private let requestTimeout: TimeAmount
    private var nextId: UInt64 = 1
    private var pending: [UInt64: (promise: EventLoopPromise<Lhwire_Envelope>, deadline: NIODeadline)] = [:]
    private var closeReason: LHError?
    /// Fails the requests past their deadline; runs while any is in flight.
    /// (One timer per connection: a timer per request, never cancelled,
    /// kept a 30 s backlog of timers in a busy worker's event loop.)
    private var sweep: RepeatedTask?

    init(
        endpoint: String, stats: Stats, logger: Logger, requestTimeout: TimeAmount,
        onPush: LHWireConnection.PushHandler?
    ) {
        self.requestTimeout = requestTimeout
        self.endpoint = endpoint
        self.stats = stats
        self.logger = logger
        self.onPush = onPush
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let outbound = unwrapOutboundIn(data)
        guard let responsePromise = outbound.promise else {
            context.write(wrapOutboundOut(Lhwire_Envelope(id: 0, outbound.kind)), promise: promise)
            return
        }
        if let closeReason {
            responsePromise.fail(closeReason)
            promise?.fail(closeReason)
            return
        }
        let id = nextId
        nextId &+= 1
        pending[id] = (responsePromise, .now() + requestTimeout)
        if sweep == nil { startSweep(on: context.eventLoop) }
        context.write(wrapOutboundOut(Lhwire_Envelope(id: id, outbound.kind)), promise: promise)
    }

    private func startSweep(on eventLoop: EventLoop) {
        let every = TimeAmount.nanoseconds(min(1_000_000_000, max(requestTimeout.nanoseconds / 4, 10_000_000)))
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        sweep = eventLoop.scheduleRepeatedTask(initialDelay: every, delay: every) { _ in bound.value.failOverdue() }
    }

    private func failOverdue() {
        let now = NIODeadline.now()
        let overdue = pending.filter { $0.value.deadline <= now }
        for (id, entry) in overdue {
            pending[id] = nil
            entry.promise.fail(
                LHError(.unavailable, "no answer from \(endpoint) within \(Self.describe(requestTimeout))"))
        }
        if pending.isEmpty {
            sweep?.cancel()
            sweep = nil
        }
    }

    static func describe(_ t: TimeAmount) -> String {
        t.nanoseconds % 1_000_000_000 == 0 ? "\(t.nanoseconds / 1_000_000_000) s" : "\(t.nanoseconds / 1_000_000) ms"
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        if envelope.id == 0 {
            if case .error(let error) = envelope.kind {
                // A protocol error: the server closes the connection next.
                closeReason = LHError(wire: error)
                let reason = closeReason
                stats.closeReason.withLockedValue { $0 = reason }
                logger.warning("server reported a protocol error", metadata: [LHLog.error: "\(LHError(wire: error))"])
                return
            }
            onPush?(envelope)
            return
        }
        guard let promise = pending.removeValue(forKey: envelope.id)?.promise else {
            stats.unmatched.withLockedValue { $0 += 1 }
            logger.warning(
                "dropped a response whose id matches no request in flight",
                metadata: [
                    LHLog.requestId: "\(envelope.id)", "lh.kind": "\(envelope.kindName)",
                ])
            return
        }
        promise.succeed(envelope)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if closeReason == nil {
            if let lhError = error as? LHError {
                closeReason = lhError
            } else {
                // NIOSSL names a certificate the client does not trust only in BoringSSL's words.
                let untrusted =
                    "\(error)".contains("CERTIFICATE_VERIFY_FAILED")
                    ? " (the server's certificate is not signed by a CA this client trusts: set LHC_CA_CERT to the CA that signed it; lh-server prints the path of its development CA)"
                    : ""
                closeReason = LHError(
                    .unavailable, "connection to \(endpoint) failed\(untrusted): \(error)", cause: error)
            }
            let reason = closeReason
            stats.closeReason.withLockedValue { $0 = reason }
        }
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let silent = event as? LHPeerSilent, closeReason == nil {
            closeReason = LHError(
                .connectionClosed,
                "connection to \(endpoint) closed: nothing came from the server for \(Self.describe(silent.silentFor)) (its heartbeats stopped)"
            )
            let reason = closeReason
            stats.closeReason.withLockedValue { $0 = reason }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let reason = closeReason ?? LHError(.connectionClosed, "connection to \(endpoint) closed")
        closeReason = reason
        stats.closeReason.withLockedValue { $0 = reason }
        let waiting = pending
        pending.removeAll()
        sweep?.cancel()
        sweep = nil
        for (_, entry) in waiting { entry.promise.fail(reason) }
        context.fireChannelInactive()
    }
}
