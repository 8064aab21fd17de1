import NIOConcurrencyHelpers

/// A listener's port once it is bound, or why it could not bind: those
/// waiting in ``wait()`` are resumed with either. Shared by the gRPC and
/// HTTP fronts.
final class BoundPort: Sendable {
    private let state = NIOLockedValueBox<
        (port: Int?, failure: (any Error)?, waiting: [CheckedContinuation<Int, any Error>])
    >((nil, nil, []))

    /// The port, when bound.
    var port: Int? { state.withLockedValue { $0.port } }

    /// Waits until the listener is bound and returns its port.
    func wait() async throws -> Int {
        try await withCheckedThrowingContinuation { continuation in
            let ready: Result<Int, any Error>? = state.withLockedValue { b in
                if let port = b.port { return .success(port) }
                if let failure = b.failure { return .failure(failure) }
                b.waiting.append(continuation)
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    /// Bound on `port`, or failed with an error: tells every waiter.
    func settle(_ result: Result<Int, any Error>) {
        let waiting = state.withLockedValue { b in
            switch result {
            case .success(let port): b.port = port
            case .failure(let error): b.failure = error
            }
            defer { b.waiting = [] }
            return b.waiting
        }
        for w in waiting { w.resume(with: result) }
    }
}
