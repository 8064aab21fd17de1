import LHProto
import LHWire
import LHWireProto
import Logging
import NIOCore
import NIOSSL

/// The last handler of a server connection's pipeline: learns the client's
/// id and role from the hello and hands every other envelope to the server,
/// on the event loop.
///
/// Backpressure: it counts the connection's requests not yet answered (every
/// request with an id gets one answer, which passes through here on its way
/// out). Past `maxInFlight` unanswered, or while the channel is not writable
/// (its peer does not read its answers), requests that arrive wait here in
/// order and the channel is not read; they are handed on as answers go out
/// and the peer reads. A client that floods requests or never reads then
/// waits in TCP, holding a bounded share of the server's memory (at most
/// `maxInFlight` answers, one read's worth of waiting requests and the
/// channel's write buffer); everyone else is served.
final class LHRequestHandler: ChannelDuplexHandler {
    typealias InboundIn = Lhwire_Envelope
    typealias OutboundIn = Lhwire_Envelope
    typealias OutboundOut = Lhwire_Envelope

    private let server: WireServer
    private var session: LHSession
    private var logger: Logger
    private let maxInFlight: Int
    private var inFlight = 0
    /// Requests read while held back, oldest first (`next` is the first).
    private var waiting: [Lhwire_Envelope] = []
    private var next = 0
    /// A read asked for while reads are held.
    private var readHeld = false

    init(server: WireServer, channel: any Channel, maxInFlight: Int = 1_024) {
        let remote = channel.remoteAddress.map { "\($0)" } ?? "?"
        self.server = server
        self.maxInFlight = max(1, maxInFlight)
        session = LHSession(remote: remote, responder: LHResponder(channel: channel))
        logger = server.logger
        logger[metadataKey: LHLog.remote] = "\(remote)"
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        if case .hello(let hello) = envelope.kind {
            session.clientId = hello.clientID
            session.role = hello.role
            logger[metadataKey: LHLog.clientId] = "\(hello.clientID)"
            logger.debug("client connected", metadata: ["lh.role": "\(hello.role)"])
            return
        }
        if next < waiting.count || !hasRoom(context) {
            waiting.append(envelope)
            return
        }
        hand(envelope)
    }

    private func hasRoom(_ context: ChannelHandlerContext) -> Bool {
        inFlight < maxInFlight && context.channel.isWritable
    }

    private func hand(_ envelope: Lhwire_Envelope) {
        if envelope.id != 0 { inFlight += 1 }
        server.dispatch(envelope, session: session, logger: logger)
    }

    /// Hands on waiting requests while there is room; reads again once none
    /// wait.
    private func drain(_ context: ChannelHandlerContext) {
        while next < waiting.count && hasRoom(context) {
            let envelope = waiting[next]
            next += 1
            hand(envelope)
        }
        if next == waiting.count && next > 0 {
            waiting.removeAll(keepingCapacity: false)
            next = 0
        }
        if readHeld && waiting.isEmpty && hasRoom(context) {
            readHeld = false
            context.read()
        }
    }

    /// An answer (id ≠ 0; tasks pushed to workers and heartbeats have none)
    /// going out: one request fewer in flight.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(data, promise: promise)
        if inFlight > 0 && unwrapOutboundIn(data).id != 0 {
            inFlight -= 1
            if readHeld || next < waiting.count { drain(context) }
        }
    }

    func read(context: ChannelHandlerContext) {
        guard waiting.isEmpty && hasRoom(context) else {
            readHeld = true
            return
        }
        context.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && (readHeld || next < waiting.count) { drain(context) }
        context.fireChannelWritabilityChanged()
    }

    /// Protocol and TLS errors are counted (the protocol error handler
    /// before this one has answered and closed the connection).
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is LHError {
            server.metrics?.frameErrors.increment()
        } else if error is NIOSSLError || "\(type(of: error))".contains("SSL") {
            server.metrics?.tlsErrors.increment()
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        logger.debug("connection closed")
        server.connectionEnded(session, channel: context.channel)
        context.fireChannelInactive()
    }
}
