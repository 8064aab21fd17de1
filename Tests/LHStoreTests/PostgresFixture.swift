import Foundation
import LHPostgresStore
import LHStore
import Logging
import NIOCore
import NIOPosix
import PostgresNIO

/// A database of its own for each test, in the PostgreSQL that
/// scripts/postgres.sh started (`LH_TEST_POSTGRES_URL`; scripts/test.sh
/// runs the tests under it). Without it the PostgreSQL cases print SKIPPED
/// with the reason and pass.
enum PostgresFixture {
    static let serverURL = ProcessInfo.processInfo.environment["LH_TEST_POSTGRES_URL"]

    static func skipped(_ test: String) -> Bool {
        if serverURL == nil {
            print(
                "SKIPPED \(test) on PostgreSQL: LH_TEST_POSTGRES_URL is not set (run under scripts/postgres.sh run, as scripts/test.sh does)"
            )
            return true
        }
        return false
    }

    /// Creates an empty database and returns its URL.
    static func freshDatabase() async throws -> String {
        guard let serverURL, var url = URLComponents(string: serverURL) else {
            throw FixtureError(description: "LH_TEST_POSTGRES_URL is not a URL: \(serverURL ?? "unset")")
        }
        let name = "lh_test_\(UUID().uuidString.prefix(12).lowercased().replacingOccurrences(of: "-", with: ""))"
        try await run(serverURL, "CREATE DATABASE \(name)")
        url.path = "/\(name)"
        return url.string!
    }

    static func connect(_ url: String) async throws -> PostgresConnection {
        let c = URLComponents(string: url)!
        var database = c.path
        database.removeFirst()
        let config = PostgresConnection.Configuration(
            host: c.host!, port: c.port ?? 5432, username: c.user ?? "postgres", password: c.password,
            database: database, tls: .disable)
        return try await PostgresConnection.connect(
            on: MultiThreadedEventLoopGroup.singleton.next(), configuration: config, id: 1,
            logger: Logger(label: "test"))
    }

    static func run(_ url: String, _ sql: String) async throws {
        let c = try await connect(url)
        defer { Task { try? await c.close() } }
        try await c.query(PostgresQuery(unsafeSQL: sql), logger: Logger(label: "test"))
    }

    static func open(_ url: String, partitions: Int = 8, ttl: Double = 5) async throws -> PostgresStore {
        var options = PostgresStore.Options(url: url)
        options.partitions = partitions
        options.leaseTTL = ttl
        return try PostgresStore.open(options, logger: Logger(label: "test"))
    }
}

struct FixtureError: Error, CustomStringConvertible {
    var description: String
}
