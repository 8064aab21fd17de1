import LHProto
import LHWireProto
import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import LHWire

/// The hello, heartbeat and protocol-error handlers on an EmbeddedChannel:
/// envelopes in, envelopes out, time moved by hand.
@Suite struct ProtocolHandlerTests {
    static let logger = Logger(label: "test")

    static func hello(id: UInt64 = 1, version: UInt32 = LHProtocol.version) -> Lhwire_Envelope {
        Lhwire_Envelope(
            id: id,
            .hello(
                .with {
                    $0.protocolVersion = version; $0.clientID = "c"; $0.role = .worker
                }))
    }

    func helloChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(LHServerHelloHandler(welcome: .with { $0.serverID = "s" }))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    /// The error frame the handler wrote, and whether it closed the channel.
    func refusal(_ channel: EmbeddedChannel) throws -> (LHError?, closed: Bool) {
        let frame = try channel.readOutbound(as: Lhwire_Envelope.self)
        guard case .error(let e)? = frame?.kind else { return (nil, !channel.isActive) }
        return (LHError(wire: e), !channel.isActive)
    }

    @Test func aHelloOfThisVersionIsWelcomedUnderItsIdAndPassedOn() throws {
        let channel = try helloChannel()
        try channel.writeInbound(Self.hello(id: 42))
        let welcome = try channel.readOutbound(as: Lhwire_Envelope.self)
        #expect(welcome?.id == 42)
        guard case .welcome(let w)? = welcome?.kind else {
            Issue.record("no welcome: \(String(describing: welcome))"); return
        }
        #expect(w.serverID == "s")
        guard case .hello(let h)? = try channel.readInbound(as: Lhwire_Envelope.self)?.kind else {
            Issue.record("hello not passed on"); return
        }
        #expect(h.clientID == "c" && h.role == .worker)
        // Later frames pass through untouched.
        try channel.writeInbound(Lhwire_Envelope(id: 43, .getServerVersion(.init())))
        #expect(try channel.readInbound(as: Lhwire_Envelope.self)?.id == 43)
        #expect(channel.isActive)
    }

    @Test func aRequestBeforeTheHelloIsRefusedAndTheConnectionClosed() throws {
        let channel = try helloChannel()
        try channel.writeInbound(Lhwire_Envelope(id: 5, .getServerVersion(.init())))
        let (error, closed) = try refusal(channel)
        #expect(error?.code == .helloRequired)
        #expect(closed)
        #expect(try channel.readInbound(as: Lhwire_Envelope.self) == nil)
    }

    @Test func aHelloOfAnotherVersionIsRefusedNamingBothVersions() throws {
        let channel = try helloChannel()
        try channel.writeInbound(Self.hello(version: LHProtocol.version + 7))
        let (error, closed) = try refusal(channel)
        #expect(error?.code == .protocolVersionMismatch)
        #expect(
            error?.message.contains("\(LHProtocol.version + 7)") == true
                && error?.message.contains("\(LHProtocol.version)") == true)
        #expect(closed)
    }

    @Test func aSecondHelloIsRefused() throws {
        let channel = try helloChannel()
        try channel.writeInbound(Self.hello())
        _ = try channel.readOutbound(as: Lhwire_Envelope.self)
        _ = try channel.readInbound(as: Lhwire_Envelope.self)
        try channel.writeInbound(Self.hello(id: 2))
        let (error, closed) = try refusal(channel)
        #expect(error?.code == .invalidArgument && error?.message.contains("twice") == true)
        #expect(closed)
    }

    /// The idle events come from NIO's IdleStateHandler (which reads the
    /// real clock); here they are fired by hand.
    @Test func aQuietConnectionGetsHeartbeatsAndASilentPeerIsDisconnected() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(LHHeartbeatHandler(deadAfter: .seconds(15), logger: Self.logger))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.write)
        guard case .heartbeat(let beat)? = try channel.readOutbound(as: Lhwire_Envelope.self)?.kind else {
            Issue.record("no heartbeat when the connection went quiet")
            return
        }
        #expect(beat.sentAtUnixMicros > 0)
        // The peer's heartbeats are consumed here; its other frames pass on.
        try channel.writeInbound(Lhwire_Envelope(id: 0, .heartbeat(.init())))
        #expect(try channel.readInbound(as: Lhwire_Envelope.self) == nil)
        try channel.writeInbound(Lhwire_Envelope(id: 9, .getServerVersion(.init())))
        #expect(try channel.readInbound(as: Lhwire_Envelope.self)?.id == 9)
        // Other events pass on; a silent peer (read idle) is disconnected.
        channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.all)
        #expect(channel.isActive)
        channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.read)
        #expect(!channel.isActive)
    }

    @Test func theHeartbeatHandlersAreAnIdleStateHandlerOfThreeIntervalsThenTheHeartbeatHandler() {
        let handlers = LHHeartbeatHandler.handlers(interval: .seconds(5), logger: Self.logger)
        #expect(handlers.count == 2)
        #expect((handlers[0] as? IdleStateHandler)?.readTimeout == .seconds(15))
        #expect((handlers[0] as? IdleStateHandler)?.writeTimeout == .seconds(5))
        #expect(handlers[1] is LHHeartbeatHandler)
    }

    @Test func aProtocolErrorIsAnsweredWithAnErrorFrameThenTheConnectionCloses() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(LHProtocolErrorHandler(logger: Self.logger))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.pipeline.fireErrorCaught(LHError(.frameTooLarge, "frame of 9000 bytes is over the maximum of 4096"))
        let (error, closed) = try refusal(channel)
        #expect(error?.code == .frameTooLarge && error?.message.contains("4096") == true)
        #expect(closed)
        #expect(throws: LHError.self) { try channel.throwIfErrorCaught() }
    }

    @Test func anyOtherErrorClosesTheConnectionWithoutAFrame() throws {
        struct Broken: Error {}
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(LHProtocolErrorHandler(logger: Self.logger))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.pipeline.fireErrorCaught(Broken())
        #expect(try channel.readOutbound(as: Lhwire_Envelope.self) == nil)
        #expect(!channel.isActive)
        #expect(throws: Broken.self) { try channel.throwIfErrorCaught() }
    }
}
