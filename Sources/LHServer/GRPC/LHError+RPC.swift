import GRPCCore
import LHProto

/// ``LHError`` as a gRPC status: the codes LittleHorse's server answers with.
extension LHError {
    private static let rpcCodes: [(LHError.Code, RPCError.Code)] = [
        (.invalidArgument, .invalidArgument), (.notFound, .notFound), (.alreadyExists, .alreadyExists),
        (.failedPrecondition, .failedPrecondition), (.internal, .internalError), (.unavailable, .unavailable),
        (.connectionClosed, .unavailable), (.unauthenticated, .unauthenticated),
        (.resourceExhausted, .resourceExhausted), (.unimplemented, .unimplemented),
    ]

    var rpcError: RPCError {
        RPCError(code: Self.rpcCodes.first { $0.0 == code }?.1 ?? .unknown, message: message)
    }
}
