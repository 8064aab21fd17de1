import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import LHProto
import LHWire
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// lh-server's second door: LittleHorse's gRPC service, so that LittleHorse's
/// own SDKs and tools talk to this server unchanged. Same engine, store and
/// rules as our framed protocol (``LittleHorseGRPCService`` calls the same
/// ``AdminService``); TLS with the same certificates (the development CA
/// included), mutual TLS with the same client CA, plaintext only when the
/// server is plaintext. A Service: serves until graceful shutdown.
package final class GRPCFront: Service, Sendable {
    package struct Configuration: Sendable {
        /// An IP address to listen on (`localhost` means 127.0.0.1).
        package var host: String
        /// 0 picks a free port (see ``boundPort()``).
        package var port: Int
        /// The host a worker is told to poll; nil: the host the worker used
        /// to reach this server (the request's `:authority`), else the listen
        /// address (`localhost` for a wildcard address).
        package var advertisedHost: String?

        package init(host: String, port: Int, advertisedHost: String? = nil) {
            self.host = host
            self.port = port
            self.advertisedHost = advertisedHost
        }
    }

    private let configuration: Configuration
    private let server: LHServerConfiguration
    private let admin: AdminService
    private let metrics: LHMetrics
    private let logger: Logger
    private let bound = BoundPort()

    package init(_ configuration: Configuration, server: LHServerConfiguration, core: LHCore, logger: Logger) {
        self.configuration = configuration
        self.server = server
        self.admin = core.admin
        self.metrics = core.metrics
        self.logger = logger
    }

    /// Waits until the listener is bound and returns its port.
    package func boundPort() async throws -> Int {
        try await bound.wait()
    }

    package func run() async throws {
        let transport: HTTP2ServerTransport.Posix
        do {
            transport = HTTP2ServerTransport.Posix(
                address: try Self.address(configuration.host, configuration.port),
                transportSecurity: try transportSecurity(), config: transportConfig())
        } catch {
            bound.settle(.failure(error))
            throw error
        }
        let service = LittleHorseGRPCService(admin: admin) { [weak self] authority in
            self?.advertised(authority) ?? .init()
        }
        let grpc = GRPCServer(
            transport: transport, services: [service], interceptors: [RequestCounting(metrics: metrics)])
        do {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await grpc.serve() }
                // When it cannot listen, serve() ends the group with the reason.
                guard let address = try? await transport.listeningAddress else { return }
                let port = address.ipv4?.port ?? address.ipv6?.port ?? configuration.port
                bound.settle(.success(port))
                logger.notice(
                    "gRPC listening (LittleHorse's service)", metadata: ["lh.address": "\(configuration.host):\(port)"])
                // On graceful shutdown (or cancellation) stop taking RPCs;
                // those in flight finish.
                try? await gracefulShutdown()
                grpc.beginGracefulShutdown()
            }
        } catch  where bound.port == nil {
            let failure = LHError(
                .unavailable, "cannot listen for gRPC on \(configuration.host):\(configuration.port): \(error)")
            bound.settle(.failure(failure))
            throw failure
        }
    }

    /// The same TLS files as our protocol's listener.
    private func transportSecurity() throws -> HTTP2ServerTransport.Posix.TransportSecurity {
        guard let (tls, _) = try server.tlsFiles() else { return .plaintext }
        let chain: [TLSConfig.CertificateSource] = [.file(path: tls.certificatePath, format: .pem)]
        let key = TLSConfig.PrivateKeySource.file(path: tls.keyPath, format: .pem)
        guard let clientCA = tls.clientCAPath else { return .tls(certificateChain: chain, privateKey: key) }
        return .mTLS(certificateChain: chain, privateKey: key) {
            $0.trustRoots = .certificates([.file(path: clientCA, format: .pem)])
        }
    }

    /// LittleHorse's clients ping every 45 s even with no call open: allow
    /// pings every 15 s without calls (as LittleHorse's server does), or an
    /// idle worker is disconnected for too many pings.
    private func transportConfig() -> HTTP2ServerTransport.Posix.Config {
        var config = HTTP2ServerTransport.Posix.Config.defaults
        config.connection.keepalive.clientBehavior = .init(
            minPingIntervalWithoutCalls: .seconds(15), allowWithoutCalls: true)
        config.rpc.maxRequestPayloadSize = server.maxFrameBytes
        return config
    }

    /// The host and port a worker should poll.
    private func advertised(_ authority: String?) -> Littlehorse_LHHostInfo {
        let port = bound.port ?? configuration.port
        var host = configuration.advertisedHost
        if host == nil, let authority, !authority.isEmpty {
            host =
                authority.hasPrefix("[")
                ? String(authority.dropFirst().prefix { $0 != "]" })
                : String(authority.split(separator: ":", maxSplits: 1)[0])
        }
        if host == nil { host = ["0.0.0.0", "::", ""].contains(configuration.host) ? "localhost" : configuration.host }
        return .with {
            $0.host = host!
            $0.port = Int32(port)
        }
    }

    static func address(_ host: String, _ port: Int) throws -> GRPCNIOTransportCore.SocketAddress {
        let ip = host == "localhost" ? "127.0.0.1" : host
        if ip.contains(":") { return .ipv6(host: ip, port: port) }
        guard ip.split(separator: ".").count == 4, ip.split(separator: ".").allSatisfy({ UInt8($0) != nil }) else {
            throw LHError(.invalidArgument, "--grpc-listen needs an IP address (or localhost), got '\(host)'")
        }
        return .ipv4(host: ip, port: port)
    }
}
