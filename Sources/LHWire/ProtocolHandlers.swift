import LHProto
import LHWireProto
import Logging
import NIOCore
import SwiftProtobuf

/// Answers a protocol error (a frame too large, bytes that are not an
/// envelope) with an error frame naming the problem, then closes the
/// connection. Only that connection is affected.
public final class LHProtocolErrorHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = Lhwire_Envelope
    public typealias InboundOut = Lhwire_Envelope
    public typealias OutboundOut = Lhwire_Envelope

    private let logger: Logger
    private var closing = false

    public init(logger: Logger) {
        self.logger = logger
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard !closing else { return }
        closing = true
        if let lhError = error as? LHError {
            logger.warning(
                "closing connection after a protocol error",
                metadata: [
                    LHLog.remote: "\(context.remoteAddress.map { "\($0)" } ?? "?")",
                    LHLog.error: "\(lhError)",
                ])
            let frame = Lhwire_Envelope(id: 0, .error(lhError.wire))
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(NIOAny(frame)).whenComplete { _ in
                bound.value.close(promise: nil)
            }
        } else {
            logger.debug(
                "closing connection after an error",
                metadata: [
                    LHLog.remote: "\(context.remoteAddress.map { "\($0)" } ?? "?")",
                    LHLog.error: "\(error)",
                ])
            context.close(promise: nil)
        }
        context.fireErrorCaught(error)
    }
}

/// The server's side of the hello: the first frame must be a hello with this
/// protocol version. It is answered with a welcome (echoing the hello's id)
/// and then passed on, so the server learns the client's id and role. A
/// request before the hello, or a hello of another version, is answered with
/// an error and the connection is closed.
public final class LHServerHelloHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = Lhwire_Envelope
    public typealias InboundOut = Lhwire_Envelope
    public typealias OutboundOut = Lhwire_Envelope

    private let welcome: Lhwire_Welcome
    private let admit: (@Sendable (Lhwire_Hello) -> LHError?)?
    private var greeted = false

    public init(welcome: Lhwire_Welcome, admit: (@Sendable (Lhwire_Hello) -> LHError?)? = nil) {
        self.welcome = welcome
        self.admit = admit
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        if greeted {
            if case .hello = envelope.kind {
                refuse(context, id: envelope.id, LHError(.invalidArgument, "hello sent twice on one connection"))
                return
            }
            context.fireChannelRead(data)
            return
        }
        guard case .hello(let hello) = envelope.kind else {
            refuse(
                context, id: envelope.id,
                LHError(.helloRequired, "the first frame must be a hello, got \(envelope.kindName)"))
            return
        }
        guard hello.protocolVersion == LHProtocol.version else {
            refuse(
                context, id: envelope.id,
                LHError(
                    .protocolVersionMismatch,
                    "client speaks protocol version \(hello.protocolVersion), this server speaks version \(LHProtocol.version)"
                ))
            return
        }
        if let refusal = admit?(hello) {
            refuse(context, id: envelope.id, refusal)
            return
        }
        greeted = true
        var reply = welcome
        let asked = hello.heartbeatIntervalSeconds
        if asked > 0 && asked < welcome.heartbeatIntervalSeconds {
            // The client judges this server's silence by its own, shorter
            // interval (a forwarding server: 1 s): heartbeats go that often
            // here, else an idle connection would look dead to it.
            reply.heartbeatIntervalSeconds = asked
            Self.sendHeartbeats(every: .seconds(Int64(asked)), context)
        }
        context.writeAndFlush(wrapOutboundOut(Lhwire_Envelope(id: envelope.id, .welcome(reply))), promise: nil)
        context.fireChannelRead(data)
    }

    /// Replaces the connection's idle timer with one whose write side fires
    /// every `interval` (its read side, the client's allowed silence, kept).
    private static func sendHeartbeats(every interval: TimeAmount, _ context: ChannelHandlerContext) {
        let sync = context.pipeline.syncOperations
        guard let idle = try? sync.handler(type: IdleStateHandler.self) else { return }
        let faster = IdleStateHandler(readTimeout: idle.readTimeout, writeTimeout: interval)
        do {
            try sync.addHandler(faster, position: .after(idle))
            _ = sync.removeHandler(idle)
        } catch {
            // The channel is closing: nothing to time.
        }
    }

    private func refuse(_ context: ChannelHandlerContext, id: UInt64, _ error: LHError) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(Lhwire_Envelope(id: id, .error(error.wire)))).whenComplete { _ in
            bound.value.close(promise: nil)
        }
    }
}

