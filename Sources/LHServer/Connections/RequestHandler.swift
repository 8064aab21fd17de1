import LHProto
import LHWire
import LHWireProto
import Logging
import NIOCore
import NIOSSL

/// The last handler of a server connection's pipeline: learns the client's
/// id and role from the hello and hands every other envelope to the server,
/// on the event loop.
final class LHRequestHandler: ChannelInboundHandler {
    typealias InboundIn = Lhwire_Envelope

    private let server: WireServer
    private var session: LHSession
    private var logger: Logger

    init(server: WireServer, channel: any Channel) {
        let remote = channel.remoteAddress.map { "\($0)" } ?? "?"
        self.server = server
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
        server.dispatch(envelope, session: session, logger: logger)
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
