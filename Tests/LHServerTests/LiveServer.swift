import Foundation
import LHClient
import LHTestKit
import LHWire

/// A server the live tests talk to: in this process (``TestServer``) or a
/// spawned `lh-server` (``ServerProcess``, for kill -9, exit codes and the
/// CLI). Workers and `lhctl` reach either the same way.
protocol LiveServer: Sendable {
    var port: Int { get }
    var caPath: String? { get }
    var dataDir: URL { get }
    func config(caPath: String?) -> LHConfig
    func connectClient() async throws -> LittleHorseClient
}

extension ServerProcess: LiveServer {
    func connectClient() async throws -> LittleHorseClient { try await client() }
}

extension TestServer: LiveServer {
    func connectClient() async throws -> LittleHorseClient { try await connect() }
}
