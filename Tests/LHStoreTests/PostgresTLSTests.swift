import Foundation
import LHPostgresStore
import LHWire
import Logging
import PostgresNIO
import Testing

@testable import LHStore

/// TLS between the store and PostgreSQL, with libpq's URL parameters:
/// against the PostgreSQL of scripts/postgres.sh (ssl=on, a CA of its own in
/// `LH_TEST_POSTGRES_CA`), whose sessions say whether they are encrypted.
@Suite struct PostgresTLSTests {
    static let ca = ProcessInfo.processInfo.environment["LH_TEST_POSTGRES_CA"].flatMap { $0.isEmpty ? nil : $0 }

    static func skipped(_ test: String) -> Bool {
        if PostgresFixture.skipped(test) { return true }
        if ca == nil {
            print(
                "SKIPPED \(test): LH_TEST_POSTGRES_CA is not set (scripts/postgres.sh starts PostgreSQL with TLS when openssl is installed)"
            )
            return true
        }
        return false
    }

    static func with(_ url: String, _ parameters: String) -> String {
        url + (url.contains("?") ? "&" : "?") + parameters
    }

    /// Whether PostgreSQL's sessions on `database` are encrypted (one value
    /// per session, the store's own among them).
    static func sessionsEncrypted(_ url: String) async throws -> [Bool] {
        let database = String(URLComponents(string: url)!.path.dropFirst())
        let c = try await PostgresFixture.connect(PostgresFixture.serverURL!)
        defer { Task { try? await c.close() } }
        return try await c.query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = \(database)",
            logger: Logger(label: "test")
        ).collect().map { try $0.decode(Bool.self) }
    }

    static func roundTrip(_ url: String, _ id: String) async throws {
        let store = try await PostgresFixture.open(url, ttl: 30)
        defer { store.close() }
        try store.commit(PostgresFencingTests.batch(id))
        #expect(try store.wfRun(id) != nil)
        let encrypted = try await sessionsEncrypted(url)
        #expect(!encrypted.isEmpty)
        let expected = !url.contains("sslmode=disable")
        #expect(encrypted.allSatisfy { $0 == expected }, "\(url): sessions encrypted \(encrypted)")
    }

    /// verify-full against the CA that signed PostgreSQL's certificate (for
    /// 127.0.0.1): every session of the store is TLS, commits and reads work.
    @Test func verifyFullWithTheRightCAEncryptsEverySessionOfTheStore() async throws {
        if Self.skipped(#function) { return }
        let url = try await PostgresFixture.freshDatabase()
        try await Self.roundTrip(Self.with(url, "sslmode=verify-full&sslrootcert=\(Self.ca!)"), "tls-full")
    }

    /// No sslmode is libpq's `prefer`: TLS when the server offers it;
    /// `disable` is plaintext.
    @Test func withoutSslmodeTheStorePrefersTLSAndDisableIsPlaintext() async throws {
        if Self.skipped(#function) { return }
        try await Self.roundTrip(try await PostgresFixture.freshDatabase(), "tls-prefer")
        try await Self.roundTrip(Self.with(try await PostgresFixture.freshDatabase(), "sslmode=disable"), "tls-off")
    }

    /// A server certificate that does not chain to sslrootcert is refused at
    /// the handshake, the error naming the database and the TLS mode; with
    /// sslmode=require and no root file the same server is accepted
    /// (encrypted, unverified, as libpq).
    @Test func aServerOfAnotherCAIsRefusedNamingTheModeAndRequireWithoutARootAcceptsIt() async throws {
        if Self.skipped(#function) { return }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lh-other-ca-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let other = dir.appendingPathComponent("other.crt").path
        try DevCertificateAuthority.makeCA(commonName: "another CA").certificatePEM.write(
            toFile: other, atomically: true, encoding: .utf8)

        let url = try await PostgresFixture.freshDatabase()
        for mode in ["verify-ca", "verify-full"] {
            do {
                let store = try await PostgresFixture.open(Self.with(url, "sslmode=\(mode)&sslrootcert=\(other)"))
                store.close()
                Issue.record("sslmode=\(mode) accepted a server of another CA")
            } catch {
                let text = "\(error)"
                #expect(text.contains("sslmode=\(mode), sslrootcert=\(other)"), "\(text)")
                #expect(text.contains(URLComponents(string: url)!.port.map(String.init) ?? "?"), "\(text)")
                #expect(text.lowercased().contains("certificate"), "\(text)")
            }
        }
        try await Self.roundTrip(Self.with(url, "sslmode=require"), "tls-require")
    }

    /// Parameters that cannot work are refused before any connection, each
    /// naming what was wrong.
    @Test func wrongTLSParametersAreRefusedNamingThem() throws {
        let base = "postgres://lh@127.0.0.1:5/postgres"
        func refusal(_ query: String) -> String {
            do {
                _ = try PostgresSettings(url: base + "?" + query)
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        #expect(refusal("sslmode=sometimes").contains("sslmode=sometimes is not a TLS mode"))
        #expect(
            refusal("sslmode=verify-full&sslrootcert=/nonexistent/root.crt").contains(
                "sslrootcert /nonexistent/root.crt"))
        #expect(refusal("sslmode=prefer&sslrootcert=/nonexistent/root.crt").contains("does not verify the server"))
        #expect(refusal("sslmode=disable&sslrootcert=/x").contains("sslmode=disable"))
        #expect(refusal("sslmode=require&sslcert=/x").contains("sslcert is given without sslkey"))
        #expect(refusal("application_name=x").contains("unknown parameter 'application_name'"))
        #expect(refusal("sslmode=verify-full&sslrootcert=system") == "accepted")
        #expect(refusal("sslmode=allow") == "accepted")
    }
}
