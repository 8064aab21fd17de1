import Foundation
import LHClient
import LHPostgresStore
import LHWire
import LHWorkflow
import NIOConcurrencyHelpers
import Testing

/// Chaos on a cluster: three lh-servers on one PostgreSQL (each owning a
/// share of the partitions and forwarding commands for the others' to
/// them), two workers connected to every server, a driver with idempotent
/// ids and guids; a random server killed -9 every few seconds for a minute
/// and started again, and once a server owning partitions paused (SIGSTOP)
/// past its lease and resumed. At the end
/// every acknowledged WfRun and event exists exactly once, interrupt counters
/// equal the acknowledged pings, every TaskRun succeeded exactly once, no
/// attempt reached two workers and no commit landed from a server after it
/// was marked dead.
@Suite(.serialized, .timeLimit(.minutes(5))) struct PostgresChaosTests {
    /// One of the three servers: its port and data directory.
    final class Slot: @unchecked Sendable {
        let index: Int
        let port: Int
        let dataDir: URL
        /// The server once it listens (a standby listens at once).
        let server = NIOLockedValueBox<ServerProcess?>(nil)
        init(index: Int, port: Int, dataDir: URL) {
            self.index = index
            self.port = port
            self.dataDir = dataDir
        }
        /// Starts the server; `server` is set when it listens.
        @discardableResult
        func launch(_ arguments: [String]) -> Task<ServerProcess, Error> {
            let (port, dataDir, box) = (self.port, self.dataDir, self.server)
            return Task {
                let s = try await ServerProcess.start(
                    arguments: arguments, dataDir: dataDir, port: port, listenTimeout: 600)
                box.withLockedValue { $0 = s }
                return s
            }
        }
        var listening: ServerProcess? { server.withLockedValue { $0 } }
        /// The server when it owns partitions (its last word on ownership).
        var owning: ServerProcess? {
            listening.flatMap { s in
                let said = s.ownership
                return said.isEmpty || said.contains("owns no partition") ? nil : s
            }
        }
        /// kill -9 of whatever runs on this slot's data directory.
        func kill9() async {
            server.withLockedValue { $0 = nil }
            _ = try? await runTool("/usr/bin/pkill", ["-9", "-f", "--", "--data-dir \(dataDir.path) "])
        }
    }

    @Test func killsAndAPauseOfRandomServersLoseNothingAndDeliverEachAttemptOnce() async throws {
        guard let store = try PostgresFailoverTests.database() else { return }
        let ca = try ServerProcess.temporaryDirectory("lh-chaos-ca")
        let base = try ServerProcess.temporaryDirectory("lh-chaos")
        let arguments =
            PostgresFailoverTests.member(store, ca: ca) + ["--http-listen", "off"]
        let slots = try (0..<3).map {
            Slot(index: $0, port: try ServerProcess.freePort(), dataDir: base.appendingPathComponent("server-\($0)"))
        }
        let endpoints = slots.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
        let first = try await slots[0].launch(arguments).value
        _ = try await PostgresFailoverTests.psql(store, "INSERT INTO lh_settings VALUES ('commit_log', 'on')")
        for s in slots.dropFirst() { s.launch(arguments) }
        defer {
            for s in slots {
                let dir = s.dataDir.path
                _ = try? spawnDetached("/usr/bin/pkill", ["-9", "-f", "--", "--data-dir \(dir) "])
            }
        }
        let execLog = base.appendingPathComponent("exec.log").path
        var workers: [LiveProcess] = []
        for w in 0..<2 {
            workers.append(
                try await first.startWorker(
                    "lh-test-worker", ["step-one:echo", "step-two:echo"],
                    environment: [
                        "LHC_API_HOST": endpoints, "LH_TEST_EXEC_LOG": execLog,
                        "LHW_TASK_WORKER_ID": "chaos-worker-\(w)",
                    ], ready: "test worker ready"))
        }
        defer { for w in workers { w.stop() } }
        var config = first.config()
        config.apiHost = endpoints
        let setup = try await first.client()
        for e in ["go", "ping"] { _ = try await setup.putExternalEventDef(.with { $0.name = e }) }
        _ = try await setup.putWfSpec(DurabilityTests.durableWorkflow.compile())
        await setup.close()

        // The chaos: every 5-8 s a random server is killed -9 and started
        // again a second later; at 25 s a server owning partitions is paused
        // for 6 s.
        let stop = NIOLockedValueBox(false)
        let chaos = Task {
            var kills = 0
            var paused = false
            let began = Date()
            var rng = SystemRandomNumberGenerator()
            while Date().timeIntervalSince(began) < 60 {
                try await Task.sleep(for: .milliseconds(Int.random(in: 5_000...8_000, using: &rng)))
                if !paused && Date().timeIntervalSince(began) > 25 {
                    paused = true
                    for s in slots {
                        guard let owner = s.owning, !hasExited(owner.process) else { continue }
                        progress("chaos: SIGSTOP of server-\(s.index) (\(owner.ownership)) for 6 s")
                        kill(owner.process.processIdentifier, SIGSTOP)
                        try await Task.sleep(for: .seconds(6))
                        kill(owner.process.processIdentifier, SIGCONT)
                        progress("chaos: SIGCONT of server-\(s.index)")
                        try await Task.sleep(for: .seconds(3))
                        if hasExited(owner.process) {
                            s.server.withLockedValue { $0 = nil }
                            progress(
                                "chaos: server-\(s.index) stepped down (exit \(PostgresFailoverTests.exitStatus(owner.process))); started again"
                            )
                            s.launch(arguments)
                        }
                        break
                    }
                    continue
                }
                // Every other kill is of a server owning partitions (a
                // takeover), the rest random.
                let owner = slots.first { $0.owning.map { !hasExited($0.process) } == true }
                let victim =
                    kills % 2 == 0 ? (owner ?? slots[0]) : slots[Int.random(in: 0..<3, using: &rng)]
                let wasOwner = victim.owning.map { !hasExited($0.process) } == true
                kills += 1
                progress(
                    "chaos: kill -9 of server-\(victim.index) (\(wasOwner ? "owning partitions" : "owning none")), kill \(kills)"
                )
                await victim.kill9()
                try await Task.sleep(for: .seconds(1))
                victim.launch(arguments)
            }
            stop.withLockedValue { $0 = true }
            return kills
        }

        var acknowledged: [String] = []
        var retried = 0
        var i = 0
        while !stop.withLockedValue({ $0 }) {
            let id = "chaos-\(i)"
            try await PostgresFailoverTests.retrying(config, retries: &retried) { client in
                do {
                    _ = try await client.runWf(
                        .with {
                            $0.wfSpecName = "durable"; $0.id = id
                        })
                } catch let e as LHError where e.code == .alreadyExists {}
            }
            for (event, guid) in [("ping", "ping-\(i)"), ("go", "go-\(i)")] {
                try await PostgresFailoverTests.retrying(config, retries: &retried) { client in
                    _ = try await client.putExternalEvent(
                        .with {
                            $0.wfRunID.id = id; $0.externalEventDefID.name = event; $0.guid = guid
                            $0.content.str = "x"
                        })
                }
            }
            acknowledged.append(id)
            i += 1
        }
        let kills = try await chaos.value
        progress("chaos: \(acknowledged.count) WfRuns driven, \(kills) kills, \(retried) requests retried")

        let client = try await LittleHorseClient.connect(config)
        defer { Task { await client.close() } }
        try await eventually("every acknowledged WfRun COMPLETED", timeout: 90) {
            for id in acknowledged {
                guard (try? await client.getWfRun(id).status) == .completed else { return false }
            }
            return true
        }
        for id in acknowledged {
            let count = try await client.getVariable(
                .with {
                    $0.wfRunID.id = id; $0.name = "count"
                })
            #expect(count.value.int == 1, "the ping of \(id) applied exactly once")
            let events = try await client.listExternalEvents(id).results
            #expect(Set(events.map(\.id.guid)).count == 2 && events.count == 2, "each event of \(id) stored once")
            let tasks = try await client.listTaskRuns(id).results
            #expect(tasks.count == 2, "two TaskRuns in \(id)")
            for t in tasks {
                #expect(t.status == .taskSuccess, "\(id) \(t.id.taskGuid): \(t.status)")
                #expect(t.attempts.filter { $0.status == .taskSuccess }.count == 1, "\(id) succeeded once")
            }
        }
        // No attempt reached two workers (or one worker twice).
        let lines = try String(contentsOfFile: execLog, encoding: .utf8).split(separator: "\n")
        var seen: [String: Int] = [:]
        for line in lines {
            let f = line.split(separator: " ")
            guard f.count == 5 else { continue }
            seen["\(f[1]) \(f[2]) \(f[3])", default: 0] += 1
        }
        let twice = seen.filter { $0.value > 1 }
        #expect(twice.isEmpty, "attempts delivered more than once: \(twice.keys.sorted().prefix(10))")
        #expect(seen.count >= acknowledged.count * 2)
        // No commit of a member after PostgreSQL marked it dead.
        let late = try await PostgresFailoverTests.commitsAfterDeath(store)
        #expect(late == "0", "commits after a member was marked dead")
        let epochs = try await PostgresFailoverTests.psql(store, "SELECT max(epoch) FROM lh_partitions")
        #expect((Int(epochs) ?? 0) >= 3, "ownership moved at least three times (max epoch \(epochs))")
        #expect(retried > 0)
        print(
            "chaos on 3 servers: \(acknowledged.count) WfRuns with 2 events each, \(kills) kills and a 6 s pause, \(retried) requests retried, \(seen.count) attempts delivered once each, max epoch \(epochs)"
        )
    }
}
