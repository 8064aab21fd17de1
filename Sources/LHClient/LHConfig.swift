import Foundation
import LHProto
import LHWire
import LHWireProto
import NIOCore
import Synchronization

/// Client and worker settings, read with LittleHorse's names from the
/// environment and from `~/.config/littlehorse.config` (`KEY=VALUE` lines;
/// the environment wins). The only place these variables are read.
///
/// ```swift
/// let config = try LHConfig.fromEnvironment()
/// let client = try await LittleHorseClient.connect(config)
/// ```
public struct LHConfig: Sendable, Equatable {
    public enum APIProtocol: String, Sendable {
        case tls = "TLS"
        case plaintext = "PLAINTEXT"
    }

    public var apiHost = "localhost"
    public var apiPort = 2023
    public var apiProtocol = APIProtocol.tls
    public var caCertPath: String?
    public var clientCertPath: String?
    public var clientKeyPath: String?
    public var clientId: String
    public var taskWorkerId: String
    public var numWorkerThreads = 8

    public init(clientId: String? = nil) {
        let id = clientId ?? "client-\(UInt32.random(in: 0...UInt32.max))"
        self.clientId = id
        self.taskWorkerId = id
    }

    /// Reads the `LHC_*` and `LHW_*` variables; a value that does not parse
    /// is an error naming the variable.
    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment,
        configFile: String? = nil
    ) throws -> LHConfig {
        var values: [String: String] = [:]
        let file = configFile ?? environment["HOME"].map { "\($0)/.config/littlehorse.config" }
        if let file, let text = try? String(contentsOfFile: file, encoding: .utf8) {
            for line in text.split(whereSeparator: \.isNewline) {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                guard !trimmed.isEmpty, !trimmed.hasPrefix("#"), let eq = trimmed.firstIndex(of: "=") else { continue }
                values[trimmed[..<eq].trimmingCharacters(in: .whitespaces)] =
                    trimmed[trimmed.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            }
        }
        for (key, value) in environment where key.hasPrefix("LHC_") || key.hasPrefix("LHW_") {
            values[key] = value
        }
        var config = LHConfig(clientId: values["LHC_CLIENT_ID"])
        if let host = values["LHC_API_HOST"], !host.isEmpty { config.apiHost = host }
        if let port = values["LHC_API_PORT"] {
            guard let p = Int(port), (1...65535).contains(p) else {
                throw LHError(.invalidArgument, "LHC_API_PORT must be a port number, got '\(port)'")
            }
            config.apiPort = p
        }
        if let proto = values["LHC_API_PROTOCOL"] {
            guard let p = APIProtocol(rawValue: proto.uppercased()) else {
                throw LHError(.invalidArgument, "LHC_API_PROTOCOL must be TLS or PLAINTEXT, got '\(proto)'")
            }
            config.apiProtocol = p
        }
        config.caCertPath = values["LHC_CA_CERT"].flatMap { $0.isEmpty ? nil : $0 }
        config.clientCertPath = values["LHC_CLIENT_CERT"].flatMap { $0.isEmpty ? nil : $0 }
        config.clientKeyPath = values["LHC_CLIENT_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        if let worker = values["LHW_TASK_WORKER_ID"], !worker.isEmpty { config.taskWorkerId = worker }
        if let threads = values["LHW_NUM_WORKER_THREADS"] {
            guard let n = Int(threads), n >= 1 else {
                throw LHError(.invalidArgument, "LHW_NUM_WORKER_THREADS must be a positive integer, got '\(threads)'")
            }
            config.numWorkerThreads = n
        }
        return config
    }

    /// The servers to reach: `apiHost` may list several, comma-separated,
    /// each `HOST` (on `apiPort`) or `HOST:PORT` — the servers of a cluster
    /// (`LHC_API_HOST=lh1:2023,lh2:2023`); a connection goes to the first
    /// that answers.
    public var endpoints: [(host: String, port: Int)] {
        let entries = apiHost.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter {
            !$0.isEmpty
        }
        guard entries.count > 1 || apiHost.contains(",") || entries.first?.contains(":") == true else {
            return [(apiHost, apiPort)]
        }
        return entries.map { entry in
            if let colon = entry.lastIndex(of: ":"), !entry.hasSuffix("]"),
                let port = Int(entry[entry.index(after: colon)...])
            {
                var host = String(entry[..<colon])
                if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
                return (host, port)
            }
            return (entry, apiPort)
        }
    }

    /// Connects to the first of ``endpoints`` that answers, starting with
    /// the one that answered last in this process (after a failover, the new
    /// owner), then in the listed order.
    /// `passingOver`: a server whose connection was just lost is tried last
    /// (a lost machine would cost a connect timeout first).
    package func connectToFirstReachable<T>(
        role: Lhwire_Role, passingOver lost: (host: String, port: Int)? = nil,
        _ connect: (LHWireConnection.Configuration) async throws -> T
    ) async throws -> T {
        let all = endpoints
        var start = all.count > 1 ? Self.answeredLast.withLock { $0[apiHost] ?? 0 } : 0
        if let lost, all.count > 1, all[start % all.count] == lost { start += 1 }
        var lastError: (any Error)?
        for i in 0..<all.count {
            let index = (start + i) % all.count
            let (host, port) = all[index]
            do {
                let connected = try await connect(connectionConfiguration(role: role, host: host, port: port))
                if all.count > 1 { Self.answeredLast.withLock { $0[apiHost] = index } }
                return connected
            } catch {
                lastError = error
            }
        }
        throw lastError ?? LHError(.unavailable, "no server to connect to (LHC_API_HOST is empty)")
    }

    /// Per list of servers, the index of the one that answered last.
    private static let answeredLast = Mutex<[String: Int]>([:])

    /// The wire settings for a connection in `role` (to the first endpoint
    /// unless `host` and `port` are given).
    package func connectionConfiguration(role: Lhwire_Role = .admin, host: String? = nil, port: Int? = nil)
        -> LHWireConnection.Configuration
    {
        let first = endpoints[0]
        var configuration = LHWireConnection.Configuration(
            host: host ?? first.host, port: port ?? first.port,
            tls: apiProtocol == .plaintext
                ? nil
                : LHTLS.ClientConfiguration(
                    caCertPath: caCertPath, clientCertPath: clientCertPath, clientKeyPath: clientKeyPath),
            clientId: role == .worker ? taskWorkerId : clientId,
            role: role
        )
        // With several servers, one that does not finish the handshake
        // quickly (paused, overloaded) is passed over for the next.
        if endpoints.count > 1 { configuration.helloTimeout = Self.clusterHelloTimeout }
        return configuration
    }

    /// How long a client of several servers waits for one's TLS handshake
    /// and welcome before it tries the next.
    package static let clusterHelloTimeout = TimeAmount.seconds(5)
}
