import ArgumentParser
import Foundation
import LHPostgresStore
import LHProto
import LHServer
import LHStore
import LHWire
import Logging
import ServiceLifecycle

/// `lh-server`: runs the workflow server. Every flag has an `LHS_*`
/// environment variable equivalent (flags win).
@main
struct LHServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lh-server",
        abstract: "Runs the LittleHorse-model workflow server (TLS on by default)."
    )

    private static let env = ProcessInfo.processInfo.environment

    @Option(help: "Directory for the server's data and development CA (env LHS_DATA_DIR).")
    var dataDir: String = env["LHS_DATA_DIR"] ?? "lh-data"

    @Option(help: "Address to listen on, HOST:PORT; port 0 picks a free one (env LHS_LISTEN).")
    var listen: String = env["LHS_LISTEN"] ?? "127.0.0.1:2023"

    @Option(
        help:
            "Also serve LittleHorse's gRPC service (its SDKs and lhctl) at HOST:PORT, e.g. 127.0.0.1:2024; port 0 picks a free one (env LHS_GRPC_LISTEN). Off by default."
    )
    var grpcListen: String? = env["LHS_GRPC_LISTEN"]

    @Option(
        help:
            "Host gRPC workers are told to poll (RegisterTaskWorker); default: the host they used to reach the server (env LHS_GRPC_ADVERTISED_HOST)."
    )
    var grpcAdvertisedHost: String? = env["LHS_GRPC_ADVERTISED_HOST"]

    @Option(
        help:
            "The dashboard and Prometheus /metrics at HOST:PORT, or off (env LHS_HTTP_LISTEN). Default: 127.0.0.1:2025, this machine only, skipped with a warning when that port is taken; port 0 picks a free one."
    )
    var httpListen: String = env["LHS_HTTP_LISTEN"] ?? defaultHTTPListen

    static let defaultHTTPListen = "127.0.0.1:2025"

    @Flag(
        help:
            "Let the dashboard stop and resume WfRuns and post events (env LHS_HTTP_ACTIONS=true); each needs --http-token or mutual TLS (--client-ca)."
    )
    var httpActions: Bool = (env["LHS_HTTP_ACTIONS"] ?? "").lowercased() == "true"

    @Option(help: "The token the dashboard's actions must carry (env LHS_HTTP_TOKEN).")
    var httpToken: String? = env["LHS_HTTP_TOKEN"]

    @Option(
        help:
            "PEM certificate chain of the server (env LHS_TLS_CERT); without it a development CA is made in DATA_DIR/tls."
    )
    var tlsCert: String? = env["LHS_TLS_CERT"]

    @Option(help: "PEM private key of the server (env LHS_TLS_KEY).")
    var tlsKey: String? = env["LHS_TLS_KEY"]

    @Option(
        help:
            "Comma-separated names the development server certificate is made for, on first start (env LHS_TLS_HOSTNAMES)."
    )
    var tlsHostnames: String = env["LHS_TLS_HOSTNAMES"] ?? "localhost"

    @Option(help: "PEM CA of client certificates: turns on mutual TLS (env LHS_CLIENT_CA).")
    var clientCa: String? = env["LHS_CLIENT_CA"]

    @Flag(help: "Accept plaintext connections instead of TLS (env LHS_PLAINTEXT=true). Unsafe.")
    var plaintext: Bool = (env["LHS_PLAINTEXT"] ?? "").lowercased() == "true"

    @Option(help: "Largest frame accepted, in bytes (env LHS_MAX_FRAME_BYTES).")
    var maxFrameBytes: Int = Int(env["LHS_MAX_FRAME_BYTES"] ?? "") ?? LHFrame.defaultMaxFrameBytes

    @Option(
        help:
            "SQLite durability: full (survives power loss, default) or normal (survives process crashes) (env LHS_SYNC)."
    )
    var sync: String = env["LHS_SYNC"] ?? "full"

    @Option(help: "Connections open at once; more are closed as they arrive (env LHS_MAX_CONNECTIONS).")
    var maxConnections: Int = Int(env["LHS_MAX_CONNECTIONS"] ?? "") ?? 10_000

    @Option(
        help:
            "Requests of one connection answered at once; past this the connection is not read until answers go out (env LHS_MAX_IN_FLIGHT)."
    )
    var maxInFlight: Int = Int(env["LHS_MAX_IN_FLIGHT"] ?? "") ?? 1_024

    @Option(
        help:
            "Seconds after start-up in which workers claim the TaskRuns they held when the server stopped; unclaimed ones are retried then, not after their attempt timeouts (env LHS_CLAIM_GRACE)."
    )
    var claimGrace: Double = Double(env["LHS_CLAIM_GRACE"] ?? "") ?? LHCore.defaultClaimGrace

    @Option(
        help:
            "Where WfRuns are stored: sqlite (embedded, in DATA_DIR; the default) or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=verify-full&sslrootcert=CA.pem], shared by the servers of a cluster; TLS as libpq: sslmode prefer unless given (env LHS_STORE)."
    )
    var store: String = env["LHS_STORE"] ?? "sqlite"

    @Option(
        help:
            "Partitions of a new PostgreSQL cluster; fixed when the database is first used (env LHS_PARTITIONS)."
    )
    var partitions: Int = Int(env["LHS_PARTITIONS"] ?? "") ?? 64

    @Option(
        help:
            "Seconds a server's lease on its partitions runs (PostgreSQL); the others take its partitions over this long after a server dies (env LHS_LEASE_TTL)."
    )
    var leaseTtl: Double = Double(env["LHS_LEASE_TTL"] ?? "") ?? 5

    @Flag(
        help:
            "PostgreSQL: the first server owns every partition and the others wait as hot standbys (they serve reads and forward commands), instead of each live server owning a fair share (env LHS_SINGLE_OWNER=1)."
    )
    var singleOwner: Bool = ["1", "true", "yes"].contains((env["LHS_SINGLE_OWNER"] ?? "").lowercased())

    @Option(
        help:
            "Directory of a development CA shared by the servers of a cluster: each server's certificate is issued by it, clients trust ca.pem there (env LHS_DEV_CA_DIR)."
    )
    var devCaDir: String? = env["LHS_DEV_CA_DIR"]

    @Option(
        help:
            "HOST:PORT at which the other servers of a cluster reach this one (env LHS_ADVERTISED_ADDRESS). Default: the --listen address (0.0.0.0 taken as 127.0.0.1)."
    )
    var advertisedAddress: String? = env["LHS_ADVERTISED_ADDRESS"]

    @Option(
        help:
            "PEM CA that issued the other cluster members' certificates, trusted when this server forwards commands to them (env LHS_PEER_CA). Default: the development CA (--dev-ca-dir), else the system's trust store."
    )
    var peerCa: String? = env["LHS_PEER_CA"]

    @Option(
        help:
            "PEM certificate this server presents to the other cluster members when it forwards to them under mutual TLS (--client-ca); issued for client authentication by a CA their --client-ca trusts (env LHS_PEER_CERT). Default: the server's own certificate (--tls-cert, or the development CA's, which allows client authentication)."
    )
    var peerCert: String? = env["LHS_PEER_CERT"]

    @Option(help: "PEM private key of --peer-cert (env LHS_PEER_KEY).")
    var peerKey: String? = env["LHS_PEER_KEY"]

    @Option(help: "Log level: trace, debug, info, notice, warning, error (env LHS_LOG_LEVEL).")
    var logLevel: String = env["LHS_LOG_LEVEL"] ?? "info"

    func validate() throws {
        if (tlsCert == nil) != (tlsKey == nil) {
            throw ValidationError("--tls-cert and --tls-key must be given together")
        }
        if (peerCert == nil) != (peerKey == nil) {
            throw ValidationError("--peer-cert and --peer-key must be given together")
        }
        if peerCert != nil && (plaintext || isSQLite) {
            throw ValidationError(
                "--peer-cert is for the servers of a cluster with TLS (--store postgres://..., not --plaintext)")
        }
        if plaintext && (tlsCert != nil || clientCa != nil) {
            throw ValidationError("--plaintext cannot be combined with --tls-cert or --client-ca")
        }
        guard maxFrameBytes >= 1024, maxFrameBytes <= Int(Int32.max) else {
            throw ValidationError("--max-frame-bytes must be between 1024 and \(Int32.max), got \(maxFrameBytes)")
        }
        guard maxConnections >= 1, maxInFlight >= 1 else {
            throw ValidationError("--max-connections and --max-in-flight must be at least 1")
        }
        guard claimGrace >= 0, claimGrace <= 3600 else {
            throw ValidationError("--claim-grace must be between 0 and 3600 seconds, got \(claimGrace)")
        }
        _ = try parseListen()
        if let advertisedAddress {
            _ = try Self.parseAddress(advertisedAddress, option: "--advertised-address")
        }
        if let grpcListen {
            _ = try Self.parseAddress(grpcListen, option: "--grpc-listen")
        }
        if httpListen.lowercased() != "off" {
            _ = try Self.parseAddress(httpListen, option: "--http-listen")
        } else if httpActions {
            throw ValidationError("--http-actions needs the dashboard: --http-listen is off")
        }
        if httpActions && (httpToken ?? "").isEmpty && (clientCa == nil || plaintext) {
            throw ValidationError(
                "--http-actions needs a credential: --http-token TOKEN (env LHS_HTTP_TOKEN) or mutual TLS (--client-ca)"
            )
        }
        if !isSQLite {
            do {
                _ = try PostgresSettings(url: store)
            } catch {
                throw ValidationError("--store: \(error)")
            }
        }
        guard (1...4096).contains(partitions) else {
            throw ValidationError("--partitions must be between 1 and 4096, got \(partitions)")
        }
        guard leaseTtl >= 0.5, leaseTtl <= 600 else {
            throw ValidationError("--lease-ttl must be between 0.5 and 600 seconds, got \(leaseTtl)")
        }
        guard ["full", "normal"].contains(sync.lowercased()) else {
            throw ValidationError("--sync must be full or normal, got '\(sync)'")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError(
                "--log-level must be one of trace, debug, info, notice, warning, error, critical; got '\(logLevel)'")
        }
    }

    private var isSQLite: Bool { store.lowercased() == "sqlite" }

    private func parseListen() throws -> (String, Int) {
        try Self.parseAddress(listen, option: "--listen")
    }

    private static func hostOf(_ address: String?) -> String {
        guard let address, let colon = address.lastIndex(of: ":") else { return "" }
        return String(address[..<colon])
    }

    private static func parseAddress(_ address: String, option: String) throws -> (String, Int) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw ValidationError("\(option) must be HOST:PORT, got '\(address)'")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "lh.server")
        let (host, port) = try parseListen()
        let tls: LHServerConfiguration.TLSMode
        if plaintext {
            tls = .plaintext
        } else if let tlsCert, let tlsKey {
            tls = .files(certificatePath: tlsCert, keyPath: tlsKey)
        } else {
            tls = .developmentCA
        }
        // Certificate, key and client CA files are checked before the store
        // opens: a wrong path fails at once, naming the file and the reason.
        do {
            if case .files(let cert, let key) = tls {
                _ = try LHTLS.makeServerContext(.init(certificatePath: cert, keyPath: key, clientCAPath: clientCa))
            } else if let clientCa {
                _ = try LHTLS.certificates(at: clientCa, what: "the client CA")
            }
            if let peerCert, let peerKey {
                _ = try LHTLS.certificates(at: peerCert, what: "the peer certificate", setting: "--peer-cert")
                _ = try LHTLS.privateKey(at: peerKey, what: "the peer certificate's key", setting: "--peer-key")
            }
        } catch let error as LHError {
            Self.fail(error.message)
        }
        let dataDirectory = URL(fileURLWithPath: dataDir)
        do {
            try FileManager.default.createDirectory(at: dataDirectory, withIntermediateDirectories: true)
        } catch {
            Self.fail(
                "cannot create the data directory \(dataDirectory.path): \(Self.reason(creating: dataDirectory, error))"
            )
        }
        var config = LHServerConfiguration(
            host: host, port: port, dataDirectory: dataDirectory, tls: tls, clientCAPath: clientCa,
            maxFrameBytes: maxFrameBytes
        )
        config.maxConnections = maxConnections
        config.maxInFlightPerConnection = maxInFlight
        config.sharedCADirectory = devCaDir.map { URL(fileURLWithPath: $0) }
        config.tlsHostnames = tlsHostnames.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter
        { !$0.isEmpty }
        let core: LHCore
        var postgres: PostgresStore?
        do {
            if isSQLite {
                core = try await LHCore(
                    dataDirectory: dataDirectory, sync: sync.lowercased() == "normal" ? .normal : .full,
                    claimGrace: claimGrace, logger: logger)
            } else {
                var options = PostgresStore.Options(url: store)
                options.partitions = partitions
                options.leaseTTL = leaseTtl
                options.fairShare = !singleOwner
                options.address = advertisedAddress ?? listen
                let pg = try PostgresStore.open(options, logger: logger)
                // A server that lost its partitions stops at once: it may not
                // write, and as a new member it would start as a standby.
                pg.onStepDown { reason in
                    FileHandle.standardError.write(Data("lh-server: stepped down: \(reason)\n".utf8))
                    Foundation.exit(3)
                }
                postgres = pg
                core = try await LHCore(store: pg, claimGrace: claimGrace, logger: logger)
            }
        } catch {
            Self.fail("\(error)")
        }
        let cluster = postgres
        let server = WireServer(
            configuration: config, router: LHAdminRouter(core: core), logger: logger, metrics: core.metrics)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: core), .init(service: server)]
        var grpc: GRPCFront?
        if let grpcListen {
            let (grpcHost, grpcPort) = try Self.parseAddress(grpcListen, option: "--grpc-listen")
            let front = GRPCFront(
                .init(host: grpcHost, port: grpcPort, advertisedHost: grpcAdvertisedHost), server: config, core: core,
                logger: logger)
            services.append(.init(service: front))
            grpc = front
        }
        var http: HTTPFront?
        if httpListen.lowercased() != "off" {
            let (httpHost, httpPort) = try Self.parseAddress(httpListen, option: "--http-listen")
            var front = HTTPFront.Configuration(host: httpHost, port: httpPort, actions: httpActions, token: httpToken)
            // The default address is a convenience: when it is taken (another
            // server on this machine), this server runs without a dashboard.
            front.optional = httpListen == Self.defaultHTTPListen
            let service = HTTPFront(front, server: config, core: core, logger: logger)
            services.append(.init(service: service))
            http = service
        }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        let transport = plaintext ? "PLAINTEXT" : "TLS"
        async let announce: Void = {
            guard let bound = try? await server.boundPort() else { return }
            var grpcBound: Int?
            if let grpc { grpcBound = try? await grpc.boundPort() }
            if let cluster {
                let ours = advertisedAddress ?? "\(host):\(bound)"
                let grpcAddress = grpcBound.map { port in
                    let h = grpcAdvertisedHost ?? Self.hostOf(ours)
                    return "\(h == "0.0.0.0" || h.isEmpty ? "127.0.0.1" : h):\(port)"
                }
                cluster.advertise(ours, grpcAddress: grpcAddress ?? "")
                core.configurePeers(
                    plaintext: plaintext, caCertPath: peerCa ?? server.developmentCAPath,
                    clientCertificate: clientCa == nil
                        ? nil
                        : peerCert.flatMap { c in peerKey.map { (c, $0) } }
                            ?? server.certificateFiles.map { ($0.cert, $0.key) })
            }
            var line = "lh-server listening on \(host):\(bound) (\(transport))"
            if let ca = server.developmentCAPath {
                line += "; clients trust the CA at \(ca) (export LHC_CA_CERT=\(ca))"
            }
            if grpc != nil, let grpcPort = grpcBound {
                line +=
                    "\nlh-server gRPC (LittleHorse's service) listening on \(Self.hostOf(grpcListen)):\(grpcPort) (\(transport))"
            }
            if let http {
                if let httpPort = try? await http.boundPort() {
                    let scheme = http.usesTLS ? "https" : "http"
                    var host = Self.hostOf(httpListen)
                    if host == "0.0.0.0" || host.isEmpty { host = "localhost" }
                    line += "\nlh-server dashboard at \(scheme)://\(host):\(httpPort)/ (Prometheus metrics at /metrics)"
                } else {
                    line += "\nlh-server dashboard off: \(httpListen) is taken (choose one with --http-listen)"
                }
            }
            FileHandle.standardOutput.write(Data((line + "\n").utf8))
            guard let cluster else { return }
            let member = cluster.memberId
            let say: @Sendable (Int, Int) -> Void = { served, total in
                if served == total {
                    Self.say("owns every partition (member \(member))")
                } else if served == 0 {
                    let others = cluster.members.filter { $0.id != member }
                        .map { "member \($0.id)\($0.address.isEmpty ? "" : " at \($0.address)")" }
                        .joined(separator: ", ")
                    Self.say(
                        "owns no partition (member \(member)): it serves reads and forwards commands\(others.isEmpty ? "" : " (\(others))")"
                    )
                } else {
                    Self.say("owns \(served) of \(total) partitions (member \(member))")
                }
            }
            core.onOwnershipChange(say)
            say(cluster.servedPartitions.count, cluster.partitionCount)
        }()
        do {
            try await group.run()
        } catch let error as LHError {
            // Listening failed (address in use, not this machine's, ...).
            postgres?.close(leaving: true)
            Self.fail(error.message)
        }
        // A graceful stop hands this server's partitions over at once (a
        // standby's wait for them ends with it).
        postgres?.close(leaving: true)
        await announce
    }

    /// One line on stdout, `lh-server ...`.
    static func say(_ line: String) {
        FileHandle.standardOutput.write(Data("lh-server \(line)\n".utf8))
    }

    /// One line on stderr, `lh-server: ...`, and exit status 2.
    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("lh-server: \(message)\n".utf8))
        Foundation.exit(2)
    }

    /// Why `directory` could not be made, in the operating system's words
    /// ("Not a directory"): Foundation on Linux often reports only its own
    /// error code. Making the first missing directory again gives the errno.
    static func reason(creating directory: URL, _ error: any Error) -> String {
        var missing = directory.standardizedFileURL
        while true {
            let parent = missing.deletingLastPathComponent()
            if parent.path == missing.path || FileManager.default.fileExists(atPath: parent.path) { break }
            missing = parent
        }
        if mkdir(missing.path, 0o755) != 0 {
            let words = String(cString: strerror(errno))
            return missing.path == directory.standardizedFileURL.path ? words : "\(words) (making \(missing.path))"
        }
        rmdir(missing.path)
        return error.localizedDescription
    }
}
