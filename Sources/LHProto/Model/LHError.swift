/// An error of the LittleHorse API or of the wire protocol, with a code a
/// program can switch on and a message that names what was wrong.
///
/// ```swift
/// throw LHError(.notFound, "WfRun 'my-wf' not found")
/// ```
///
/// The codes map one to one onto the wire's error codes (LHWire's
/// `LHError.wire` and `LHError(wire:)`): that is the only place the mapping
/// lives.
public struct LHError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of error this is. A struct over a private enum so codes can
    /// grow without breaking callers' `switch`es.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        fileprivate enum Base: String, Sendable, Hashable {
            case invalidArgument = "INVALID_ARGUMENT"
            case notFound = "NOT_FOUND"
            case alreadyExists = "ALREADY_EXISTS"
            case failedPrecondition = "FAILED_PRECONDITION"
            case `internal` = "INTERNAL"
            case unavailable = "UNAVAILABLE"
            case unauthenticated = "UNAUTHENTICATED"
            case resourceExhausted = "RESOURCE_EXHAUSTED"
            case unimplemented = "UNIMPLEMENTED"
            case frameTooLarge = "FRAME_TOO_LARGE"
            case malformedFrame = "MALFORMED_FRAME"
            case protocolVersionMismatch = "PROTOCOL_VERSION_MISMATCH"
            case helloRequired = "HELLO_REQUIRED"
            case connectionClosed = "CONNECTION_CLOSED"
            case unknown = "UNKNOWN"
        }
        fileprivate let base: Base

        public static let invalidArgument = Code(base: .invalidArgument)
        public static let notFound = Code(base: .notFound)
        public static let alreadyExists = Code(base: .alreadyExists)
        public static let failedPrecondition = Code(base: .failedPrecondition)
        public static let `internal` = Code(base: .internal)
        public static let unavailable = Code(base: .unavailable)
        public static let unauthenticated = Code(base: .unauthenticated)
        public static let resourceExhausted = Code(base: .resourceExhausted)
        public static let unimplemented = Code(base: .unimplemented)
        /// A frame was longer than the receiver's maximum.
        public static let frameTooLarge = Code(base: .frameTooLarge)
        /// A frame's bytes were not a valid envelope.
        public static let malformedFrame = Code(base: .malformedFrame)
        /// The peers speak different protocol versions.
        public static let protocolVersionMismatch = Code(base: .protocolVersionMismatch)
        /// A request came before the hello.
        public static let helloRequired = Code(base: .helloRequired)
        /// The connection closed before an answer came (local, never sent).
        public static let connectionClosed = Code(base: .connectionClosed)
        public static let unknown = Code(base: .unknown)

        /// LittleHorse's spelling, e.g. `NOT_FOUND`.
        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String
    /// The underlying error, when there is one (never sent over the wire).
    public var cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { "\(code): \(message)" }

    public static func == (lhs: LHError, rhs: LHError) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(message)
    }
}
