import Foundation
import LHClient
import LHProto
import LHWorkflow
import Testing

/// A full disk under a real lh-server (issue 27, item 4): its data
/// directory on a small tmpfs, filled by another file. New work is refused
/// with an error that says so, reads are served, nothing acknowledged is
/// lost, and work goes on once space returns. Needs root (mount); skipped
/// with a printed reason otherwise.
@Suite(.serialized, .timeLimit(.minutes(3))) struct DiskFullTests {
    static func run(_ command: String, _ arguments: [String]) async throws -> (status: Int32, stderr: String) {
        let r = try await runTool(command, arguments)
        return (r.status, r.stderr)
    }

    @Test func aFullDiskRefusesNewWorkKeepsServingReadsAndGoesOnWhenSpaceReturns() async throws {
        let mountPoint = try ServerProcess.temporaryDirectory("lh-disk")
        let mounted = try await Self.run("/bin/mount", ["-t", "tmpfs", "-o", "size=24m", "tmpfs", mountPoint.path])
        guard mounted.status == 0 else {
            print(
                "SKIPPED disk-full test: cannot mount a tmpfs (\(mounted.stderr.trimmingCharacters(in: .whitespacesAndNewlines))); it needs root"
            )
            return
        }
        var server: ServerProcess?
        defer {
            server?.stop()
            _ = try? Process.run(URL(fileURLWithPath: "/bin/umount"), arguments: ["-l", mountPoint.path])
        }
        let dir = mountPoint.appendingPathComponent("data")
        let first = try await ServerProcess.start(dataDir: dir)
        server = first
        let port = first.port
        var acknowledged: [String] = []
        var client = try await first.client()
        _ = try await client.putExternalEventDef(.with { $0.name = "go" })
        _ = try await client.putWfSpec(
            Workflow("waits") { wf in
                _ = wf.declare("note", .str)
                wf.waitForEvent("go")
            }.compile())
        let note = String(repeating: "n", count: 4096)
        func runWf(_ id: String) async throws {
            _ = try await client.runWf(
                .with {
                    $0.wfSpecName = "waits"; $0.id = id; $0.variables["note"] = .with { $0.str = note }
                })
            acknowledged.append(id)
        }
        for i in 0..<20 { try await runWf("before-\(i)") }

        // Fill the disk with another file.
        let filler = mountPoint.appendingPathComponent("filler")
        let fill = try await Self.run("/bin/dd", ["if=/dev/zero", "of=\(filler.path)", "bs=64k"])
        #expect(fill.stderr.contains("No space left"), "dd filled the tmpfs: \(fill.stderr)")

        // New work is refused, with an error that names the cause.
        var refusals: [LHError] = []
        for i in 0..<200 {
            do {
                try await runWf("full-\(i)")
            } catch let e as LHError {
                refusals.append(e)
                if refusals.count >= 5 { break }
            }
        }
        let first5 = refusals.map { "\($0)" }
        print("disk full: \(acknowledged.count) WfRuns acknowledged in all; refusals: \(first5.prefix(2))")
        #expect(!refusals.isEmpty, "the disk filled up and RunWf was refused")
        #expect(first5.contains { $0.lowercased().contains("full") || $0.lowercased().contains("space") }, "\(first5)")
        #expect(first.process.isRunning, "the server stays up")
        // Reads are served.
        #expect(try await client.getWfRun("before-0").status == .running)

        // Space returns: new work goes on.
        try FileManager.default.removeItem(at: filler)
        var recovered = false
        let deadline = Date().addingTimeInterval(30)
        while !recovered && Date() < deadline {
            do {
                try await runWf("after-\(acknowledged.count)")
                recovered = true
            } catch let e as LHError where e.code == .unavailable || e.code == .connectionClosed {
                await client.close()
                try await Task.sleep(for: .milliseconds(200))
                client = try await first.client()
            } catch {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        #expect(recovered, "RunWf succeeds once space returns")
        await client.close()

        // Nothing acknowledged is lost, across a kill -9 too.
        first.kill9()
        let second = try await ServerProcess.start(dataDir: dir, port: port)
        server = second
        let check = try await second.client()
        defer { Task { await check.close() } }
        var missing: [String] = []
        for id in acknowledged {
            do { _ = try await check.getWfRun(id) } catch { missing.append(id) }
        }
        #expect(missing.isEmpty, "acknowledged and lost: \(missing)")
        print("disk full: after a kill -9, all \(acknowledged.count) acknowledged WfRuns are there")
    }
}
