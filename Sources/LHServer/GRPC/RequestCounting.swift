import GRPCCore

/// Counts the gRPC front's requests in `lh_requests_total`, by LittleHorse's
/// method name and result code, like our protocol's. A streaming call
/// (PollTask) counts once, when it is accepted or refused.
struct RequestCounting: ServerInterceptor {
    let metrics: LHMetrics

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let kind = context.descriptor.method
        do {
            let response = try await next(request, context)
            switch response.accepted {
            case .success: metrics.request(kind, code: "OK")
            case .failure(let error): metrics.request(kind, code: Self.name(error.code))
            }
            return response
        } catch let error as RPCError {
            metrics.request(kind, code: Self.name(error.code))
            throw error
        } catch {
            metrics.request(kind, code: "INTERNAL")
            throw error
        }
    }

    /// `NOT_FOUND` for `.notFound`: gRPC's own spelling of its codes.
    static func name(_ code: RPCError.Code) -> String {
        if code == .internalError { return "INTERNAL" }
        var name = ""
        for c in code.description {
            if c.isUppercase, !name.isEmpty { name.append("_") }
            name.append(contentsOf: c.uppercased())
        }
        return name
    }
}
