import Foundation
import LHProto
import LHWire
import LHWireProto
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// A client that sends raw bytes (over TLS or not) and records what comes
/// back, to play a misbehaving peer.
final class RawClient: Sendable {
    let channel: Channel
    private let received: NIOLockedValueBox<ByteBuffer>

    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received: NIOLockedValueBox<ByteBuffer>
        init(_ received: NIOLockedValueBox<ByteBuffer>) { self.received = received }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            received.withLockedValue { $0.writeBuffer(&buffer) }
        }
        func errorCaught(context: ChannelHandlerContext, error: Error) {
            context.close(promise: nil)
        }
    }

    private init(channel: Channel, received: NIOLockedValueBox<ByteBuffer>) {
        self.channel = channel
        self.received = received
    }

    /// Connects to 127.0.0.1:port; with `caPath`, over TLS trusting that CA.
    static func connect(port: Int, caPath: String?) async throws -> RawClient {
        let received = NIOLockedValueBox(ByteBuffer())
        let context = try caPath.map { ca -> NIOSSLContext in
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
            return try NIOSSLContext(configuration: tls)
        }
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: context, serverHostname: nil))
                    }
                    try channel.pipeline.syncOperations.addHandler(Collector(received))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawClient(channel: channel, received: received)
    }

    func send(_ bytes: [UInt8]) async throws {
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        try await channel.writeAndFlush(buffer)
    }

    func send(_ envelope: Lhwire_Envelope) async throws {
        var buffer = ByteBuffer()
        try LHFrameEncoder().encode(data: envelope, out: &buffer)
        try await send(Array(buffer.readableBytesView))
    }

    static func hello(version: UInt32 = LHProtocol.version) -> Lhwire_Envelope {
        var hello = Lhwire_Hello()
        hello.protocolVersion = version
        hello.clientID = "raw"
        return Lhwire_Envelope(id: 1, .hello(hello))
    }

    /// Waits until the server closes the connection (or `timeout` passes)
    /// and returns whether it closed.
    func waitForClose(timeout: Duration = .seconds(10)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if !channel.isActive { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return !channel.isActive
    }

    /// The frames received so far.
    func frames() throws -> [Lhwire_Envelope] {
        var buffer = received.withLockedValue { $0 }
        var decoder = LHFrameDecoder()
        var frames: [Lhwire_Envelope] = []
        while let frame = try decoder.decode(buffer: &buffer) { frames.append(frame) }
        return frames
    }

    func close() async { try? await channel.close() }
}
