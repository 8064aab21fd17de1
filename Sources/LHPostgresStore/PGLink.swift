import Foundation
import Logging
import NIOCore
import NIOSSL
import PostgresNIO
import Synchronization

/// One PostgreSQL connection, made on first use and made again after it was
/// lost (PostgreSQL restarted, network cut): a call while it is down fails
/// with an error naming the database, the next call tries again.
/// Calls block their thread until PostgreSQL answers: the store protocol is
/// synchronous (its callers are the commit line's own thread, the
/// processor's lanes and request handlers); the connection's I/O runs on the
/// store's own event loop, never on a caller's.
final class PGLink: Sendable {
    let settings: PostgresSettings
    let name: String
    let group: any EventLoopGroup
    let logger: Logger
    /// Session settings run once on each new connection.
    let session: [String]
    private let current = Mutex<PostgresConnection?>(nil)
    private let ids = Atomic<Int>(0)

    init(_ settings: PostgresSettings, name: String, group: any EventLoopGroup, logger: Logger, session: [String] = [])
    {
        self.settings = settings
        self.name = name
        self.group = group
        self.logger = logger
        self.session = session
    }

    /// The open connection, or a new one.
    func connection() throws -> PostgresConnection {
        try current.withLock { current in
            if let c = current, !c.isClosed { return c }
            current = nil
            let id = ids.wrappingAdd(1, ordering: .relaxed).newValue
            let c: PostgresConnection
            do {
                c = try PostgresConnection.connect(
                    on: group.next(), configuration: settings.connection, id: id, logger: logger
                ).wait()
            } catch {
                throw PGError(
                    error, doing: "connecting to PostgreSQL at \(settings.where) (\(settings.tlsDescription))")
            }
            for statement in session {
                do {
                    _ = try c.query(PostgresQuery(unsafeSQL: statement), logger: logger).wait()
                } catch {
                    let closing: EventLoopFuture<Void> = c.close()
                    _ = closing
                    throw PGError(error, doing: statement)
                }
            }
            current = c
            return c
        }
    }

    /// Runs one statement and collects its rows.
    @discardableResult
    func query(_ query: PostgresQuery, doing what: @autoclosure () -> String) throws -> PostgresQueryResult {
        let c = try connection()
        do {
            return try c.query(query, logger: logger).wait()
        } catch {
            throw PGError(error, doing: what())
        }
    }

    /// Runs `body` between BEGIN and COMMIT on this connection (ROLLBACK
    /// when it throws). Nothing else may use the link meanwhile: callers
    /// hold it alone (the store's writer and membership links are only
    /// used under their own locks).
    func transaction<T>(doing what: String, _ body: (PGLink) throws -> T) throws -> T {
        try query("BEGIN", doing: "BEGIN (\(what))")
        do {
            let result = try body(self)
            try query("COMMIT", doing: "COMMIT (\(what))")
            return result
        } catch {
            _ = try? query("ROLLBACK", doing: "ROLLBACK (\(what))")
            throw error
        }
    }

    func close() {
        current.withLock { c in
            if let c {
                let closing: EventLoopFuture<Void> = c.close()
                try? closing.wait()
            }
            c = nil
        }
    }
}

/// An error of PostgreSQL or of the connection to it, in words: postgres-nio's
/// own description of an error is deliberately generic.
struct PGError: Error, CustomStringConvertible {
    /// PostgreSQL's SQLSTATE, when the server answered with an error.
    var sqlState: String?
    var message: String
    /// Whether the connection itself failed (PostgreSQL unreachable or gone):
    /// the statement may or may not have run.
    var connectionLost: Bool

    init(_ error: any Error, doing what: String) {
        if let e = error as? PGError {
            self = e
            return
        }
        if let e = error as? PSQLError {
            if let info = e.serverInfo {
                sqlState = info[.sqlState]
                var text = info[.message] ?? "error"
                if let detail = info[.detail] { text += " (\(detail))" }
                message = "PostgreSQL refused \(Self.short(what)): \(text) [SQLSTATE \(sqlState ?? "?")]"
                connectionLost = false
                return
            }
            connectionLost = true
            let cause = e.underlying.map { "\($0)" } ?? "\(e.code)"
            message = "\(what) failed: \(cause)"
            return
        }
        connectionLost = true
        message = "\(what) failed: \(error)"
    }

    static func short(_ what: String) -> String {
        let line = what.split(separator: "\n").first.map(String.init) ?? what
        return line.count > 80 ? String(line.prefix(77)) + "..." : line
    }

    var description: String { message }
}

