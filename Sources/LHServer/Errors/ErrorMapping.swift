import LHEngine
import LHProto
import LHStore
import LHWire

/// The one place where the engine's and the store's errors become API
/// errors (``LHError``, which the wire and every front answer with).
extension LHError {
    /// The engine's refusals in the API's codes.
    init(_ e: LHEngineError) {
        switch e.code {
        case .notFound: self.init(.notFound, e.message)
        case .alreadyExists: self.init(.alreadyExists, e.message)
        case .failedPrecondition: self.init(.failedPrecondition, e.message)
        default: self.init(.invalidArgument, e.message)
        }
    }

    /// The store's errors in the API's codes: a bad search is the caller's
    /// mistake; anything else means the storage failed.
    init(_ e: StoreError) {
        switch e.code {
        case .invalidArgument: self.init(.invalidArgument, e.message)
        default: self.init(.unavailable, "storage failed: \(e.message)")
        }
    }

    /// Any error a request ended with, as the API answers it.
    init(answering error: any Error, request name: String) {
        switch error {
        case let e as LHError: self = e
        case let e as LHEngineError: self.init(e)
        case let e as StoreError: self.init(e)
        default: self.init(.internal, "\(name) failed: \(error)")
        }
    }

    /// Runs `body`, turning engine and store errors into API errors.
    static func mapping<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as LHEngineError {
            throw LHError(e)
        } catch let e as StoreError {
            throw LHError(e)
        }
    }

    /// ``mapping(_:)`` for async bodies.
    static func mappingAsync<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let e as LHEngineError {
            throw LHError(e)
        } catch let e as StoreError {
            throw LHError(e)
        }
    }
}
