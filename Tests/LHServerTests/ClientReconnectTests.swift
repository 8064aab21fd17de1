import Foundation
import LHClient
import LHWire
import LHWorkflow
import Synchronization
import Testing

/// `LittleHorseClient` outlives its server: the next call after a lost
/// connection connects again (to the first of its servers that answers), a
/// read in flight when the connection went is sent again, a command in
/// flight fails for its caller to retry.
@Suite(.serialized, .timeLimit(.minutes(3))) struct ClientReconnectTests {
    /// One server killed and started again on its port and data: the same
    /// client object reads and writes through the new process.
    @Test func aClientWhoseServerRestartedConnectsAgainOnItsNextCall() async throws {
        let dir = try ServerProcess.temporaryDirectory("lh-reconnect")
        let port = try ServerProcess.freePort()
        var server = try await ServerProcess.start(dataDir: dir, port: port)
        defer { server.stop() }
        let client = try await server.client()
        defer { Task { await client.close() } }
        _ = try await client.putExternalEventDef(.with { $0.name = "before-restart" })
        let first = client.connection
        server.kill9()
        server = try await ServerProcess.start(dataDir: dir, port: port)
        #expect(try await client.getExternalEventDef("before-restart").id.name == "before-restart")
        #expect(client.connection !== first, "a new connection")
        _ = try await client.putExternalEventDef(.with { $0.name = "after-restart" })
        #expect(try await client.getExternalEventDef("after-restart").id.name == "after-restart")
    }

    /// A list's servers are tried from the one that answered last; a server
    /// whose connection was just lost is tried after the others (a lost
    /// machine would cost a connect timeout first).
    @Test func aServerWhoseConnectionWasLostIsTriedLast() async throws {
        var config = LHConfig(clientId: "unit")
        config.apiHost = "a-\(UUID().uuidString):1,b:2,c:3"
        let first = config.endpoints[0].host
        let tried = Mutex<[String]>([])
        let down = Mutex<Set<String>>([first])
        func attempt(_ wire: LHWireConnection.Configuration) throws -> String {
            tried.withLock { $0.append(wire.host) }
            if down.withLock({ $0.contains(wire.host) }) { throw LHError(.unavailable, "\(wire.host) is down") }
            return wire.host
        }
        #expect(try await config.connectToFirstReachable(role: .admin) { try attempt($0) } == "b")
        #expect(tried.withLock { $0 } == [first, "b"])
        down.withLock { $0 = [] }
        tried.withLock { $0 = [] }
        // b answered last: it is tried first, unless its connection was lost.
        #expect(try await config.connectToFirstReachable(role: .admin) { try attempt($0) } == "b")
        #expect(
            try await config.connectToFirstReachable(role: .admin, passingOver: ("b", 2)) { try attempt($0) } == "c")
        #expect(tried.withLock { $0 } == ["b", "c"])
    }

    /// While its server is down the client's calls fail with UNAVAILABLE
    /// (nothing to connect to) and it never gives up: once the server is
    /// back, the next call is served. After `close()`, no call reconnects.
    @Test func callsWhileTheServerIsDownFailAndACloseIsFinal() async throws {
        let dir = try ServerProcess.temporaryDirectory("lh-reconnect-down")
        let port = try ServerProcess.freePort()
        var server = try await ServerProcess.start(dataDir: dir, port: port)
        defer { server.stop() }
        let client = try await server.client()
        _ = try await client.serverVersion()
        server.kill9()
        do {
            _ = try await client.serverVersion()
            Issue.record("a call was answered with no server running")
        } catch let error as LHError {
            #expect(error.code == .unavailable || error.code == .connectionClosed, "\(error)")
        }
        server = try await ServerProcess.start(dataDir: dir, port: port)
        _ = try await client.serverVersion()
        await client.close()
        do {
            _ = try await client.serverVersion()
            Issue.record("a closed client connected again")
        } catch let error as LHError {
            #expect(error.code == .connectionClosed, "\(error)")
        }
    }

    /// A cluster of two: the client talks to the first; a read in flight
    /// while the first is paused and then killed is answered by the second
    /// (reads are served by any member), and so are the next reads; a
    /// command to the killed member's partitions is served once the second
    /// took them over (the client retries UNAVAILABLE meanwhile).
    @Test func aReadInFlightWhenItsServerDiesIsAnsweredByAnotherMember() async throws {
        guard let store = try PostgresFailoverTests.database() else { return }
        let ca = try ServerProcess.temporaryDirectory("lh-reconnect-cluster-ca")
        let arguments = PostgresFailoverTests.member(store, ca: ca) + ["--http-listen", "off"]
        var servers: [ServerProcess] = []
        defer { for s in servers { s.stop() } }
        for _ in 0..<2 { servers.append(try await ServerProcess.start(arguments: arguments)) }
        try await ClusterInterruptLiveTests.waitForShares(servers, partitions: 16)
        var config = servers[0].config()
        config.apiHost = servers.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
        // The first listed answers first (the list's last answerer is
        // remembered per list: this list is new).
        let client = try await LittleHorseClient.connect(config)
        defer { Task { await client.close() } }
        try await retryingUnavailable("PutExternalEventDef") {
            _ = try await client.putExternalEventDef(.with { $0.name = "never" })
        }
        try await retryingUnavailable("PutWfSpec") {
            _ = try await client.putWfSpec(Workflow("reconnect-wf") { $0.waitForEvent("never") }.compile())
        }
        let ids = (0..<12).map { "reconnect-\($0)" }
        for id in ids {
            try await retryingUnavailable("RunWf \(id)") {
                _ = try await client.runWf(
                    .with {
                        $0.wfSpecName = "reconnect-wf"; $0.id = id
                    })
            }
        }
        let connected = client.connection.channel.remoteAddress?.port
        let first = try #require(servers.first { $0.port == connected }, "connected to a server of the test")
        kill(first.process.processIdentifier, SIGSTOP)
        let read = Task { try await client.getWfRun(ids[0]) }
        try await Task.sleep(for: .milliseconds(300))
        first.kill9()
        let started = Date()
        #expect(try await read.value.id.id == ids[0])
        print(
            "client reconnect: a read in flight at a killed server answered by another \(Date().timeIntervalSince(started)) s after the kill"
        )
        #expect(client.connection.channel.remoteAddress?.port != connected)
        for id in ids { #expect(try await client.getWfRun(id).status == .running) }
        // Commands to every partition, the killed one's once taken over.
        for id in ids {
            try await retryingUnavailable("StopWfRun \(id)", timeout: 30) {
                try await client.stopWfRun(id)
            }
        }
        try await eventually("every WfRun HALTED") {
            for id in ids where try await client.getWfRun(id).status != .halted { return false }
            return true
        }
    }
}
