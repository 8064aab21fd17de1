import LHProto
import LHWireProto
import NIOCore
import NIOEmbedded
import Testing

@testable import LHWire

/// The frame codec on an EmbeddedChannel: no sockets, no clocks.
@Suite struct FrameCodecTests {
    func channel(max: Int = 64) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LHFrameDecoder(maxFrameBytes: max)))
        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(LHFrameEncoder()))
        return channel
    }

    func frame(_ envelope: Lhwire_Envelope) throws -> ByteBuffer {
        var buffer = ByteBuffer()
        try LHFrameEncoder().encode(data: envelope, out: &buffer)
        return buffer
    }

    @Test func encodesAFourByteBigEndianLengthThenTheMessage() throws {
        let envelope = Lhwire_Envelope(id: 7, .getServerVersion(.init()))
        var buffer = try frame(envelope)
        let body: [UInt8] = try envelope.serializedBytes()
        #expect(buffer.readInteger(endianness: .big, as: UInt32.self) == UInt32(body.count))
        #expect(buffer.readBytes(length: buffer.readableBytes) == body)
    }

    @Test func decodesFramesSplitAcrossReadsAndSeveralInOneRead() throws {
        let channel = try channel(max: 1024)
        var all = ByteBuffer()
        for id in 1...3 {
            var one = try frame(Lhwire_Envelope(id: UInt64(id), .getServerVersion(.init())))
            all.writeBuffer(&one)
        }
        // First one byte at a time, then the rest at once.
        let first = all.readSlice(length: 5)!
        for i in 0..<first.readableBytes {
            try channel.writeInbound(first.getSlice(at: first.readerIndex + i, length: 1)!)
        }
        try channel.writeInbound(all)
        var ids: [UInt64] = []
        while let envelope = try channel.readInbound(as: Lhwire_Envelope.self) { ids.append(envelope.id) }
        #expect(ids == [1, 2, 3])
        _ = try channel.finish()
    }

    @Test func frameLongerThanTheMaximumFailsBeforeItsBodyArrives() throws {
        let channel = try channel(max: 64)
        var header = ByteBuffer()
        header.writeInteger(UInt32(65), endianness: .big)
        let error = #expect(throws: LHError.self) { try channel.writeInbound(header) }
        #expect(error?.code == .frameTooLarge)
        #expect(error?.message.contains("maximum frame size of 64 bytes") == true)
        _ = try? channel.finish()
    }

    /// A TLS record read as a frame (one side has TLS on, the other off)
    /// is named as that, not as a frame of hundreds of megabytes.
    @Test func aTLSRecordWhereAFrameWasExpectedIsNamedAsTLS() throws {
        for header: [UInt8] in [[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46], [0x16, 0x03, 0x01, 0x02, 0x00, 0x01]] {
            let channel = try channel()
            let error = #expect(throws: LHError.self) { try channel.writeInbound(ByteBuffer(bytes: header)) }
            #expect(error?.code == .malformedFrame)
            #expect(
                error?.message.contains("received a TLS record where a frame was expected") == true,
                "\(String(describing: error))")
            _ = try? channel.finish()
        }
    }

    @Test func bytesThatAreNotAnEnvelopeAreAMalformedFrame() throws {
        let channel = try channel()
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(3), endianness: .big)
        buffer.writeBytes([0xFF, 0xFF, 0xFF])
        let error = #expect(throws: LHError.self) { try channel.writeInbound(buffer) }
        #expect(error?.code == .malformedFrame)
        _ = try? channel.finish()
    }

    @Test func lengthPrefixWithNoBodyThenEOFIsAMalformedFrame() throws {
        var decoder = LHFrameDecoder(maxFrameBytes: 64)
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(10), endianness: .big)
        #expect(try decoder.decode(buffer: &buffer) == nil)
        let error = #expect(throws: LHError.self) { _ = try decoder.decodeLast(buffer: &buffer, seenEOF: true) }
        #expect(error?.code == .malformedFrame)
        #expect(error?.message.contains("incomplete frame") == true)
    }

    @Test func helloOfAnotherVersionIsRefusedNamingBothVersions() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(LHServerHelloHandler(welcome: .init()))
        var hello = Lhwire_Hello()
        hello.protocolVersion = 99
        try channel.writeInbound(Lhwire_Envelope(id: 1, .hello(hello)))
        let reply = try #require(try channel.readOutbound(as: Lhwire_Envelope.self))
        guard case .error(let error) = reply.kind else {
            Issue.record("expected an error, got \(reply)")
            return
        }
        #expect(reply.id == 1)
        #expect(error.code == .protocolVersionMismatch)
        #expect(error.message.contains("99") && error.message.contains("version \(LHProtocol.version)"))
        #expect(try channel.readInbound(as: Lhwire_Envelope.self) == nil)
    }

    @Test func requestBeforeHelloIsRefused() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(LHServerHelloHandler(welcome: .init()))
        try channel.writeInbound(Lhwire_Envelope(id: 3, .getServerVersion(.init())))
        let reply = try #require(try channel.readOutbound(as: Lhwire_Envelope.self))
        #expect(
            reply.kind
                == .error(LHError(.helloRequired, "the first frame must be a hello, got get_server_version").wire))
    }

    @Test func helloIsWelcomedWithTheSameIdAndPassedOn() throws {
        let channel = EmbeddedChannel()
        var welcome = Lhwire_Welcome()
        welcome.serverID = "s1"
        try channel.pipeline.syncOperations.addHandler(LHServerHelloHandler(welcome: welcome))
        var hello = Lhwire_Hello()
        hello.protocolVersion = LHProtocol.version
        hello.clientID = "c1"
        try channel.writeInbound(Lhwire_Envelope(id: 5, .hello(hello)))
        let reply = try #require(try channel.readOutbound(as: Lhwire_Envelope.self))
        #expect(reply == Lhwire_Envelope(id: 5, .welcome(welcome)))
        let passed = try #require(try channel.readInbound(as: Lhwire_Envelope.self))
        #expect(passed.hello.clientID == "c1")
    }
}

