import LHProto
import LHWireProto

/// Answers requests. The server calls `handle` concurrently for requests of
/// one connection and of many.
package protocol LHRequestRouter: Sendable {
    /// Takes a request without a task when it can (on the connection's event
    /// loop: must not block): returns true and calls `reply` once, from any
    /// thread, with what `handle` would return; false to have `handle`
    /// called in a task instead.
    func handleDirectly(
        _ request: Lhwire_Envelope.OneOf_Kind, session: LHSession,
        reply: @escaping @Sendable (Result<Lhwire_Envelope.OneOf_Kind?, Error>) -> Void
    ) -> Bool
    /// The response kind, nil for a frame that needs no response, or an
    /// ``LHError`` thrown to answer with an error.
    func handle(_ request: Lhwire_Envelope.OneOf_Kind, session: LHSession) async throws -> Lhwire_Envelope.OneOf_Kind?
    /// Called once when a connection ends.
    func connectionClosed(_ session: LHSession) async
    /// Whether a client with this hello is served here: nil, or the error
    /// it is refused with (the connection is then closed).
    func admit(_ hello: Lhwire_Hello) -> LHError?
}

extension LHRequestRouter {
    package func connectionClosed(_ session: LHSession) async {}
    package func admit(_ hello: Lhwire_Hello) -> LHError? { nil }
    package func handleDirectly(
        _ request: Lhwire_Envelope.OneOf_Kind, session: LHSession,
        reply: @escaping @Sendable (Result<Lhwire_Envelope.OneOf_Kind?, Error>) -> Void
    ) -> Bool { false }
}
