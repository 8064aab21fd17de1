import Foundation
import LHProto
import LHWireProto
import Logging
import NIOCore
import NIOPosix
import NIOSSL

/// The server's side of the protocol: accepts connections and sets up each
/// one's pipeline (TLS, frames, protocol errors, hello, heartbeats), handing
/// it on as an `NIOAsyncChannel` of envelopes or completed by the caller.
public enum LHListener {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// nil: plaintext (an explicit opt-out).
        public var tls: LHTLS.ServerConfiguration?
        public var maxFrameBytes: Int
        public var heartbeatInterval: TimeAmount
        public var welcome: Lhwire_Welcome
        /// Whether a client with this hello is served: nil, or the error it
        /// is refused with before the welcome (the connection then closes).
        public var admit: (@Sendable (Lhwire_Hello) -> LHError?)?

        public init(
            host: String = "127.0.0.1", port: Int = 2023, tls: LHTLS.ServerConfiguration?,
            maxFrameBytes: Int = LHFrame.defaultMaxFrameBytes, heartbeatInterval: TimeAmount = .seconds(5),
            welcome: Lhwire_Welcome = .init()
        ) {
            self.host = host
            self.port = port
            self.tls = tls
            self.maxFrameBytes = maxFrameBytes
            self.heartbeatInterval = heartbeatInterval
            self.welcome = welcome
        }
    }

    public typealias Connection = NIOAsyncChannel<Lhwire_Envelope, Lhwire_Envelope>

    /// Binds the listening socket. Port 0 picks a free port: read it from
    /// `channel.channel.localAddress`.
    public static func bind(
        _ config: Configuration,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger
    ) async throws -> NIOAsyncChannel<Connection, Never> {
        try await bind(config, group: group, logger: logger) { channel in
            try Connection(
                wrappingChannelSynchronously: channel,
                configuration: .init(inboundType: Lhwire_Envelope.self, outboundType: Lhwire_Envelope.self)
            )
        }
    }

    /// Binds the listening socket; `finish` completes each accepted
    /// connection's pipeline on its event loop, after the hello handler
    /// (e.g. with a handler that answers the envelopes right there), and
    /// returns what the accept sequence yields for it.
    public static func bind<Accepted: Sendable>(
        _ config: Configuration,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger,
        finish: @escaping @Sendable (Channel) throws -> Accepted
    ) async throws -> NIOAsyncChannel<Accepted, Never> {
        let sslContext = try config.tls.map { try LHTLS.makeServerContext($0) }
        var welcome = config.welcome
        welcome.protocolVersion = LHProtocol.version
        welcome.maxFrameBytes = UInt32(config.maxFrameBytes)
        welcome.heartbeatIntervalSeconds = UInt32(max(1, config.heartbeatInterval.nanoseconds / 1_000_000_000))
        let finalWelcome = welcome
        do {
            return try await bindSocket(
                config, group: group, sslContext: sslContext, welcome: finalWelcome, logger: logger, finish: finish)
        } catch let error as IOError {
            throw LHError(
                .unavailable,
                "cannot listen on \(config.host):\(config.port): \(String(cString: strerror(error.errnoCode)))\(Self.hint(errno: error.errnoCode))",
                cause: error)
        } catch let error as SocketAddressError.UnknownHost {
            throw LHError(
                .invalidArgument,
                "cannot listen on \(config.host):\(config.port): the host name does not resolve (\(error.errorDescription))",
                cause: error)
        } catch let error as SocketAddressError {
            throw LHError(.invalidArgument, "cannot listen on \(config.host):\(config.port): \(error)", cause: error)
        }
    }

    /// What to do about a listening socket's error, for the common ones.
    static func hint(errno code: Int32) -> String {
        switch code {
        case EADDRINUSE: return " (another process, perhaps another lh-server, listens there; pick another port)"
        case EADDRNOTAVAIL: return " (no network interface of this machine has that address)"
        case EACCES: return " (ports below 1024 need privileges)"
        default: return ""
        }
    }

    private static func bindSocket<Accepted: Sendable>(
        _ config: Configuration, group: EventLoopGroup, sslContext: NIOSSLContext?,
        welcome finalWelcome: Lhwire_Welcome,
        logger: Logger, finish: @escaping @Sendable (Channel) throws -> Accepted
    ) async throws -> NIOAsyncChannel<Accepted, Never> {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: config.host, port: config.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let sslContext {
                        try sync.addHandler(NIOSSLServerHandler(context: sslContext))
                    }
                    try sync.addHandler(LHFlushCoalescingHandler())
                    try sync.addHandler(ByteToMessageHandler(LHFrameDecoder(maxFrameBytes: config.maxFrameBytes)))
                    try sync.addHandler(MessageToByteHandler(LHFrameEncoder()))
                    try sync.addHandler(LHProtocolErrorHandler(logger: logger))
                    try sync.addHandlers(
                        LHHeartbeatHandler.handlers(interval: config.heartbeatInterval, logger: logger))
                    try sync.addHandler(LHServerHelloHandler(welcome: finalWelcome, admit: config.admit))
                    return try finish(channel)
                }
            }
    }
}
