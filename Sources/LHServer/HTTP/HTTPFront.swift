import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import LHProto
import LHStore
import LHWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import ServiceLifecycle

/// lh-server's third door, for people and Prometheus: `/metrics` and the
/// dashboard, over HTTP/1.1 with Hummingbird. TLS with the server's own
/// certificates (mutual TLS when the server has a client CA) unless the
/// server is plaintext. Read-only unless actions are turned on; then a
/// POST must carry the operator token (or come over mutual TLS, where the
/// handshake already checked the client's certificate).
package final class HTTPFront: Service, Sendable {
    package struct Configuration: Sendable {
        package var host: String
        /// 0 picks a free port (see ``boundPort()``).
        package var port: Int
        /// Stop, resume and post an event from the WfRun page.
        package var actions: Bool
        /// The bearer token a POST must carry (header `Authorization:
        /// Bearer ...` or form field `token`).
        package var token: String?
        /// When it cannot listen, log a warning and serve on without a
        /// dashboard (the default address) instead of stopping the server.
        package var optional = false

        package init(host: String, port: Int, actions: Bool = false, token: String? = nil) {
            self.host = host
            self.port = port
            self.actions = actions
            self.token = token
        }
    }

    let configuration: Configuration
    let server: LHServerConfiguration
    let core: LHCore
    private let logger: Logger
    private let bound = BoundPort()

    package init(_ configuration: Configuration, server: LHServerConfiguration, core: LHCore, logger: Logger) {
        self.configuration = configuration
        self.server = server
        self.core = core
        self.logger = logger
    }

    /// Waits until the listener is bound and returns its port.
    package func boundPort() async throws -> Int {
        try await bound.wait()
    }

    /// Whether connections are TLS (false only for a plaintext server).
    package var usesTLS: Bool { server.tls != .plaintext }

    package func run() async throws {
        let app: Application<RouterResponder<BasicRequestContext>>
        do {
            let serverBuilder: HTTPServerBuilder
            if let tls = try tlsConfiguration() {
                serverBuilder = try .tls(.http1(), tlsConfiguration: tls)
            } else {
                serverBuilder = .http1()
            }
            var quiet = logger
            quiet.logLevel = max(logger.logLevel, .notice)
            app = Application(
                router: makeRouter(),
                server: serverBuilder,
                configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
                onServerRunning: { [weak self] channel in
                    guard let self else { return }
                    let port = channel.localAddress?.port ?? self.configuration.port
                    self.bound.settle(.success(port))
                    self.logger.notice(
                        "dashboard and /metrics listening",
                        metadata: ["lh.address": "\(self.configuration.host):\(port)"])
                },
                logger: quiet)
        } catch {
            bound.settle(.failure(error))
            throw error
        }
        do {
            try await app.run()
        } catch  where bound.port == nil {
            let failure = LHError(
                .unavailable, "cannot listen for HTTP on \(configuration.host):\(configuration.port): \(error)")
            bound.settle(.failure(failure))
            guard configuration.optional else { throw failure }
            logger.warning("no dashboard: \(failure.message)")
            // A service that returns would end the server: wait for its end.
            try? await gracefulShutdown()
        }
    }

    /// The server's certificate and key; with a client CA, clients must
    /// present a certificate it signed (as on the other doors).
    private func tlsConfiguration() throws -> TLSConfiguration? {
        guard let (files, _) = try server.tlsFiles() else { return nil }
        let chain = try LHTLS.certificates(at: files.certificatePath, what: "the server certificate")
        let key = try LHTLS.privateKey(at: files.keyPath, what: "the server key")
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        if let ca = files.clientCAPath {
            tls.certificateVerification = .noHostnameVerification
            tls.trustRoots = .certificates(try LHTLS.certificates(at: ca, what: "the client CA"))
        }
        return tls
    }

    private func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        let dashboard = Dashboard(admin: core.admin, actions: configuration.actions)
        let metrics = core.metrics
        router.get("/metrics") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            await self.core.readLevels()
            let text = metrics.exposition()
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: text)))
        }
        router.get("/") { _, _ in try await self.page("front") { try dashboard.front() } }
        router.get("/wfRuns") { request, _ in
            let q = request.uri.queryParameters
            return try await self.page("search") {
                try dashboard.search(
                    wfSpec: q.get("wfSpec"), status: q.get("status"), since: q.get("since"))
            }
        }
        router.get("/wfRuns/:id") { request, context in
            let id = try context.parameters.require("id")
            let thread = request.uri.queryParameters.get("thread").flatMap { Int32($0) }
            return try await self.page("wfRun") { try await dashboard.wfRun(id: id, thread: thread) }
        }
        router.get("/wfSpecs/:name") { _, context in
            let name = try context.parameters.require("name")
            return try await self.page("wfSpec") { try dashboard.wfSpec(name: name, major: nil, revision: nil) }
        }
        router.get("/wfSpecs/:name/:major/:revision") { _, context in
            let name = try context.parameters.require("name")
            let major = Int32(try context.parameters.require("major"))
            let revision = Int32(try context.parameters.require("revision"))
            return try await self.page("wfSpec") { try dashboard.wfSpec(name: name, major: major, revision: revision) }
        }
        router.post("/wfRuns/:id/:action") { request, context in
            try await self.act(
                request, id: try context.parameters.require("id"), try context.parameters.require("action"))
        }
        return router
    }

    /// A page rendered, timed (`lh_dashboard_render_seconds{page}`), and
    /// errors as pages with the status they call for.
    private func page(_ name: String, _ render: () async throws -> String) async rethrows -> Response {
        let start = ContinuousClock.now
        do {
            let html = try await render()
            core.metrics.dashboardRendered(name, seconds: (ContinuousClock.now - start).seconds)
            return Self.html(html)
        } catch let error as LHError {
            return Self.html(
                dashboardPage(
                    title: "Error",
                    body: "<h1>\(escapeHTML(error.code.description))</h1><p>\(escapeHTML(error.message))</p>"),
                status: Self.status(of: error))
        }
    }

    static func status(of error: LHError) -> HTTPResponse.Status {
        switch error.code {
        case .notFound: .notFound
        case .invalidArgument, .failedPrecondition: .badRequest
        case .unauthenticated: .unauthorized
        case .unavailable: .serviceUnavailable
        default: .internalServerError
        }
    }

    static func html(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
