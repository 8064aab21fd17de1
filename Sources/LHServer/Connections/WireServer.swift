import Foundation
import LHProto
import LHWire
import LHWireProto
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The `lh-server` process's listener as a Service: accepts connections and
/// answers each request through its ``LHRequestRouter``: the frequent ones
/// handed to it on the event loop, the rest in a task each, so many requests
/// may be in flight on one connection. Stops accepting on graceful shutdown.
package final class WireServer: Service, Sendable {
    package let configuration: LHServerConfiguration
    private let router: any LHRequestRouter
    let logger: Logger
    /// Requests, connections and their errors are counted here.
    let metrics: LHMetrics?
    private let state = NIOLockedValueBox(State())

    private struct State {
        var connections: [ObjectIdentifier: any Channel] = [:]
        var shuttingDown = false
        /// Refused at the connection limit since the last log line.
        var refusedSinceLog = 0
        var boundPort: Int?
        var caPath: String?
        var certificate: (cert: String, key: String)?
        var listeners: [CheckedContinuation<Int, Error>] = []
        var failure: Error?
    }

    package init(
        configuration: LHServerConfiguration, router: any LHRequestRouter, logger: Logger, metrics: LHMetrics? = nil
    ) {
        self.configuration = configuration
        self.router = router
        self.logger = logger
        self.metrics = metrics
    }

    /// The CA file clients should trust, when the server made a development CA.
    package var developmentCAPath: String? { state.withLockedValue { $0.caPath } }

    /// The certificate and key files this server presents (the operator's or
    /// the development CA's), once the listener resolved them; nil with
    /// plaintext.
    package var certificateFiles: (cert: String, key: String)? { state.withLockedValue { $0.certificate } }

    /// Waits until the listener is bound and returns its port.
    package func boundPort() async throws -> Int {
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
        guard let (tls, devCA) = try configuration.tlsFiles() else {
            logger.warning(
                "TLS IS OFF: lh-server accepts plaintext connections (--plaintext); never do this outside a trusted network"
            )
            return nil
        }
        state.withLockedValue { $0.certificate = (tls.certificatePath, tls.keyPath) }
        if let devCA {
            state.withLockedValue { $0.caPath = devCA.caCertPath }
            logger.notice(
                devCA.created ? "made a development CA and server certificate" : "using the development CA",
                metadata: ["lh.caCert": "\(devCA.caCertPath)"])
        }
        return tls
    }

    package func run() async throws {
        let serverChannel = try await bind()
        try await withGracefulShutdownHandler {
            try await serverChannel.executeThenClose { inbound in
                let max = configuration.maxConnections
                for try await channel in inbound {
                    enum Admit {
                        case open, shuttingDown
                        case full(first: Bool)
                    }
                    let admit = state.withLockedValue { s -> Admit in
                        guard !s.shuttingDown else { return .shuttingDown }
                        guard s.connections.count < max else {
                            s.refusedSinceLog += 1
                            return .full(first: s.refusedSinceLog == 1)
                        }
                        s.connections[ObjectIdentifier(channel)] = channel
                        if s.refusedSinceLog > 0 {
                            logger.warning(
                                "connections refused while at the limit",
                                metadata: ["lh.refused": "\(s.refusedSinceLog)", "lh.maxConnections": "\(max)"])
                            s.refusedSinceLog = 0
                        }
                        return .open
                    }
                    switch admit {
                    case .open: break
                    case .shuttingDown: channel.close(promise: nil)
                    case .full(let first):
                        metrics?.connectionsRefused.increment()
                        if first {
                            logger.warning(
                                "connection limit reached: refusing new connections (--max-connections)",
                                metadata: ["lh.maxConnections": "\(max)"])
                        }
                        channel.close(promise: nil)
                    }
                }
            }
        } onGracefulShutdown: {
            self.stopAccepting(serverChannel.channel)
        }
        // Stopped accepting: wait for the connections still open to close.
        let open = state.withLockedValue { Array($0.connections.values) }
        for channel in open { try? await channel.closeFuture.get() }
    }

    /// Binds the listener and tells those waiting in ``boundPort()`` (its
    /// port, or why it could not listen).
    private func bind() async throws -> NIOAsyncChannel<any Channel, Never> {
        let serverChannel: NIOAsyncChannel<any Channel, Never>
        do {
            var welcome = Lhwire_Welcome()
            welcome.serverID = configuration.serverId
            welcome.serverVersion = LHServerConfiguration.versionMessage
            var listener = LHListener.Configuration(
                host: configuration.host, port: configuration.port, tls: try listenerTLS(),
                maxFrameBytes: configuration.maxFrameBytes, heartbeatInterval: configuration.heartbeatInterval,
                welcome: welcome)
            let router = self.router
            listener.admit = { router.admit($0) }
            serverChannel = try await LHListener.bind(listener, logger: logger) { channel in
                // Requests are answered by a handler on the connection's event
                // loop: no task per connection or per frequent request.
                try channel.pipeline.syncOperations.addHandler(
                    LHRequestHandler(
                        server: self, channel: channel, maxInFlight: self.configuration.maxInFlightPerConnection))
                self.metrics?.connectionsOpened.increment()
                self.metrics?.connectionsOpen.increment()
                return channel
            }
        } catch {
            let waiting = state.withLockedValue { state in
                state.failure = error
                defer { state.listeners = [] }
                return state.listeners
            }
            for waiter in waiting { waiter.resume(throwing: error) }
            throw error
        }
        let port = serverChannel.channel.localAddress?.port ?? configuration.port
        let waiting = state.withLockedValue { state in
            state.boundPort = port
            defer { state.listeners = [] }
            return state.listeners
        }
        for waiter in waiting { waiter.resume(returning: port) }
        logger.notice("listening", metadata: ["lh.address": "\(configuration.host):\(port)"])
        return serverChannel
    }

    /// Graceful shutdown: no new connections; requests being answered finish
    /// (their commits are durable either way), then open connections close.
    private func stopAccepting(_ listener: any Channel) {
        logger.notice("shutting down: no longer accepting connections")
        listener.close(promise: nil)
        let open = state.withLockedValue { s -> [any Channel] in
            s.shuttingDown = true
            return Array(s.connections.values)
        }
        for channel in open {
            channel.eventLoop.scheduleTask(in: .milliseconds(200)) { channel.close(promise: nil) }
        }
    }

    /// Answers one request of a connection: the frequent ones handed
    /// straight to the processor (``LHRequestRouter/handleDirectly``), the
    /// others in a task of their own. Never throws: one request's trouble
    /// never reaches another.
    func dispatch(_ envelope: Lhwire_Envelope, session: LHSession, logger: Logger) {
        let responder = session.responder
        let id = envelope.id
        guard let kind = envelope.kind else {
            responder.yield(
                Lhwire_Envelope(id: id, .error(LHError(.invalidArgument, "empty envelope: no request kind set").wire)))
            return
        }
        let metrics = metrics
        let handled = router.handleDirectly(kind, session: session) { result in
            metrics?.request(kind.rpcName, result)
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
            metrics?.request(kind.rpcName, result)
            if let reply = Self.reply(to: id, kind, result, logger: logger) { responder.yield(reply) }
        }
    }

    func connectionEnded(_ session: LHSession, channel: any Channel) {
        _ = state.withLockedValue { $0.connections.removeValue(forKey: ObjectIdentifier(channel)) }
        metrics?.connectionsOpen.decrement()
        let router = self.router
        Task { await router.connectionClosed(session) }
    }

    /// The frame that answers request `id`: none for id 0 or no response.
    static func reply(
        to id: UInt64, _ request: Lhwire_Envelope.OneOf_Kind, _ result: Result<Lhwire_Envelope.OneOf_Kind?, Error>,
        logger: Logger
    ) -> Lhwire_Envelope? {
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
