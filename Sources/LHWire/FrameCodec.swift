import LHProto
import LHWireProto
import NIOCore
import SwiftProtobuf

/// Limits of the frame protocol.
public enum LHFrame {
    /// Bytes of the length prefix.
    public static let headerBytes = 4
    /// Default largest frame body accepted: 4 MiB.
    public static let defaultMaxFrameBytes = 4 * 1024 * 1024
}

/// Decodes frames of a 4-byte big-endian length followed by that many bytes
/// of one ``Lhwire_Envelope``.
///
/// NIO's `LengthFieldBasedFrameDecoder` has no maximum: it would buffer up to
/// 2 GiB for a hostile length. This decoder checks the length as soon as the
/// prefix arrives and fails with ``LHError/Code/frameTooLarge`` before it
/// buffers the body; ``LHProtocolErrorHandler`` then answers with an error
/// frame and closes the connection.
public struct LHFrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = Lhwire_Envelope

    public let maxFrameBytes: Int

    public init(maxFrameBytes: Int = LHFrame.defaultMaxFrameBytes) {
        self.maxFrameBytes = maxFrameBytes
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> Lhwire_Envelope? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else {
            return nil
        }
        guard Int(length) <= maxFrameBytes else {
            if Self.looksLikeTLS(buffer) {
                throw LHError(
                    .malformedFrame,
                    "received a TLS record where a frame was expected: the peer uses TLS and this connection does not; both sides must agree (LHC_API_PROTOCOL, lh-server --plaintext)"
                )
            }
            throw LHError(
                .frameTooLarge,
                "frame of \(length) bytes exceeds the maximum frame size of \(maxFrameBytes) bytes"
            )
        }
        guard buffer.readableBytes >= LHFrame.headerBytes + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: LHFrame.headerBytes)
        let body = buffer.readSlice(length: Int(length))!
        do {
            return try body.withUnsafeReadableBytes { raw in
                try Lhwire_Envelope(serializedBytes: raw)
            }
        } catch {
            throw LHError(.malformedFrame, "frame of \(length) bytes is not a valid envelope: \(error)")
        }
    }

    /// The first bytes are a TLS record header (content type 20–23 —
    /// change cipher spec, alert, handshake, data — then version 3.x): a
    /// peer with TLS on talking to one with it off. As a length they read as
    /// hundreds of megabytes, which would otherwise be reported as a frame
    /// too large.
    static func looksLikeTLS(_ buffer: ByteBuffer) -> Bool {
        guard let bytes = buffer.getBytes(at: buffer.readerIndex, length: 3) else { return false }
        return (20...23).contains(bytes[0]) && bytes[1] == 3 && bytes[2] <= 4
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> Lhwire_Envelope? {
        if let envelope = try decode(buffer: &buffer) { return envelope }
        if buffer.readableBytes > 0 {
            let pending = buffer.readableBytes
            buffer.moveReaderIndex(to: buffer.writerIndex)
            throw LHError(.malformedFrame, "connection ended inside a frame (\(pending) bytes of an incomplete frame)")
        }
        return nil
    }
}

/// Encodes an ``Lhwire_Envelope`` as one frame: 4-byte big-endian length and
/// the protobuf bytes.
public struct LHFrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = Lhwire_Envelope

    public init() {}

    public func encode(data: Lhwire_Envelope, out: inout ByteBuffer) throws {
        // Sized once, then written straight into the outgoing buffer.
        let prepared = try LHFastEncoding.prepare(data)
        out.reserveCapacity(minimumWritableBytes: LHFrame.headerBytes + prepared.size)
        out.writeInteger(UInt32(prepared.size), endianness: .big)
        try out.writeWithUnsafeMutableBytes(minimumWritableBytes: prepared.size) { raw in
            try prepared.write(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<prepared.size]))
            return prepared.size
        }
    }
}

extension Lhwire_Envelope {
    /// An envelope with the given id and kind.
    public init(id: UInt64, _ kind: Lhwire_Envelope.OneOf_Kind) {
        self.init()
        self.id = id
        self.kind = kind
    }
}
