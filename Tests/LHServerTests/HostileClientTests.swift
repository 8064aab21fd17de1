import Foundation
import LHClient
import LHProto
import LHWire
import LHWireProto
import LHWorkflow
import NIOCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Slow and hostile clients against a real lh-server (issue 27, item 4):
/// connections that never finish their TLS handshake or trickle a byte a
/// second, more connections than the limit, a client that floods requests
/// and never reads its answers. The server closes or holds them with
/// bounded memory, and a well-behaved client is served meanwhile.
@Suite(.serialized, .timeLimit(.minutes(3))) struct HostileClientTests {
    /// Resident memory of a process, in MiB.
    static func rssMiB(_ pid: Int32) -> Double {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Double(line.split(separator: " ").dropFirst().first ?? "0").map { $0 / 1024 } ?? 0
    }

    /// A plain TCP connection to 127.0.0.1:port (no TLS: to the server, an
    /// unfinished handshake), non-blocking.
    static func rawSocket(_ port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        precondition(rc == 0, "connect: \(errno)")
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        return fd
    }

    /// Whether the server closed the socket (EOF or reset), without waiting.
    static func closedByServer(_ fd: Int32) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n > 0 { continue }  // an alert or error frame before the close
            return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)
        }
    }

    /// Latencies (ms) of `count` calls by a well-behaved client.
    static func served(_ server: ServerProcess, count: Int) async throws -> [Double] {
        let client = try await server.client()
        defer { Task { await client.close() } }
        var out: [Double] = []
        for i in 0..<count {
            let t = Date()
            _ = try await client.putExternalEventDef(.with { $0.name = "well-behaved-\(i % 3)" })
            out.append(Date().timeIntervalSince(t) * 1000)
        }
        return out.sorted()
    }

    @Test func unfinishedHandshakesSlowTricklesAndConnectionsPastTheLimitAreClosedWhileOthersAreServed()
        async throws
    {
        try await withServer(arguments: ["--max-connections", "300"]) { server in
            let pid = server.process.processIdentifier
            let before = Self.rssMiB(pid)
            // 200 connections that never send a byte, 50 that trickle one
            // byte a second (a TLS record that never completes).
            let silent = (0..<200).map { _ in Self.rawSocket(server.port) }
            let trickling = (0..<50).map { _ in Self.rawSocket(server.port) }
            defer { for fd in silent + trickling { close(fd) } }  // once: see below
            let opened = Date()
            try await Task.sleep(for: .milliseconds(300))
            // 100 more: past the limit of 300, some are closed at once.
            // (Each descriptor is closed exactly once: a second close could
            // hit a descriptor reused by this process's own connections.)
            // The server accepts from its backlog at its own pace (slower
            // when other tests share the machine): wait for the count to
            // settle.
            let extra = (0..<100).map { _ in Self.rawSocket(server.port) }
            var refusedSet = Set<Int32>()
            let settle = Date().addingTimeInterval(8)
            while refusedSet.count < 50 && Date() < settle {
                try await Task.sleep(for: .milliseconds(100))
                for fd in extra where !refusedSet.contains(fd) && Self.closedByServer(fd) { refusedSet.insert(fd) }
            }
            let refused = refusedSet.count
            #expect(
                refused >= 45, "connections past --max-connections 300 are closed as they arrive (\(refused) of 100)")
            let during = Self.rssMiB(pid)
            // The limit also holds for a well-behaved client: once the
            // extra ones are gone, it gets a slot.
            for fd in extra { close(fd) }
            try await Task.sleep(for: .milliseconds(200))
            let latencies = try await Self.served(server, count: 20)
            // Trickle until the server gives up on them.
            var open = Set(silent + trickling)
            var closedAfter: Double = 0
            while !open.isEmpty && Date().timeIntervalSince(opened) < 40 {
                for fd in trickling where open.contains(fd) {
                    var byte: UInt8 = 22
                    _ = send(fd, &byte, 1, Int32(MSG_NOSIGNAL))
                }
                try await Task.sleep(for: .seconds(1))
                for fd in open where Self.closedByServer(fd) { open.remove(fd) }
                closedAfter = Date().timeIntervalSince(opened)
            }
            #expect(open.isEmpty, "\(open.count) of 250 silent or trickling connections still open after 40 s")
            let after = Self.rssMiB(pid)
            print(
                "hostile clients: 250 unfinished handshakes (50 trickling a byte a second) all closed by the server within \(String(format: "%.1f", closedAfter)) s; \(refused) of 100 past --max-connections 300 refused at once; RSS \(String(format: "%.0f", before)) → \(String(format: "%.0f", during)) → \(String(format: "%.0f", after)) MiB; a well-behaved client meanwhile: p50 \(String(format: "%.1f", latencies[10])) ms, max \(String(format: "%.1f", latencies.last ?? 0)) ms"
            )
            #expect(during - before < 200, "250 idle connections hold \(during - before) MiB")
        }
    }

    /// The 2,000 connections are held by a helper process
    /// (scripts/idle-clients.py): with them in the test process, starting
    /// any other test's server or worker (Foundation's Process.run walks
    /// every open descriptor) crashed the test process.
    @Test func twoThousandIdleTLSConnectionsCostBoundedMemoryAndOthersAreServed() async throws {
        try await withServer { server in
            let pid = server.process.processIdentifier
            let before = Self.rssMiB(pid)
            let control = try ServerProcess.temporaryDirectory("idle-clients")
            let ca = try #require(server.caPath, "the server runs with TLS")
            func hex(_ envelope: Lhwire_Envelope) throws -> String {
                var buffer = ByteBuffer()
                try LHFrameEncoder().encode(data: envelope, out: &buffer)
                return buffer.readableBytesView.map { String(format: "%02x", $0) }.joined()
            }
            // 100 at a time; each says hello, and all opened so far send a
            // heartbeat every 4 s (the server closes a connection silent
            // for 15 s; opening takes longer when other tests share the
            // machine).
            let holder = try LiveProcess(
                "/usr/bin/env",
                [
                    "python3", PostgresFailoverTests.repository.appendingPathComponent("scripts/idle-clients.py").path,
                    "--port", "\(server.port)", "--ca", ca, "--count", "2000",
                    "--hello", try hex(RawClient.hello()), "--heartbeat",
                    try hex(Lhwire_Envelope(id: 0, .heartbeat(.init()))),
                    "--control", control.path,
                ], environment: ProcessInfo.processInfo.environment, absolutePath: true)
            try await withProcesses([holder]) {
                try await holder.waitFor("opened ", timeout: 150)
                let opened = holder.stdout.withLockedValue { $0 }
                let opening = opened.split(separator: " ").dropFirst(3).first.flatMap { Double($0) } ?? -1
                try await Task.sleep(for: .milliseconds(500))
                let during = Self.rssMiB(pid)
                FileManager.default.createFile(atPath: control.appendingPathComponent("count").path, contents: Data())
                try await holder.waitFor("\nopen ", timeout: 10)
                let counted = holder.stdout.withLockedValue { $0 }
                let open =
                    counted.split(separator: "\n").last { $0.hasPrefix("open ") }.flatMap {
                        Int($0.dropFirst(5))
                    } ?? -1
                #expect(open == 2_000, "\(open) of 2,000 idle connections still open when measured")
                let latencies = try await Self.served(server, count: 20)
                FileManager.default.createFile(atPath: control.appendingPathComponent("close").path, contents: Data())
                try await holder.waitFor("closed", timeout: 30)
                try await Task.sleep(for: .seconds(1))
                let after = Self.rssMiB(pid)
                let perConnection = (during - before) * 1024 / 2_000
                print(
                    "hostile clients: 2,000 idle TLS connections (hello sent, held by another process) opened in \(String(format: "%.1f", opening)) s, \(open) open when measured: server RSS \(String(format: "%.0f", before)) → \(String(format: "%.0f", during)) MiB (\(String(format: "%.0f", perConnection)) KiB each) → \(String(format: "%.0f", after)) MiB once closed; a well-behaved client meanwhile: p50 \(String(format: "%.1f", latencies[10])) ms, max \(String(format: "%.1f", latencies.last ?? 0)) ms"
                )
                #expect(perConnection < 256, "an idle TLS connection costs \(perConnection) KiB")
            }
        }
    }

    @Test func aClientThatFloodsRequestsAndNeverReadsIsHeldByBackpressure() async throws {
        try await withServer(arguments: ["--max-in-flight", "256"]) { server in
            let pid = server.process.processIdentifier
            let client = try await server.client()
            defer { Task { await client.close() } }
            _ = try await client.putWfSpec(
                Workflow("big-variable") { wf in
                    _ = wf.declare("big", .str, default: .with { $0.str = String(repeating: "x", count: 16 * 1024) })
                    wf.sleepSeconds(600)
                }.compile())
            _ = try await client.runWf(
                .with {
                    $0.wfSpecName = "big-variable"; $0.id = "big"
                })
            let before = Self.rssMiB(pid)

            // The flooder: hello, then GetVariable requests (16 KiB answers)
            // sent as fast as TCP takes them; it stops reading at once.
            let raw = try await RawClient.connect(port: server.port, caPath: server.caPath)
            defer { Task { await raw.close() } }
            try await raw.send(RawClient.hello())
            try await Task.sleep(for: .milliseconds(100))
            try await raw.channel.setOption(ChannelOptions.autoRead, value: false)
            var request = Littlehorse_VariableId()
            request.wfRunID.id = "big"
            request.threadRunNumber = 0
            request.name = "big"
            var batch = ByteBuffer()
            for i in 0..<1_000 {
                try LHFrameEncoder().encode(
                    data: Lhwire_Envelope(id: UInt64(10 + i), .getVariable(request)), out: &batch)
            }
            let bytes = Array(batch.readableBytesView)
            let flood = Task {
                var sent = 0
                // 100,000 requests: 1.6 GB of answers if all were kept.
                for _ in 0..<100 {
                    try await raw.send(bytes)
                    sent += 1_000
                }
                return sent
            }
            try await Task.sleep(for: .seconds(3))
            let during = Self.rssMiB(pid)
            let latencies = try await Self.served(server, count: 20)
            try await Task.sleep(for: .seconds(2))
            let later = Self.rssMiB(pid)
            flood.cancel()
            await raw.close()
            try await Task.sleep(for: .milliseconds(500))
            let after = Self.rssMiB(pid)
            let again = try await Self.served(server, count: 5)
            print(
                "hostile clients: a client flooding 16 KiB-answer requests and never reading: server RSS \(String(format: "%.0f", before)) → \(String(format: "%.0f", during)) (3 s) → \(String(format: "%.0f", later)) (5 s) → \(String(format: "%.0f", after)) MiB after it left; a well-behaved client meanwhile: p50 \(String(format: "%.1f", latencies[10])) ms, max \(String(format: "%.1f", latencies.last ?? 0)) ms"
            )
            #expect(later - before < 150, "the flooder holds \(later - before) MiB of the server's memory")
            #expect(later - during < 50, "memory stops growing while the flooder waits")
            #expect(again.count == 5)
        }
    }
}
