import Foundation
import LHProto
import LHWireProto
import NIOCore

/// The frames yielded inside ``LHResponder/grouping(_:)`` on one thread.
final class FrameGroup {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
        return key
    }()

    /// The group collecting on this thread, if any.
    static var current: FrameGroup? {
        get { pthread_getspecific(key).map { Unmanaged<FrameGroup>.fromOpaque($0).takeUnretainedValue() } }
        set { pthread_setspecific(key, newValue.map { Unmanaged.passUnretained($0).toOpaque() }) }
    }

    private var loops: [ObjectIdentifier: (loop: any EventLoop, frames: [(any Channel, Lhwire_Envelope)])] = [:]

    func add(_ envelope: Lhwire_Envelope, to channel: any Channel) {
        loops[ObjectIdentifier(channel.eventLoop), default: (channel.eventLoop, [])].frames.append((channel, envelope))
    }

    func send() {
        for (loop, frames) in loops.values {
            loop.execute {
                var written: [ObjectIdentifier: any Channel] = [:]
                for (channel, envelope) in frames {
                    channel.write(envelope, promise: nil)
                    written[ObjectIdentifier(channel)] = channel
                }
                for channel in written.values { channel.flush() }
            }
        }
        loops = [:]
    }
}