/// Sends a heartbeat when the connection has been quiet for `interval`, and
/// closes it when nothing has come from the peer for three intervals. Inbound
/// heartbeats are consumed here. Needs an `IdleStateHandler` before it.
public final class LHHeartbeatHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = Lhwire_Envelope
    public typealias InboundOut = Lhwire_Envelope
    public typealias OutboundIn = Lhwire_Envelope
    public typealias OutboundOut = Lhwire_Envelope

    private let logger: Logger
    private let deadAfter: TimeAmount

    public init(deadAfter: TimeAmount, logger: Logger) {
        self.deadAfter = deadAfter
        self.logger = logger
    }

    /// The handlers to add to a pipeline for heartbeats every `interval`.
    public static func handlers(interval: TimeAmount, logger: Logger) -> [ChannelHandler] {
        [
            IdleStateHandler(readTimeout: interval * 3, writeTimeout: interval),
            LHHeartbeatHandler(deadAfter: interval * 3, logger: logger),
        ]
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .heartbeat = unwrapInboundIn(data).kind { return }
        context.fireChannelRead(data)
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let idle = event as? IdleStateHandler.IdleStateEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch idle {
        case .write:
            var beat = Lhwire_Heartbeat()
            beat.sentAtUnixMicros = UInt64(NIODeadline.now().uptimeNanoseconds / 1000)
            context.writeAndFlush(wrapOutboundOut(Lhwire_Envelope(id: 0, .heartbeat(beat))), promise: nil)
        case .read:
            logger.warning(
                "peer silent, closing the connection",
                metadata: [
                    LHLog.remote: "\(context.remoteAddress.map { "\($0)" } ?? "?")",
                    "lh.silentForMs": "\(deadAfter.nanoseconds / 1_000_000)",
                ])
            // Handlers after this one learn why (a client names it in the
            // error of the requests it fails).
            context.fireUserInboundEventTriggered(LHPeerSilent(silentFor: deadAfter))
            context.close(promise: nil)
        case .all:
            break
        }
    }
}

/// The event `LHHeartbeatHandler` sends down the pipeline before it closes
/// a connection whose peer went silent.
public struct LHPeerSilent: Sendable {
    public var silentFor: TimeAmount
}

/// Protocol constants.
public enum LHProtocol {
    /// The protocol version this build speaks (see wire.proto).
    public static let version = UInt32(Lhwire_ProtocolVersion.current.rawValue)
}

/// Logger metadata keys, defined in one place.
public enum LHLog {
    public static let remote = "lh.remote"
    public static let error = "lh.error"
    public static let clientId = "lh.clientId"
    public static let requestId = "lh.requestId"
    public static let wfRunId = "lh.wfRunId"
    public static let taskRunId = "lh.taskRunId"
    public static let taskDef = "lh.taskDef"
}

extension Lhwire_Envelope {
    /// The name of the envelope's kind as wire.proto spells it (e.g.
    /// `run_wf`), for messages. Not for hot paths.
    public var kindName: String {
        guard let kind else { return "an empty envelope" }
        var only = Lhwire_Envelope()
        only.kind = kind
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        options.alwaysPrintEnumsAsInts = true
        if let json = try? only.jsonString(options: options),
            let start = json.firstIndex(of: "\""),
            let end = json[json.index(after: start)...].firstIndex(of: "\"")
        {
            return String(json[json.index(after: start)..<end])
        }
        return "\(kind)"
    }
}
