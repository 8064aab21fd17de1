import Foundation
import LHClient
import LHWire
import NIOConcurrencyHelpers
import Synchronization

/// A real `lh-server` process on 127.0.0.1, a free port and a temporary data
/// directory. Tests use ``withServer(_:body:)``, which stops it on every
/// path, failures included.
final class ServerProcess: @unchecked Sendable {
    let process: Process
    let port: Int
    let caPath: String?
    let dataDir: URL
    private let output: NIOLockedValueBox<String>
    /// What the server printed on stdout (its start-up lines).
    private let printed: NIOLockedValueBox<String>

    /// Directory of the built executables (next to the test bundle).
    static var binDir: URL {
        if let dir = ProcessInfo.processInfo.environment["LH_BIN_DIR"] { return URL(fileURLWithPath: dir) }
        var url = Bundle.main.bundleURL
        if url.pathExtension == "xctest" { url.deleteLastPathComponent() }
        return url
    }

    static func temporaryDirectory(_ prefix: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent(
            "\(prefix)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    private init(
        process: Process, port: Int, caPath: String?, dataDir: URL, output: NIOLockedValueBox<String>,
        printed: NIOLockedValueBox<String>
    ) {
        self.printed = printed
        self.process = process
        self.port = port
        self.caPath = caPath
        self.dataDir = dataDir
        self.output = output
    }

    /// Starts the server and waits (up to `listenTimeout` seconds) for its
    /// "listening" line (a cluster's standby listens at once: see
    /// ``waitUntilOwner(timeout:)``).
    static func start(arguments: [String] = [], dataDir: URL? = nil, port: Int = 0, listenTimeout: Double = 60)
        async throws -> ServerProcess
    {
        let dir = try dataDir ?? temporaryDirectory("lh-test-data")
        let process = Process()
        process.executableURL = binDir.appendingPathComponent("lh-server")
        process.arguments = ["--data-dir", dir.path, "--listen", "127.0.0.1:\(port)"] + arguments
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        let output = NIOLockedValueBox("")
        let errors = NIOLockedValueBox("")
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if !data.isEmpty { output.withLockedValue { $0 += String(decoding: data, as: UTF8.self) } }
        }
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if !data.isEmpty { errors.withLockedValue { $0 += String(decoding: data, as: UTF8.self) } }
        }
        try spawn(process)
        let deadline = Date().addingTimeInterval(listenTimeout)
        while Date() < deadline {
            let text = output.withLockedValue { $0 }
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("lh-server listening on") }) {
                let words = line.split(separator: " ")
                let address = words[3]
                let port = Int(address.split(separator: ":").last!)!
                var ca: String?
                if let range = line.range(of: "trust the CA at ") {
                    ca = String(line[range.upperBound...].split(separator: " ").first!)
                }
                // The dashboard's line comes in the same write, when there is one.
                try await Task.sleep(for: .milliseconds(50))
                return ServerProcess(
                    process: process, port: port, caPath: ca, dataDir: dir, output: errors, printed: output)
            }
            if !process.isRunning {
                // Let the pipe's handler take in what it wrote last.
                try await Task.sleep(for: .milliseconds(200))
                throw LHError(
                    .unavailable,
                    "lh-server exited with \(process.terminationStatus) before listening: \(errors.withLockedValue { $0 })"
                )
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        process.terminate()
        throw LHError(
            .unavailable,
            "lh-server did not announce its port within \(Int(listenTimeout)) s: \(errors.withLockedValue { $0 })")
    }

    /// kill -9: no shutdown of any kind.
    func kill9() { killProcess(process) }

    /// A port that was free a moment ago (for a server restarted on the same port).
    /// A port to listen on later (a server restarted on it, an address
    /// known before the server starts). Chosen below the kernel's range of
    /// ephemeral ports (`ip_local_port_range`): a port from that range
    /// could be taken meanwhile by any outbound connection of the suite's
    /// processes (thousands, with the hostile-client tests), and the
    /// server would then fail with "address in use". Never the same port
    /// twice in one test process; bound once to check that it is free.
    static func freePort() throws -> Int {
        let range = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))?
            .split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { Int($0) }
        let low = 10_000
        let high = (range?.first ?? 32_768) - 1
        for _ in 0..<200 where high > low {
            let port = Int.random(in: low...high)
            let fresh = handedOut.withLock { $0.insert(port).inserted }
            if fresh, bindable(port) { return port }
        }
        return try kernelChosenPort()
    }

    private static let handedOut = Mutex<Set<Int>>([])

    private static func bindable(_ port: Int) -> Bool { bound(port) != nil }

    private static func kernelChosenPort() throws -> Int {
        guard let port = bound(0) else { throw LHError(.unavailable, "no free port on 127.0.0.1") }
        return port
    }

    /// Binds 127.0.0.1:`port` (0: the kernel chooses) and closes it again;
    /// the port bound, or nil when it was taken.
    private static func bound(_ port: Int) -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        guard ok == 0 else { return nil }
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// The start-up lines the server printed.
    var announced: String { printed.withLockedValue { $0 } }

    /// A member of a cluster owns every partition now (its last word on
    /// ownership says so: at start-up alone, or when it took over the
    /// others' shares).
    var ownsPartitions: Bool { ownership.contains("lh-server owns every partition") }

    /// The last line a member of a cluster printed about the partitions it
    /// owns ("lh-server owns 8 of 16 partitions (member …)"); empty before.
    var ownership: String {
        announced.split(separator: "\n").last { $0.hasPrefix("lh-server owns") }.map(String.init) ?? ""
    }

    /// Waits until this member's last word on ownership contains `fragment`
    /// ("owns 8 of 16 partitions").
    func waitUntil(owning fragment: String, timeout: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !ownership.contains(fragment) {
            if hasExited(process) {
                throw LHError(.unavailable, "lh-server exited before it said '\(fragment)': \(log.suffix(1_000))")
            }
            if Date() > deadline {
                throw LHError(
                    .unavailable, "lh-server did not say '\(fragment)' within \(Int(timeout)) s: \(announced)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Waits until this member owns every partition; fails after `timeout`
    /// seconds or when the server exits first.
    func waitUntilOwner(timeout: Double = 60) async throws {
        try await waitUntil(owning: "owns every partition", timeout: timeout)
    }

    /// The dashboard's address as printed at start-up (ends with "/").
    var dashboardURL: String? {
        guard let line = announced.split(separator: "\n").first(where: { $0.contains("dashboard at ") }),
            let range = line.range(of: "dashboard at ")
        else { return nil }
        return line[range.upperBound...].split(separator: " ").first.map(String.init)
    }

    /// What the server logged so far.
    var log: String { output.withLockedValue { $0 } }

    /// SIGTERM, then SIGKILL after 10 s, waiting without blocking a thread
    /// of the test process (in-process servers of other tests need them).
    func terminate() async { await terminateWithoutBlocking(process, grace: 10) }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    func stop() { stopProcess(process, grace: 10) }

    /// Client settings for this server.
    func config(caPath: String? = nil) -> LHConfig {
        var config = LHConfig(clientId: "test-client")
        config.apiHost = "127.0.0.1"
        config.apiPort = port
        config.caCertPath = caPath ?? self.caPath
        return config
    }

    func client() async throws -> LittleHorseClient {
        try await LittleHorseClient.connect(config())
    }
}

/// Runs `body` with a fresh server, stopping it however `body` ends.
func withServer<T>(
    arguments: [String] = [], dataDir: URL? = nil, _ body: (ServerProcess) async throws -> T
) async throws -> T {
    let server = try await ServerProcess.start(arguments: arguments, dataDir: dataDir)
    do {
        let result = try await body(server)
        await server.terminate()
        return result
    } catch {
        await server.terminate()
        throw error
    }
}
