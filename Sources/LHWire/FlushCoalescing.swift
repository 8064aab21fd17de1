import LHProto
import NIOCore

/// Makes the flushes of one event-loop tick into one. A flush is carried out
/// after the tasks already queued on the loop have run, so frames written
/// from many threads (responses, pushed tasks, pipelined requests) leave in
/// one TLS write and one syscall instead of one each. Sits next to the TLS
/// handler (or at the head without TLS).
public final class LHFlushCoalescingHandler: ChannelOutboundHandler, RemovableChannelHandler {
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private var flushPending = false

    public init() {}

    public func flush(context: ChannelHandlerContext) {
        guard !flushPending else { return }
        flushPending = true
        context.eventLoop.assumeIsolated().execute {
            self.flushPending = false
            context.flush()
        }
    }

    /// What was written before a close still goes out.
    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if flushPending {
            flushPending = false
            context.flush()
        }
        context.close(mode: mode, promise: promise)
    }
}
