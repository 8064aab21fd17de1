import Foundation
import LHClient
import LHPostgresStore
import LHWire
import LHWorkflow
import Testing

/// Several lh-servers on one PostgreSQL (`--store postgres://...`): each
/// owns a fair share of the partitions, serves reads, forwards commands to
/// the owner of the others, and takes the share of a server that is killed;
/// clients and workers list both servers (`LHC_API_HOST`); a worker
/// connects to every server. Real
/// processes, a real PostgreSQL (scripts/postgres.sh, as scripts/test.sh
/// runs the tests); without it the tests print SKIPPED and pass.
@Suite(.serialized, .timeLimit(.minutes(4))) struct PostgresFailoverTests {
    static let serverURL = ProcessInfo.processInfo.environment["LH_TEST_POSTGRES_URL"]

    /// A database of its own, or nil after printing why not.
    static func database(_ test: String = #function) throws -> String? {
        guard let serverURL, var url = URLComponents(string: serverURL) else {
            print(
                "SKIPPED \(test): LH_TEST_POSTGRES_URL is not set (run under scripts/postgres.sh run, as scripts/test.sh does)"
            )
            return nil
        }
        url.path = "/lh_live_\(UUID().uuidString.prefix(8).lowercased())"
        try PostgresStore.createDatabase(url.string!)
        return url.string!
    }

    /// Server arguments for a member of the cluster.
    static func member(_ store: String, ca: URL) -> [String] {
        ["--store", store, "--lease-ttl", "2", "--partitions", "16", "--dev-ca-dir", ca.path, "--claim-grace", "2"]
    }

    final class Current: @unchecked Sendable {
        let lock = NSLock()
        var servers: [ServerProcess] = []
        func add(_ s: ServerProcess) { lock.lock(); servers.append(s); lock.unlock() }
        var all: [ServerProcess] { lock.lock(); defer { lock.unlock() }; return servers }
    }

    @Test func theOtherServerTakesTheShareOfAKilledOneAndNothingAcknowledgedIsLost() async throws {
        guard let store = try Self.database() else { return }
        let ca = try ServerProcess.temporaryDirectory("lh-cluster-ca")
        let ports = [try ServerProcess.freePort(), try ServerProcess.freePort()]
        let endpoints = ports.map { "127.0.0.1:\($0)" }.joined(separator: ",")
        let servers = Current()
        let first = try await ServerProcess.start(arguments: Self.member(store, ca: ca), port: ports[0])
        servers.add(first)
        defer { for s in servers.all { s.stop() } }
        #expect(first.ownsPartitions, "\(first.announced)")
        // The second listens at once and takes its share (8 of 16) once the
        // first released it; it serves reads and forwards commands for the
        // first's partitions to it.
        let second = try await ServerProcess.start(
            arguments: Self.member(store, ca: ca) + [
                "--http-listen", "127.0.0.1:0", "--http-actions", "--http-token", "t0ken",
            ], port: ports[1])
        servers.add(second)
        try await second.waitUntil(owning: "owns 8 of 16 partitions", timeout: 30)
        try await first.waitUntil(owning: "owns 8 of 16 partitions", timeout: 30)

        var config = first.config()
        config.apiHost = endpoints
        let worker = try await first.startWorker(
            "lh-test-worker", ["step-one:echo", "step-two:echo"], environment: ["LHC_API_HOST": endpoints],
            ready: "test worker ready")
        defer { worker.stop() }
        // Everything through the second alone: metadata (the first owns
        // partition 0) and commands of the first's WfRuns are forwarded to
        // it, reads served from PostgreSQL.
        let setup = try await second.client()
        for e in ["go", "ping"] { _ = try await setup.putExternalEventDef(.with { $0.name = e }) }
        let spec = try await setup.putWfSpec(DurabilityTests.durableWorkflow.compile())
        #expect(try await setup.getWfSpec(spec.id).id == spec.id, "a WfSpec put through the second is read there")
        let viaStandby = try await setup.runWf(.with { $0.wfSpecName = "durable" })
        #expect(!viaStandby.id.id.isEmpty)
        for (event, guid) in [("ping", "ping-s"), ("go", "go-s")] {
            _ = try await setup.putExternalEvent(
                .with {
                    $0.wfRunID.id = viaStandby.id.id; $0.externalEventDefID.name = event; $0.guid = guid
                    $0.content.str = "x"
                })
        }
        try await eventually("the WfRun started through the second COMPLETED (read there)", timeout: 30) {
            try await setup.getWfRun(viaStandby.id.id).status == .completed
        }
        // The second's dashboard: its actions on a WfRun of the first's
        // partitions (the first kept the lowest 8) go to the first too.
        let dash = (0..<100).map { "dash-\($0)" }.first { PostgresStore.partition(of: $0, count: 16) < 8 }!
        _ = try await setup.runWf(
            .with {
                $0.wfSpecName = "durable"; $0.id = dash
            })
        let dashboard = try #require(second.dashboardURL)
        for (action, status) in [("stop", Littlehorse_LHStatus.halted), ("resume", .running)] {
            let r = try await DashboardTools.request(
                "POST", "\(dashboard)wfRuns/\(dash)/\(action)", ca: second.caPath, form: ["thread=0", "token=t0ken"])
            #expect(r.status == 303, "\(action) at the second's dashboard: \(r.status) \(r.body)")
            try await eventually("\(dash) \(status) after \(action) at the second", timeout: 30) {
                try await setup.getWfRun(dash).status == status
            }
        }
        // The second's dashboard names both members and their shares; its
        // /metrics has the cluster's levels and what it forwarded.
        let front = try await DashboardTools.request("GET", dashboard, ca: second.caPath)
        #expect(front.status == 200)
        #expect(front.body.contains("serves 8 of 16 partitions."), "\(front.body.prefix(2000))")
        for port in ports { #expect(front.body.contains("<td>127.0.0.1:\(port)</td>"), "member at \(port) listed") }
        #expect(front.body.components(separatedBy: "<td>8</td></tr>").count == 3, "8 partitions each")
        #expect(front.body.contains("(this server)"))
        let scraped = try await DashboardTools.request("GET", "\(dashboard)metrics", ca: second.caPath)
        func sample(_ name: String) -> Double? {
            scraped.body.split(separator: "\n").first { $0.hasPrefix(name + " ") }
                .flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        #expect(sample("lh_cluster_partitions") == 16)
        #expect(sample("lh_cluster_partitions_served") == 8)
        #expect(sample("lh_cluster_members_live") == 2)
        // Metadata, the first's WfRun and events, the dashboard's actions.
        let forwarded = sample("lh_cluster_forwarded_requests_total{code=\"OK\"}") ?? 0
        #expect(forwarded >= 5, "forwarded \(forwarded)")
        #expect((sample("lh_cluster_forward_seconds_count") ?? 0) >= forwarded)
        await setup.close()

        let runs = 30
        var retried = 0
        var killedAt: Date?
        var failover: Double?
        let started = Date()
        do {
            for i in 0..<runs {
                if i == runs / 2 {
                    progress("failover test: kill -9 of the owner after \(i) WfRuns")
                    killedAt = Date()
                    first.kill9()
                }
                let id = "wf-\(i)"
                try await Self.retrying(config, retries: &retried) { client in
                    do {
                        _ = try await client.runWf(
                            .with {
                                $0.wfSpecName = "durable"; $0.id = id
                            })
                    } catch let e as LHError where e.code == .alreadyExists {
                        // Committed before the kill: acknowledged now.
                    }
                }
                if let killedAt, failover == nil {
                    failover = Date().timeIntervalSince(killedAt)
                    progress("failover test: the other server answered \(failover!) s after the kill")
                }
                for (event, guid) in [("ping", "ping-\(i)"), ("go", "go-\(i)")] {
                    try await Self.retrying(config, retries: &retried) { client in
                        _ = try await client.putExternalEvent(
                            .with {
                                $0.wfRunID.id = id; $0.externalEventDefID.name = event; $0.guid = guid;
                                $0.content.str = "x"
                            })
                    }
                }
            }
        } catch {
            // What the servers said, to tell a takeover that never came from a crash.
            try? second.log.write(toFile: "/tmp/second.log", atomically: true, encoding: .utf8)
            print("failover test: the second's log: \(second.log.suffix(3_000))\nits output: \(second.announced)")
            throw error
        }
        try await second.waitUntilOwner(timeout: 30)
        #expect(second.log.contains("claimed partitions"), "\(second.log.suffix(2_000))")
        print(
            "failover test: \(runs) WfRuns, kill -9 of a server owning half the partitions, the other served them \(failover ?? -1) s after it (lease 2 s); \(retried) requests retried; \(Date().timeIntervalSince(started)) s"
        )
        #expect((failover ?? 99) < 10, "failover within 10 s")
        #expect(retried > 0)

        let client = try await LittleHorseClient.connect(config)
        defer { Task { await client.close() } }
        try await eventually("all \(runs) WfRuns COMPLETED on the new owner", timeout: 60) {
            for i in 0..<runs where try await client.getWfRun("wf-\(i)").status != .completed { return false }
            return true
        }
        for i in 0..<runs {
            let id = "wf-\(i)"
            let count = try await client.getVariable(
                .with {
                    $0.wfRunID.id = id; $0.name = "count"
                })
            #expect(count.value.int == 1, "the ping of \(id) was applied exactly once")
            #expect(try await client.listTaskRuns(id).results.count == 2, "no TaskRun lost or doubled in \(id)")
            #expect(try await client.listExternalEvents(id).results.count == 2, "each event stored once in \(id)")
        }

        // The killed server comes back and takes its share again, and the
        // other's SIGTERM hands it the rest at once.
        let third = try await ServerProcess.start(arguments: Self.member(store, ca: ca), port: ports[0])
        servers.add(third)
        try await third.waitUntil(owning: "owns 8 of 16 partitions", timeout: 30)
        try await second.waitUntil(owning: "owns 8 of 16 partitions", timeout: 30)
        let stopping = Date()
        second.stop()
        try await third.waitUntilOwner(timeout: 30)
        let handover = Date().timeIntervalSince(stopping)
        print("failover test: SIGTERM of a server, the other owned every partition \(handover) s after it")
        #expect(handover < 5, "a graceful stop hands over without waiting for the lease")
        let after = try await third.client()
        #expect(try await after.getWfRun("wf-0").status == .completed)
        await after.close()
    }

    /// Retries on UNAVAILABLE and lost connections, reconnecting to the first
    /// server that answers: what a client of a cluster does during a failover.
    static func retrying(
        _ config: LHConfig, retries: inout Int, _ body: (LittleHorseClient) async throws -> Void
    ) async throws {
        let deadline = Date().addingTimeInterval(60)
        var attempt = 0
        while true {
            if attempt > 0 { retries += 1 }
            attempt += 1
            do {
                let client = try await LittleHorseClient.connect(config)
                defer { Task { await client.close() } }
                return try await body(client)
            } catch let e as LHError where e.code == .unavailable || e.code == .connectionClosed {
                if Date() > deadline { throw e }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// Commits PostgreSQL logged (`lh_commit_log`) of members after they were marked dead.
    static func commitsAfterDeath(_ store: String) async throws -> String {
        try await psql(
            store,
            """
            SELECT count(*) FROM lh_commit_log c JOIN lh_members m ON m.id = c.member
            WHERE m.state = 'dead' AND c.at >= m.ended_at
            """)
    }

    /// A child's exit status, also when Foundation did not notice its end.
    static func exitStatus(_ process: Process) -> Int32 {
        // Foundation may have reaped it and not yet updated `isRunning`.
        let deadline = Date().addingTimeInterval(3)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if !process.isRunning { return process.terminationStatus }
        var status: Int32 = 0
        guard waitpid(process.processIdentifier, &status, WNOHANG) > 0 else { return -1 }
        return (status >> 8) & 0xff
    }

    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// psql's one-value answer to `sql`.
    static func psql(_ url: String, _ sql: String) async throws -> String {
        let r = try await runTool("/usr/bin/psql", [url, "-XAtc", sql])
        guard r.status == 0 else { throw LHError(.unknown, "psql \(sql): \(r.stderr)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A paused owner (SIGSTOP past its lease) is replaced; when it resumes
    /// it writes nothing more: it steps down (exit 3), and PostgreSQL's log
    /// of commits has none of it after it was marked dead.
    @Test func aPausedOwnerIsReplacedAndStepsDownWhenItResumes() async throws {
        guard let store = try Self.database() else { return }
        let ca = try ServerProcess.temporaryDirectory("lh-zombie-ca")
        let ports = [try ServerProcess.freePort(), try ServerProcess.freePort()]
        let endpoints = ports.map { "127.0.0.1:\($0)" }.joined(separator: ",")
        let servers = Current()
        let first = try await ServerProcess.start(arguments: Self.member(store, ca: ca), port: ports[0])
        servers.add(first)
        defer {
            kill(first.process.processIdentifier, SIGCONT)
            for s in servers.all { s.stop() }
        }
        _ = try await Self.psql(store, "INSERT INTO lh_settings VALUES ('commit_log', 'on')")
        let second = try await ServerProcess.start(arguments: Self.member(store, ca: ca), port: ports[1])
        servers.add(second)
        // Shares taken (while partitions move, their commands answer UNAVAILABLE).
        try await second.waitUntil(owning: "owns 8 of 16 partitions", timeout: 30)
        try await first.waitUntil(owning: "owns 8 of 16 partitions", timeout: 30)
        let worker = try await first.startWorker(
            "lh-test-worker", ["step-one:echo", "step-two:echo"], environment: ["LHC_API_HOST": endpoints],
            ready: "test worker ready")
        defer { worker.stop() }
        var config = first.config()
        config.apiHost = endpoints
        let setup = try await first.client()
        for e in ["go", "ping"] { _ = try await setup.putExternalEventDef(.with { $0.name = e }) }
        _ = try await setup.putWfSpec(DurabilityTests.durableWorkflow.compile())
        for i in 0..<5 {
            _ = try await setup.runWf(
                .with {
                    $0.wfSpecName = "durable"; $0.id = "before-\(i)"
                })
        }
        await setup.close()

        progress("zombie test: SIGSTOP of the owner")
        kill(first.process.processIdentifier, SIGSTOP)
        try await second.waitUntilOwner(timeout: 30)
        var retried = 0
        for i in 0..<5 {
            try await Self.retrying(config, retries: &retried) { client in
                do {
                    _ = try await client.runWf(
                        .with {
                            $0.wfSpecName = "durable"; $0.id = "after-\(i)"
                        })
                } catch let e as LHError where e.code == .alreadyExists {}
            }
        }
        progress("zombie test: SIGCONT of the old owner")
        kill(first.process.processIdentifier, SIGCONT)
        // A request straight to the old owner: refused (its commit is fenced)
        // or the connection closes as it steps down; never acknowledged.
        if let zombie = try? await first.client() {
            do {
                _ = try await zombie.runWf(
                    .with {
                        $0.wfSpecName = "durable"; $0.id = "to-the-zombie"
                    })
                Issue.record("the resumed old owner acknowledged a RunWf")
            } catch let e as LHError {
                #expect(e.code == .unavailable || e.code == .connectionClosed, "\(e)")
            }
            await zombie.close()
        }
        try await eventually("the old owner exited", timeout: 20) { hasExited(first.process) }
        #expect(Self.exitStatus(first.process) == 3, "exit status \(Self.exitStatus(first.process))")
        #expect(first.log.contains("stepped down"), "\(first.log.suffix(1_500))")
        let late = try await Self.commitsAfterDeath(store)
        #expect(late == "0", "commits of a member after it was marked dead")
        let commits = try await Self.psql(store, "SELECT count(DISTINCT member) FROM lh_commit_log")
        #expect(commits == "2", "both members committed (before and after the takeover)")
        let client = try await LittleHorseClient.connect(config)
        defer { Task { await client.close() } }
        for id in (0..<5).map({ "before-\($0)" }) + (0..<5).map({ "after-\($0)" }) {
            #expect(try await client.getWfRun(id).id.id == id)
        }
        await #expect(throws: LHError.self) { _ = try await client.getWfRun("to-the-zombie") }
    }

    /// PostgreSQL itself goes away while the server runs: requests get
    /// UNAVAILABLE, the server stays up, and once PostgreSQL is back it
    /// serves again with everything acknowledged before.
    @Test func postgresLostWhileRunningGivesUnavailableAndTheServerRecovers() async throws {
        guard Self.serverURL != nil else {
            print("SKIPPED \(#function): LH_TEST_POSTGRES_URL is not set (no PostgreSQL here)")
            return
        }
        let script = Self.repository.appendingPathComponent("scripts/postgres.sh").path
        let dir = try ServerProcess.temporaryDirectory("lh-own-pg")
        chmod(dir.path, 0o755)
        let started = try await runTool(script, ["start", dir.appendingPathComponent("pg").path])
        let url = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(started.status == 0, "\(started.stderr)")
        defer {
            _ = try? spawnDetached(script, ["stop", dir.appendingPathComponent("pg").path])
        }
        try await withServer(arguments: ["--store", url, "--lease-ttl", "2", "--partitions", "4"]) { server in
            let client = try await server.client()
            _ = try await client.putTaskDef(.with { $0.name = "never-run" })
            let spec = Workflow("waits") { wf in wf.execute("never-run") }
            _ = try await client.putWfSpec(spec.compile())
            _ = try await client.runWf(
                .with {
                    $0.wfSpecName = "waits"; $0.id = "kept"
                })

            let stop = try await runTool(script, ["stop", dir.appendingPathComponent("pg").path])
            #expect(stop.status == 0)
            do {
                _ = try await client.runWf(
                    .with {
                        $0.wfSpecName = "waits"; $0.id = "while-down"
                    })
                Issue.record("a RunWf was acknowledged while PostgreSQL was down")
            } catch let e as LHError {
                #expect(e.code == .unavailable, "\(e)")
            }
            try await Task.sleep(for: .seconds(3))  // past the lease
            #expect(!hasExited(server.process))

            let restart = try await runTool(script, ["restart", dir.appendingPathComponent("pg").path])
            #expect(restart.status == 0, "\(restart.stderr)")
            try await eventually("RunWf served again", timeout: 30) {
                do {
                    _ = try await client.runWf(
                        .with {
                            $0.wfSpecName = "waits"; $0.id = "after"
                        })
                    return true
                } catch let e as LHError where e.code == .unavailable || e.code == .alreadyExists {
                    return e.code == .alreadyExists
                }
            }
            #expect(try await client.getWfRun("kept").id.id == "kept")
            #expect(try await client.getWfRun("after").id.id == "after")
            // The failed commits' partitions were loaded again (a commit that
            // failed may have been written all the same).
            #expect(server.log.contains("reloading after a failed group commit"), "\(server.log.suffix(2_000))")
            await client.close()
        }
    }

    @Test func anUnreachableDatabaseIsOneLineAndExitTwo() async throws {
        let port = try ServerProcess.freePort()
        let r = try await runTool(
            ServerProcess.binDir.appendingPathComponent("lh-server").path,
            ["--store", "postgres://lh@127.0.0.1:\(port)/lh", "--listen", "127.0.0.1:0", "--http-listen", "off"],
            environment: [:])
        #expect(r.status == 2)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(r.stderr)")
        #expect(r.stderr.hasPrefix("lh-server: cannot reach PostgreSQL"), "\(r.stderr)")
        #expect(r.stderr.contains("127.0.0.1:\(port)/lh"), "\(r.stderr)")
    }
}