/// Heartbeats: sent when the connection is quiet, consumed on arrival, and a
/// silent peer is disconnected.
@Suite struct HeartbeatTests {
    func channel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(
            LHHeartbeatHandler(deadAfter: .seconds(15), logger: .init(label: "test")))
        return channel
    }

    @Test func quietConnectionSendsAHeartbeat() throws {
        let channel = try channel()
        channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.write)
        let sent = try #require(try channel.readOutbound(as: Lhwire_Envelope.self))
        guard case .heartbeat = sent.kind else { Issue.record("expected a heartbeat, got \(sent)"); return }
        #expect(sent.id == 0)
    }

    @Test func inboundHeartbeatIsConsumedAndOtherFramesPassOn() throws {
        let channel = try channel()
        try channel.writeInbound(Lhwire_Envelope(id: 0, .heartbeat(.init())))
        #expect(try channel.readInbound(as: Lhwire_Envelope.self) == nil)
        try channel.writeInbound(Lhwire_Envelope(id: 9, .getServerVersion(.init())))
        #expect(try channel.readInbound(as: Lhwire_Envelope.self)?.id == 9)
    }

    @Test func silentPeerIsDisconnected() throws {
        let channel = try channel()
        try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        #expect(channel.isActive)
        channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.read)
        #expect(!channel.isActive)
    }

    /// A client's requests in flight when its server went silent fail with
    /// an error saying so (not a bare "closed": a CI run once met one).
    @Test func aClientsRequestsFailNamingTheSilenceWhenItsServerGoesSilent() throws {
        let channel = try channel()
        let stats = LHClientRequestHandler.Stats()
        try channel.pipeline.syncOperations.addHandler(
            LHClientRequestHandler(
                endpoint: "127.0.0.1:1", stats: stats, logger: .init(label: "test"), requestTimeout: .seconds(30),
                onPush: nil))
        try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        let answer = channel.eventLoop.makePromise(of: Lhwire_Envelope.self)
        channel.write(LHClientRequestHandler.Outbound(kind: .getServerVersion(.init()), promise: answer), promise: nil)
        channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.read)
        #expect(!channel.isActive)
        do {
            _ = try answer.futureResult.wait()
            Issue.record("a request in flight was answered after the silence")
        } catch let error as LHError {
            #expect(error.code == .connectionClosed)
            #expect(error.message.contains("nothing came from the server for 15 s"), "\(error.message)")
        }
        #expect(stats.closeReason.withLockedValue { $0 }?.message.contains("heartbeats stopped") == true)
    }
}
