import Foundation
import LHClient
import LHServer
import Logging
import ServiceLifecycle

/// A real server (``LHCore`` and the ``WireServer`` listener, TLS with a
/// development CA) in the calling process, on 127.0.0.1 and a free port,
/// with a temporary data directory, run in a `ServiceGroup` and stopped on
/// every path, failures included.
///
/// ```swift
/// try await withTestServer { client in
///     _ = try await client.putExternalEventDef(.with { $0.name = "ping" })
/// }
/// ```
///
/// Processes (workers, `lhctl`) reach it with ``config(caPath:)``.
package struct TestServer: Sendable {
    package let port: Int
    /// The development CA's file: what clients trust (`LHC_CA_CERT`).
    package let caPath: String?
    package let dataDir: URL
    /// The port of LittleHorse's gRPC service, when started with `grpc: true`.
    package let grpcPort: Int?
    /// The port of the dashboard and /metrics, when started with `http`.
    package let httpPort: Int?

    /// Client settings for this server (`caPath`: trust another CA instead).
    package func config(caPath: String? = nil) -> LHConfig {
        var config = LHConfig(clientId: "test-client")
        config.apiHost = "127.0.0.1"
        config.apiPort = port
        config.caCertPath = caPath ?? self.caPath
        return config
    }

    /// A client of this server (the caller closes it).
    package func connect() async throws -> LittleHorseClient { try await LittleHorseClient.connect(config()) }

    /// Runs `body` with a fresh server whose configuration `configure` may
    /// change (maximum frame size, client CA, ...).
    package static func with<T: Sendable>(
        configure: (inout LHServerConfiguration) -> Void = { _ in }, grpc: Bool = false,
        http: HTTPFront.Configuration? = nil, _ body: (TestServer) async throws -> T
    ) async throws -> T {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "lh-test-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: dir) }
        var logger = Logger(label: "lh.test-server")
        logger.logLevel =
            ProcessInfo.processInfo.environment["LH_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .warning
        var configuration = LHServerConfiguration(host: "127.0.0.1", port: 0, dataDirectory: dir, tls: .developmentCA)
        configure(&configuration)
        let core = try await LHCore(dataDirectory: dir, logger: logger)
        let server = WireServer(
            configuration: configuration, router: LHAdminRouter(core: core), logger: logger, metrics: core.metrics)
        let dashboard = http.map { HTTPFront($0, server: configuration, core: core, logger: logger) }
        let front =
            grpc ? GRPCFront(.init(host: "127.0.0.1", port: 0), server: configuration, core: core, logger: logger) : nil
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: core), .init(service: server)]
        if let front { services.append(.init(service: front)) }
        if let dashboard { services.append(.init(service: dashboard)) }
        let group = ServiceGroup(configuration: .init(services: services, logger: logger))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let outcome: Result<T, Error>
            do {
                let port = try await server.boundPort()
                let grpcPort = try await front?.boundPort()
                let httpPort = try await dashboard?.boundPort()
                let testServer = TestServer(
                    port: port, caPath: server.developmentCAPath, dataDir: dir, grpcPort: grpcPort, httpPort: httpPort)
                outcome = .success(try await body(testServer))
            } catch {
                outcome = .failure(error)
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return try outcome.get()
        }
    }
}

/// Runs `body` with a client of a fresh in-process server (``TestServer``).
package func withTestServer<T: Sendable>(_ body: (LittleHorseClient) async throws -> T) async throws -> T {
    try await TestServer.with { server in
        let client = try await server.connect()
        do {
            let result = try await body(client)
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }
}
