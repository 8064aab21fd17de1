import Foundation
import LHClient
import LHServer
import LHTestKit
import LHWire
import LHWireProto
import Logging
import NIOCore
import NIOPosix
import Testing

/// The framed TLS protocol against a real server (in this process, TLS on): every kind of
/// bad input gets a clear error, and the server keeps serving everyone else.
@Suite(.serialized, .timeLimit(.minutes(3))) struct ProtocolTests {
    /// The server still answers a well-behaved client.
    func assertServing(_ server: some LiveServer) async throws {
        let client = try await server.connectClient()
        let version = try await client.serverVersion()
        #expect(version.minorVersion == LHServerConfiguration.version.minor)
        await client.close()
    }

    @Test func tenThousandRequestsManyInFlightAreAllAnsweredAndMatched() async throws {
        try await withTestServer { client in
            let total = 10_000
            let window = 256
            let start = ContinuousClock.now
            let answered = try await withThrowingTaskGroup(of: Int.self) { group in
                var sent = 0
                var done = 0
                func launch() {
                    let n = sent
                    sent += 1
                    group.addTask {
                        // Alternate two request kinds so a mismatched response
                        // would show up as the wrong kind.
                        if n % 2 == 0 {
                            let v = try await client.serverVersion()
                            #expect(v.majorVersion == LHServerConfiguration.version.major)
                        } else {
                            do {
                                _ = try await client.call(.getWfRun(.with { $0.id = "wf-\(n)" }))
                            } catch let error as LHError {
                                // The answer names the id this request asked for.
                                #expect(
                                    error.code == .notFound && error.message.contains("'wf-\(n)'"),
                                    "response to get_wf_run wf-\(n): \(error)")
                            }
                        }
                        return n
                    }
                }
                while sent < min(window, total) { launch() }
                while try await group.next() != nil {
                    done += 1
                    if sent < total { launch() }
                }
                return done
            }
            let elapsed = ContinuousClock.now - start
            #expect(answered == total)
            #expect(client.connection.unmatchedResponses == 0)
            print("round trip: \(total) requests, \(window) in flight, in \(elapsed) over TLS")
        }
    }

    /// A client that sends heartbeats every second judges the server's
    /// silence by that (three seconds): the server sends its own that often
    /// on that connection, so an idle one stays open. (Before, a forwarding
    /// server's idle link to an owner closed after 3 s, once with a request
    /// just sent on it.) A client of the default interval gets the server's.
    @Test func aClientOfAShorterHeartbeatIntervalGetsHeartbeatsThatOftenAndItsIdleConnectionStaysOpen()
        async throws
    {
        try await TestServer.with { server in
            var wire = server.config().connectionConfiguration(role: .admin)
            wire.heartbeatInterval = .seconds(1)
            let quick = try await LHWireConnection.connect(wire, logger: Logger(label: "test"))
            let usual = try await LHWireConnection.connect(
                server.config().connectionConfiguration(role: .admin), logger: Logger(label: "test"))
            #expect(quick.welcome.heartbeatIntervalSeconds == 1)
            #expect(usual.welcome.heartbeatIntervalSeconds == 5)
            try await Task.sleep(for: .milliseconds(4500))
            #expect(quick.channel.isActive, "the idle connection of 1 s heartbeats was closed")
            _ = try await quick.request(.getServerVersion(.init()))
            _ = try await usual.request(.getServerVersion(.init()))
            await quick.close()
            await usual.close()
        }
    }

    @Test func frameLongerThanTheMaximumClosesThatConnectionWithAnErrorNamingTheLimit() async throws {
        try await TestServer.with(configure: { $0.maxFrameBytes = 4096 }) { server in
            let bystander = try await server.connectClient()
            let raw = try await RawClient.connect(port: server.port, caPath: server.caPath)
            try await raw.send(RawClient.hello())
            var header: [UInt8] = []
            withUnsafeBytes(of: UInt32(4097).bigEndian) { header.append(contentsOf: $0) }
            try await raw.send(header)
            #expect(await raw.waitForClose())
            let frames = try raw.frames()
            let last = try #require(frames.last)
            #expect(last.error.code == .frameTooLarge)
            #expect(last.error.message.contains("4097") && last.error.message.contains("4096"))
            // The other connection is unaffected.
            _ = try await bystander.serverVersion()
            await bystander.close()
            try await assertServing(server)
        }
    }

    @Test func lengthPrefixWithNoBodyThenEOFLeavesTheServerServing() async throws {
        try await TestServer.with { server in
            let raw = try await RawClient.connect(port: server.port, caPath: server.caPath)
            try await raw.send(RawClient.hello())
            try await raw.send([0, 0, 0, 200])
            await raw.close()
            try await assertServing(server)
        }
    }

    @Test func bytesThatAreNotAnEnvelopeGetAMalformedFrameError() async throws {
        try await TestServer.with { server in
            let raw = try await RawClient.connect(port: server.port, caPath: server.caPath)
            try await raw.send(RawClient.hello())
            try await raw.send([0, 0, 0, 4, 0xFF, 0xFF, 0xFF, 0xFF])
            #expect(await raw.waitForClose())
            let last = try #require(try raw.frames().last)
            #expect(last.error.code == .malformedFrame)
            try await assertServing(server)
        }
    }

    @Test func plaintextClientOnTheTLSPortIsDisconnected() async throws {
        try await TestServer.with { server in
            let raw = try await RawClient.connect(port: server.port, caPath: nil)
            try await raw.send(RawClient.hello())
            #expect(await raw.waitForClose())
            // What comes back, if anything, is a TLS alert: never an envelope.
            #expect((try? raw.frames())?.isEmpty ?? true, "a plaintext client must never get a frame")
            try await assertServing(server)
        }
    }

    /// LHC_API_PROTOCOL=PLAINTEXT against the TLS port: the client reads
    /// the server's TLS alert and says that the two sides disagree.
    @Test func aPlaintextClientOfTheTLSPortIsToldTheServerUsesTLS() async throws {
        try await TestServer.with { server in
            var config = server.config()
            config.apiProtocol = .plaintext
            let error = await #expect(throws: LHError.self) {
                let client = try await LittleHorseClient.connect(config)
                _ = try await client.getWfRun("anything")
            }
            #expect("\(error!)".contains("received a TLS record where a frame was expected"), "\(error!)")
            try await assertServing(server)
        }
    }

    @Test func clientThatTrustsAnotherCAIsRefusedAtTheHandshake() async throws {
        try await TestServer.with { server in
            let dir = try ServerProcess.temporaryDirectory("other-ca")
            let other = try DevCertificateAuthority.makeCA(commonName: "someone else's CA")
            let otherPath = dir.appendingPathComponent("ca.pem").path
            try other.certificatePEM.write(toFile: otherPath, atomically: true, encoding: .utf8)
            let error = await #expect(throws: LHError.self) {
                _ = try await LittleHorseClient.connect(server.config(caPath: otherPath))
            }
            #expect(error?.code == .unavailable)
            #expect("\(error!)".lowercased().contains("certificate"), "error names the certificate problem: \(error!)")
            #expect(
                "\(error!)".contains("set LHC_CA_CERT to the CA that signed it"), "error says what to do: \(error!)")
            try await assertServing(server)
        }
    }

    @Test func wrongProtocolVersionInHelloIsRefusedNamingBothVersions() async throws {
        try await TestServer.with { server in
            let raw = try await RawClient.connect(port: server.port, caPath: server.caPath)
            try await raw.send(RawClient.hello(version: 99))
            #expect(await raw.waitForClose())
            let reply = try #require(try raw.frames().first)
            #expect(reply.id == 1)
            #expect(reply.error.code == .protocolVersionMismatch)
            #expect(reply.error.message.contains("99"))
            try await assertServing(server)
        }
    }

    @Test func requestBeforeHelloIsRefused() async throws {
        try await TestServer.with { server in
            let raw = try await RawClient.connect(port: server.port, caPath: server.caPath)
            try await raw.send(Lhwire_Envelope(id: 4, .getServerVersion(.init())))
            #expect(await raw.waitForClose())
            let reply = try #require(try raw.frames().first)
            #expect(reply.error.code == .helloRequired)
            try await assertServing(server)
        }
    }

    @Test func mutualTLSRefusesAWorkerWithoutAClientCertificate() async throws {
        let dir = try ServerProcess.temporaryDirectory("mtls")
        let clientCA = try DevCertificateAuthority.makeCA(commonName: "client CA")
        let clientCAPath = dir.appendingPathComponent("client-ca.pem").path
        try clientCA.certificatePEM.write(toFile: clientCAPath, atomically: true, encoding: .utf8)
        try await TestServer.with(configure: { $0.clientCAPath = clientCAPath }) { server in
            var worker = server.config()
            worker.clientId = "worker-without-cert"
            let refused = await #expect(throws: LHError.self) {
                _ = try await LHWireConnection.connect(worker.connectionConfiguration(role: .worker))
            }
            #expect(refused?.code == .unavailable || refused?.code == .connectionClosed)

            // A client holding a certificate signed by the client CA is served.
            let leaf = try DevCertificateAuthority.issue(commonName: "worker-1", usages: [.clientAuth], by: clientCA)
            let certPath = dir.appendingPathComponent("worker.pem").path
            let keyPath = dir.appendingPathComponent("worker-key.pem").path
            try leaf.certificatePEM.write(toFile: certPath, atomically: true, encoding: .utf8)
            try leaf.keyPEM.write(toFile: keyPath, atomically: true, encoding: .utf8)
            var withCert = server.config()
            withCert.clientCertPath = certPath
            withCert.clientKeyPath = keyPath
            let client = try await LittleHorseClient.connect(withCert)
            _ = try await client.serverVersion()
            await client.close()
        }
    }
}

