import LHClient
import LHProto
import LHWorkflow

extension Workflow {
    /// Deploys this workflow's WfSpec (PutWfSpec) and returns what the server
    /// stored, with its version.
    ///
    /// ```swift
    /// let spec = try await Workflow("my-wf") { wf in wf.execute("greet") }.register(client: client)
    /// ```
    @discardableResult
    public func register(client: LittleHorseClient) async throws -> Littlehorse_WfSpec {
        try await client.putWfSpec(compile())
    }
}
