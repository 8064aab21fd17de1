import Foundation
import LHClient
import LHWire
import LHWireProto
import Logging
import NIOCore

/// A scripted peer on the real wire (TLS with a development CA of its own,
/// frames, hello) for tests of the client side: a client connects with
/// `caPath` to 127.0.0.1:`port`.
struct ScriptedPeer<Accepted: Sendable> {
    let listener: NIOAsyncChannel<Accepted, Never>
    let port: Int
    let caPath: String
}

enum ScriptedPeers {
    /// `finish` completes each accepted connection's pipeline on its event loop.
    static func bind<Accepted: Sendable>(_ name: String, finish: @escaping @Sendable (Channel) throws -> Accepted)
        async throws -> ScriptedPeer<Accepted>
    {
        let files = try DevCertificateAuthority.ensure(in: try ServerProcess.temporaryDirectory(name))
        let listener = try await LHListener.bind(
            .init(
                host: "127.0.0.1", port: 0,
                tls: .init(certificatePath: files.serverCertPath, keyPath: files.serverKeyPath)),
            logger: Logger(label: "test.\(name)"), finish: finish
        )
        guard let port = listener.channel.localAddress?.port else {
            throw LHError(.internal, "the peer's listener has no port")
        }
        return ScriptedPeer(listener: listener, port: port, caPath: files.caCertPath)
    }

    /// Connections as async sequences of envelopes, for the test to answer.
    static func bind(_ name: String) async throws -> ScriptedPeer<LHListener.Connection> {
        try await bind(name) { channel in
            try LHListener.Connection(
                wrappingChannelSynchronously: channel,
                configuration: .init(inboundType: Lhwire_Envelope.self, outboundType: Lhwire_Envelope.self))
        }
    }

    /// Every envelope a connection receives (the hello included) goes to
    /// `answer`, on the connection's event loop, and what it returns is
    /// written back at once: the exchange never waits for Swift's pool
    /// threads, which the suite's other tests keep busy. `accepted` is
    /// called once per connection.
    static func bind(
        _ name: String, accepted: @escaping @Sendable () -> Void = {},
        answer: @escaping @Sendable (Lhwire_Envelope) -> [Lhwire_Envelope]
    ) async throws -> ScriptedPeer<Void> {
        try await bind(name) { channel in
            accepted()
            try channel.pipeline.syncOperations.addHandler(Responder(answer: answer))
        }
    }

    private final class Responder: ChannelInboundHandler, Sendable {
        typealias InboundIn = Lhwire_Envelope
        typealias OutboundOut = Lhwire_Envelope
        let answer: @Sendable (Lhwire_Envelope) -> [Lhwire_Envelope]
        init(answer: @escaping @Sendable (Lhwire_Envelope) -> [Lhwire_Envelope]) { self.answer = answer }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let replies = answer(unwrapInboundIn(data))
            for reply in replies { context.write(wrapOutboundOut(reply), promise: nil) }
            if !replies.isEmpty { context.flush() }
        }
    }
}
