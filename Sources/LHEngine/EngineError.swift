import LHProto

/// An error the engine reports to its caller (bad input, unknown ids): the
/// server maps it to the wire's error codes. Never a workflow failure: those
/// are ``Failure``s recorded on NodeRuns.
public struct LHEngineError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        fileprivate enum Base: String {
            case invalidArgument = "INVALID_ARGUMENT"
            case notFound = "NOT_FOUND"
            case alreadyExists = "ALREADY_EXISTS"
            case failedPrecondition = "FAILED_PRECONDITION"
        }
        fileprivate let base: Base
        public static let invalidArgument = Code(base: .invalidArgument)
        public static let notFound = Code(base: .notFound)
        public static let alreadyExists = Code(base: .alreadyExists)
        public static let failedPrecondition = Code(base: .failedPrecondition)
        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }

    static func invalid(_ message: String) -> LHEngineError { .init(.invalidArgument, message) }
}

/// A workflow-level failure: what fails a NodeRun (and, unhandled, its
/// ThreadRun). Names of system errors are UPPER_UNDERSCORE (ERRORs); any
/// other name is a business EXCEPTION.
struct Failure: Error, Equatable {
    var name: String
    var message: String
    var content: Littlehorse_VariableValue?

    static func error(_ type: Littlehorse_LHErrorType, _ message: String) -> Failure {
        Failure(name: "\(type.name)", message: message, content: nil)
    }

    /// True for the system error codes (ERROR), false for EXCEPTIONs.
    var isError: Bool { Failure.systemErrorNames.contains(name) }

    static let systemErrorNames: Set<String> = [
        "CHILD_FAILURE", "VAR_SUB_ERROR", "VAR_MUTATION_ERROR", "USER_TASK_CANCELLED", "TIMEOUT",
        "TASK_FAILURE", "VAR_ERROR", "TASK_ERROR", "INTERNAL_ERROR",
    ]

    var proto: Littlehorse_Failure {
        var f = Littlehorse_Failure()
        f.failureName = name
        f.message = message
        if let content { f.content = content }
        return f
    }

    init(name: String, message: String, content: Littlehorse_VariableValue?) {
        self.name = name
        self.message = message
        self.content = content
    }

    init(_ proto: Littlehorse_Failure) {
        self.init(name: proto.failureName, message: proto.message, content: proto.hasContent ? proto.content : nil)
    }
}

extension Littlehorse_LHErrorType {
    var name: String {
        switch self {
        case .childFailure: "CHILD_FAILURE"
        case .varSubError: "VAR_SUB_ERROR"
        case .varMutationError: "VAR_MUTATION_ERROR"
        case .userTaskCancelled: "USER_TASK_CANCELLED"
        case .timeout: "TIMEOUT"
        case .taskFailure: "TASK_FAILURE"
        case .varError: "VAR_ERROR"
        case .taskError: "TASK_ERROR"
        case .internalError: "INTERNAL_ERROR"
        case .UNRECOGNIZED(let n): "ERROR_\(n)"
        }
    }
}
