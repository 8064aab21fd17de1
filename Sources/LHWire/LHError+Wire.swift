import LHProto
import LHWireProto

/// ``LHError`` in the envelope: the one place its codes map onto
/// `lhwire.ErrorCode` and back.
extension LHError {
    private static let wireCodes: [(LHError.Code, Lhwire_ErrorCode)] = [
        (.invalidArgument, .invalidArgument), (.notFound, .notFound), (.alreadyExists, .alreadyExists),
        (.failedPrecondition, .failedPrecondition), (.internal, .internal), (.unavailable, .unavailable),
        (.unauthenticated, .unauthenticated), (.resourceExhausted, .resourceExhausted),
        (.unimplemented, .unimplemented), (.frameTooLarge, .frameTooLarge), (.malformedFrame, .malformedFrame),
        (.protocolVersionMismatch, .protocolVersionMismatch), (.helloRequired, .helloRequired),
    ]

    /// The error as it travels in an envelope (a connection that closed
    /// before an answer is UNAVAILABLE; UNKNOWN is UNSPECIFIED).
    public var wire: Lhwire_Error {
        var e = Lhwire_Error()
        e.message = message
        if code == .connectionClosed {
            e.code = .unavailable
        } else {
            e.code = Self.wireCodes.first { $0.0 == code }?.1 ?? .unspecified
        }
        return e
    }

    /// The error a peer sent.
    public init(wire: Lhwire_Error) {
        self.init(Self.wireCodes.first { $0.1 == wire.code }?.0 ?? .unknown, wire.message)
    }
}