/// `lhctl` as a user runs it: the built binary, configured by LHC_* variables.
@Suite struct LHCtlVersionTests {
    @Test func lhctlVersionPrintsTheServersVersionOverTLS() async throws {
        try await withServer { server in
            let process = Process()
            process.executableURL = ServerProcess.binDir.appendingPathComponent("lhctl")
            process.arguments = ["version"]
            process.environment = [
                "LHC_API_HOST": "127.0.0.1", "LHC_API_PORT": "\(server.port)", "LHC_CA_CERT": server.caPath ?? "",
                "HOME": server.dataDir.path,
            ]
            let out = Pipe()
            process.standardOutput = out
            try process.run()
            process.waitUntilExit()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(process.terminationStatus == 0)
            #expect(text.contains("Server version: 0.1.0"), "lhctl printed: \(text)")
        }
    }

    @Test func lhctlReportsAnUnreachableServerOnStderrWithNonZeroExit() async throws {
        let process = Process()
        process.executableURL = ServerProcess.binDir.appendingPathComponent("lhctl")
        process.arguments = ["version"]
        process.environment = ["LHC_API_HOST": "127.0.0.1", "LHC_API_PORT": "1", "HOME": "/nonexistent"]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = Pipe()
        try process.run()
        process.waitUntilExit()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus != 0)
        #expect(text.contains("UNAVAILABLE") && text.contains("127.0.0.1:1"), "stderr: \(text)")
    }
}

