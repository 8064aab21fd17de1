import LHProto
import LHWireProto
import NIOCore

/// Sends frames to one connection's peer from any thread: straight into the
/// channel (NIO hops to its event loop), no task or stream in between.
/// Frames sent from one thread go out in the order sent; after the
/// connection closed they are dropped.
package struct LHResponder: Sendable {
    let channel: any Channel

    package init(channel: any Channel) { self.channel = channel }

    package func yield(_ envelope: Lhwire_Envelope) {
        if let group = FrameGroup.current {
            group.add(envelope, to: channel)
        } else {
            channel.writeAndFlush(envelope, promise: nil)
        }
    }

    /// Runs `body`; the frames it yields (on this thread) are sent when it
    /// returns, in one hand-over per event loop instead of one per frame,
    /// and each connection's frames in one flush (a report's answer and the
    /// next task for the same worker leave in one write). Order per
    /// connection is kept. Nested calls join the outer one.
    package static func grouping(_ body: () -> Void) {
        guard FrameGroup.current == nil else { return body() }
        let group = FrameGroup()
        FrameGroup.current = group
        body()
        FrameGroup.current = nil
        group.send()
    }
}