/// Where the store's database is and how to reach it, from a
/// `postgres://user[:password]@host[:port]/database[?sslmode=...]` URL.
///
/// TLS follows libpq's parameters and their meaning: `sslmode` is
/// `disable`, `allow` or `prefer` (the default: TLS when the server offers
/// it, unverified), `require` (TLS or no connection; verified against
/// `sslrootcert` when one is given, as libpq does), `verify-ca` (the
/// server's certificate must chain to `sslrootcert`) or `verify-full` (and
/// name the host: its DNS name or IP address). `sslrootcert` is a PEM file
/// of CA certificates, or `system` for the system's trust store (also what
/// `verify-ca`/`verify-full` use without one). `sslcert` and `sslkey` are a
/// client certificate and its key (PEM) for PostgreSQL's `cert`
/// authentication. (`allow` is taken as `prefer`: it only ever tries TLS
/// first.)
public struct PostgresSettings: Sendable {
    var connection: PostgresConnection.Configuration
    /// `host:port/database`, for messages (never the password).
    public var `where`: String
    /// How the connection is protected, for messages: `sslmode=verify-full`
    /// and the root file when there is one.
    public var tlsDescription: String

    public init(url: String, connectTimeout: Double = 5) throws {
        guard let c = URLComponents(string: url), c.scheme == "postgres" || c.scheme == "postgresql",
            let host = c.host, !host.isEmpty
        else {
            throw PostgresSettingsError(
                "the store must be postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, got '\(Self.redacted(url))'")
        }
        let port = c.port ?? 5432
        var database = c.path
        if database.hasPrefix("/") { database.removeFirst() }
        if database.isEmpty { database = "postgres" }
        let user = c.user ?? "postgres"
        var parameters: [String: String] = [:]
        for item in c.queryItems ?? [] {
            let known = ["sslmode", "sslrootcert", "sslcert", "sslkey"]
            guard known.contains(item.name) else {
                throw PostgresSettingsError(
                    "unknown parameter '\(item.name)' in the store URL (known: \(known.joined(separator: ", ")))")
            }
            parameters[item.name] = item.value ?? ""
        }
        let tls = try Self.tls(parameters)
        connection = PostgresConnection.Configuration(
            host: host, port: port, username: user, password: c.password, database: database, tls: tls.mode)
        connection.options.connectTimeout = .milliseconds(Int64(connectTimeout * 1000))
        self.where = "\(host):\(port)/\(database)"
        self.tlsDescription = tls.description
    }

    /// The TLS mode of libpq's parameters, with a context made (files read
    /// and checked) now, so that a wrong file is named at start.
    static func tls(_ parameters: [String: String]) throws -> (
        mode: PostgresConnection.Configuration.TLS, description: String
    ) {
        let modes = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
        let mode = parameters["sslmode"] ?? "prefer"
        guard modes.contains(mode) else {
            throw PostgresSettingsError(
                "sslmode=\(mode) is not a TLS mode (one of: \(modes.joined(separator: ", ")))")
        }
        if mode == "disable" {
            for name in ["sslrootcert", "sslcert", "sslkey"] where parameters[name] != nil {
                throw PostgresSettingsError("\(name) is given but sslmode=disable: no TLS would use it")
            }
            return (.disable, "sslmode=disable")
        }
        let root = parameters["sslrootcert"]
        // libpq: require with a root file given verifies the chain, as verify-ca.
        let verify = mode == "verify-ca" || mode == "verify-full" || (mode == "require" && root != nil)
        var config = TLSConfiguration.makeClientConfiguration()
        config.certificateVerification =
            !verify ? .none : mode == "verify-full" ? .fullVerification : .noHostnameVerification
        if let root, root != "system" {
            guard verify else {
                throw PostgresSettingsError(
                    "sslrootcert is given but sslmode=\(mode) does not verify the server (use verify-ca or verify-full)"
                )
            }
            let certificates: [NIOSSLCertificate]
            do {
                certificates = try NIOSSLCertificate.fromPEMFile(root)
            } catch {
                throw PostgresSettingsError("sslrootcert \(root) cannot be read as PEM certificates: \(error)")
            }
            guard !certificates.isEmpty else {
                throw PostgresSettingsError("sslrootcert \(root) holds no certificate")
            }
            config.trustRoots = .certificates(certificates)
        }
        switch (parameters["sslcert"], parameters["sslkey"]) {
        case (nil, nil): break
        case (let cert?, let key?):
            do {
                config.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
            } catch {
                throw PostgresSettingsError("sslcert \(cert) cannot be read as PEM certificates: \(error)")
            }
            do {
                config.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            } catch {
                throw PostgresSettingsError("sslkey \(key) cannot be read as a PEM private key: \(error)")
            }
        case (.some, nil): throw PostgresSettingsError("sslcert is given without sslkey")
        case (nil, .some): throw PostgresSettingsError("sslkey is given without sslcert")
        }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: config)
        } catch {
            throw PostgresSettingsError("cannot make the TLS context for sslmode=\(mode): \(error)")
        }
        let strict = mode != "allow" && mode != "prefer"
        var description = "sslmode=\(mode)"
        if verify { description += ", sslrootcert=\(root ?? "system")" }
        return (strict ? .require(context) : .prefer(context), description)
    }

    /// The URL without its password.
    public static func redacted(_ url: String) -> String {
        guard var c = URLComponents(string: url), c.password != nil else { return url }
        c.password = "***"
        return c.string ?? url
    }
}

public struct PostgresSettingsError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