/// The client's side: a response whose id matches no request in flight is
/// logged and dropped, and the connection goes on working.
@Suite struct ClientCorrelationTests {
    @Test func responseIdThatMatchesNoRequestIsDroppedAndTheConnectionGoesOn() async throws {
        // A peer that answers every request twice: first with a wrong id.
        let peer = try await ScriptedPeers.bind("stray")
        let listener = peer.listener
        let serverTask = Task {
            try await listener.executeThenClose { inbound in
                for try await connection in inbound {
                    try await connection.executeThenClose { requests, responses in
                        for try await request in requests {
                            if case .hello = request.kind { continue }
                            try await responses.write(Lhwire_Envelope(id: request.id + 1000, .serverVersion(.init())))
                            try await responses.write(
                                Lhwire_Envelope(id: request.id, .serverVersion(.with { $0.majorVersion = 42 })))
                        }
                    }
                }
            }
        }
        defer { serverTask.cancel(); listener.channel.close(promise: nil) }
        let connection = try await LHWireConnection.connect(
            .init(host: "127.0.0.1", port: peer.port, tls: .init(caCertPath: peer.caPath))
        )
        let reply = try await connection.request(.getServerVersion(.init()))
        #expect(reply == .serverVersion(.with { $0.majorVersion = 42 }))
        let again = try await connection.request(.getServerVersion(.init()))
        #expect(again == .serverVersion(.with { $0.majorVersion = 42 }))
        #expect(connection.unmatchedResponses == 2)
        await connection.close()
    }

    @Test func aRequestWithNoAnswerFailsAfterTheRequestTimeoutAndTheConnectionGoesOn() async throws {
        // A peer that never answers GetTaskDef and answers everything else.
        let peer = try await ScriptedPeers.bind("silent") { request in
            switch request.kind {
            case .hello?, .getTaskDef?, nil: []
            default: [Lhwire_Envelope(id: request.id, .serverVersion(.with { $0.majorVersion = 7 }))]
            }
        }
        defer { peer.listener.channel.close(promise: nil) }
        let connection = try await LHWireConnection.connect(
            .init(
                host: "127.0.0.1", port: peer.port, tls: .init(caCertPath: peer.caPath),
                requestTimeout: .milliseconds(400))
        )
        // Timed where the failure happens (on the event loop), not where the
        // test's task gets a thread again.
        let failed = connection.channel.eventLoop.makePromise(of: (Double, Error?).self)
        let start = Date()
        connection.request(.getTaskDef(.with { $0.name = "x" })) { result in
            failed.succeed(
                (
                    Date().timeIntervalSince(start),
                    { if case .failure(let e) = result { return e } else { return nil } }()
                ))
        }
        let (took, error) = try await failed.futureResult.get()
        let lhError = error as? LHError
        #expect(
            lhError?.code == .unavailable && lhError?.message.contains("no answer") == true
                && lhError?.message.contains("400 ms") == true,
            "\(String(describing: error))")
        #expect(took >= 0.4 && took < 1.5, "failed after \(took) s; the timeout is 0.4 s, checked every 0.1 s")
        let reply = try await connection.request(.getServerVersion(.init()))
        #expect(reply == .serverVersion(.with { $0.majorVersion = 7 }), "the connection goes on")
        await connection.close()
    }
}
