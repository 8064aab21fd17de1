import Foundation
import LHServer
import LHWire
import LHWireProto
import Logging
import ServiceLifecycle
import SwiftProtobuf

#if canImport(Glibc)
    import Glibc
#endif

/// The whole request path of a real server in this process (our frame
/// protocol, plaintext, on 127.0.0.1, a store in a temporary directory):
/// each input is one connection.
///
/// Input: the first byte picks the role of the hello (even: ROLE_ADMIN,
/// odd: ROLE_WORKER) and whether the rest is sent raw (bit 1) or as
/// records (`u16 big-endian length, bytes`) each parsed as an envelope and
/// sent as one well-formed frame; a record that does not parse is sent raw
/// as its own frame. A last request (GetServerVersion, id `sentinel`) must
/// be answered, unless the server closed the connection for a protocol
/// error first: a server that stops answering is a finding (abort).
final class RequestTarget: @unchecked Sendable {
    static let shared = RequestTarget()
    static let sentinel: UInt64 = 0xFEED_F00D

    let port: Int
    let dir: URL
    var inputs = 0

    private init() {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("lh-fuzz-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var logger = Logger(label: "lh-fuzz.server")
        logger.logLevel =
            ProcessInfo.processInfo.environment["LH_FUZZ_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
        let box = PortBox()
        let done = DispatchSemaphore(value: 0)
        let directory = dir
        Task.detached {
            do {
                let server = try await LHFuzzServer.start(dataDirectory: directory, logger: logger)
                box.port = server
            } catch {
                box.error = "\(error)"
            }
            done.signal()
        }
        done.wait()
        guard let port = box.port else { fatalError("lh-fuzz: the server did not start: \(box.error ?? "?")") }
        self.port = port
        atexit {
            try? FileManager.default.removeItem(
                at: FileManager.default.temporaryDirectory.appendingPathComponent("lh-fuzz-\(getpid())"))
        }
    }

    final class PortBox: @unchecked Sendable {
        var port: Int?
        var error: String?
    }

    func run(_ bytes: UnsafeRawBufferPointer) {
        inputs += 1
        let mode = bytes.first ?? 0
        var out: [UInt8] = []
        var hello = Lhwire_Hello()
        hello.protocolVersion = LHProtocol.version
        hello.clientID = "fuzz-\(inputs % 4)"
        hello.role = mode & 1 == 1 ? .worker : .admin
        Self.frame(Lhwire_Envelope(id: 1, .hello(hello)), into: &out)
        let rest = UnsafeRawBufferPointer(rebasing: bytes.dropFirst())
        if mode & 2 == 2 {
            out += rest
        } else {
            var i = 0
            while i + 2 <= rest.count {
                let n = Int(rest[i]) << 8 | Int(rest[i + 1])
                let body = Array(rest[(i + 2)..<min(rest.count, i + 2 + n)])
                i += 2 + n
                if let envelope = try? Lhwire_Envelope(serializedBytes: body), envelope.id != Self.sentinel {
                    Self.frame(envelope, into: &out)
                } else {
                    Self.frameRaw(body, into: &out)
                }
            }
        }
        Self.frame(Lhwire_Envelope(id: Self.sentinel, .getServerVersion(.init())), into: &out)
        // Raw bytes may end inside a frame (the sentinel then reads as its
        // body): the write side is closed so that the server sees the end.
        converse(out, halfClose: mode & 2 == 2)
        // Every 64 inputs: a fresh, well-behaved client is still served.
        if inputs % 64 == 0 {
            var probe: [UInt8] = []
            var h = Lhwire_Hello()
            h.protocolVersion = LHProtocol.version
            h.clientID = "probe"
            Self.frame(Lhwire_Envelope(id: 1, .hello(h)), into: &probe)
            Self.frame(Lhwire_Envelope(id: Self.sentinel, .getServerVersion(.init())), into: &probe)
            guard converse(probe) == .answered else {
                fatalError("lh-fuzz: the server no longer answers a well-behaved client")
            }
        }
    }

    static func frame(_ envelope: Lhwire_Envelope, into out: inout [UInt8]) {
        frameRaw((try? envelope.serializedBytes()) ?? [], into: &out)
    }

    static func frameRaw(_ body: [UInt8], into out: inout [UInt8]) {
        let n = UInt32(body.count)
        out += [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)]
        out += body
    }

    enum Outcome { case answered, closed }

    /// Sends `bytes` on a new connection and reads frames until the
    /// sentinel's answer or the server's close; aborts after 10 s of
    /// neither.
    @discardableResult
    func converse(_ bytes: [UInt8], halfClose: Bool = false) -> Outcome {
        // libFuzzer's timers interrupt system calls (EINTR): connect again.
        var fd: Int32 = -1
        for _ in 0..<100 {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            precondition(fd >= 0, "socket: \(errno)")
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            if connected == 0 { break }
            let error = errno
            close(fd)
            fd = -1
            precondition(error == EINTR, "lh-fuzz: cannot connect to the server: errno \(error)")
        }
        precondition(fd >= 0, "lh-fuzz: connect interrupted 100 times")
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return .closed }  // closed for a protocol error while we wrote
            sent += n
        }
        if halfClose { shutdown(fd, Int32(SHUT_WR)) }
        let deadline = Date().addingTimeInterval(10)
        var inbox: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            // Complete frames in the inbox: is the sentinel's answer there?
            while inbox.count >= 4 {
                let n = Int(inbox[0]) << 24 | Int(inbox[1]) << 16 | Int(inbox[2]) << 8 | Int(inbox[3])
                guard inbox.count >= 4 + n else { break }
                if let reply = try? Lhwire_Envelope(serializedBytes: inbox[4..<(4 + n)]), reply.id == Self.sentinel {
                    return .answered
                }
                inbox.removeFirst(4 + n)
            }
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = Int32(max(0, deadline.timeIntervalSinceNow * 1000))
            let polled = left == 0 ? 0 : poll(&ready, 1, left)
            if polled == 0 { fatalError("lh-fuzz: no answer and no close within 10 s (a hang)") }
            if polled < 0 { continue }  // EINTR
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return .closed }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return .closed  // reset
            }
            inbox += chunk[0..<n]
        }
    }
}

/// A real server for the requests target: the store, the group commit,
/// the dispatcher and the listener as lh-server runs them (plaintext: TLS
/// is NIOSSL's, fuzzed by its own project).
enum LHFuzzServer {
    static func start(dataDirectory: URL, logger: Logger) async throws -> Int {
        let core = try await LHCore(dataDirectory: dataDirectory, sync: .normal, claimGrace: 0, logger: logger)
        let configuration = LHServerConfiguration(
            host: "127.0.0.1", port: 0, dataDirectory: dataDirectory, tls: .plaintext, maxFrameBytes: 256 * 1024)
        let server = WireServer(
            configuration: configuration, router: LHAdminRouter(core: core), logger: logger, metrics: core.metrics)
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: core), .init(service: server)], logger: logger))
        Task.detached { try? await group.run() }
        return try await server.boundPort()
    }
}
