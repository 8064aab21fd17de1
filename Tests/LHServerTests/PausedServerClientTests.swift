import Foundation
import LHClient
import LHWire
import Testing

/// A client listing several servers (`LHC_API_HOST=a,b`) whose first server
/// is paused (SIGSTOP: its socket accepts, nothing answers) moves on to the
/// next once the handshake and welcome take longer than 3 s, instead of
/// waiting for the heartbeat timeout. Real processes.
@Suite(.serialized, .timeLimit(.minutes(2))) struct PausedServerClientTests {
    @Test func aClientOfSeveralServersPassesOverAPausedOneWithinTheHelloTimeout() async throws {
        // Two servers whose certificates one CA issued (the client trusts both).
        let ca = try ServerProcess.temporaryDirectory("lh-paused-ca")
        let arguments = ["--http-listen", "off", "--dev-ca-dir", ca.path]
        let paused = try await ServerProcess.start(arguments: arguments)
        defer {
            kill(paused.process.processIdentifier, SIGCONT)
            paused.stop()
        }
        let live = try await ServerProcess.start(arguments: arguments)
        defer { live.stop() }
        kill(paused.process.processIdentifier, SIGSTOP)
        var config = paused.config()
        config.apiHost = "127.0.0.1:\(paused.port),127.0.0.1:\(live.port)"
        let started = Date()
        let client = try await LittleHorseClient.connect(config)
        defer { Task { await client.close() } }
        _ = try await client.serverVersion()
        let seconds = Date().timeIntervalSince(started)
        print("paused-server test: connected past the paused server in \(seconds) s")
        #expect(seconds >= 2.5, "the paused server was not tried first (\(seconds) s)")
        #expect(seconds < 8, "waited \(seconds) s for a paused server")
    }
}
