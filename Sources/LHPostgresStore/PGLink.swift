import Foundation
import Logging
import NIOCore
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
                throw PGError(error, doing: "connecting to PostgreSQL at \(settings.where)")
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
/// `postgres://user[:password]@host[:port]/database` URL.
public struct PostgresSettings: Sendable {
    var connection: PostgresConnection.Configuration
    /// `host:port/database`, for messages (never the password).
    public var `where`: String

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
        var tls: PostgresConnection.Configuration.TLS = .disable
        let query = c.queryItems ?? []
        if let mode = query.first(where: { $0.name == "sslmode" })?.value, mode != "disable" {
            throw PostgresSettingsError(
                "sslmode=\(mode) is not supported yet: run PostgreSQL on a private network or loopback (sslmode=disable)"
            )
        }
        tls = .disable
        connection = PostgresConnection.Configuration(
            host: host, port: port, username: user, password: c.password, database: database, tls: tls)
        connection.options.connectTimeout = .milliseconds(Int64(connectTimeout * 1000))
        self.where = "\(host):\(port)/\(database)"
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
