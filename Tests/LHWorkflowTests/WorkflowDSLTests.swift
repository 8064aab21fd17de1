import Foundation
import LHProto
import LHWorkflow
import Testing

/// The DSL compiles to the same WfSpec as LittleHorse's own Python SDK.
@Suite struct WorkflowDSLTests {
    func fixture(_ name: String) throws -> Littlehorse_PutWfSpecRequest {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("LHProtoTests/Fixtures/\(name).json")
        return try Littlehorse_PutWfSpecRequest(jsonUTF8Data: Data(contentsOf: url))
    }

    @Test func collectUnderpantsCompilesToWhatThePythonSDKCompiles() throws {
        let wf = Workflow("collect-underpants") { wf in
            let allUnderpants = wf.declareJsonArr("all-underpants")
            wf.execute("start-underpants-collection")
            wf.waitForEvent("done-collecting-underpants")
            wf.execute("profit", allUnderpants)
            wf.registerInterruptHandler("underpant-collected") { h in
                let content = h.declareStr(WorkflowThread.handlerInputVar)
                h.mutate(allUnderpants, .add, content)
                h.execute("collect-underpant", content)
            }
        }
        let ours = wf.compile()
        let theirs = try fixture("collect-underpants")
        #expect(Set(ours.threadSpecs.keys) == Set(theirs.threadSpecs.keys))
        for name in theirs.threadSpecs.keys {
            let a = ours.threadSpecs[name]!, b = theirs.threadSpecs[name]!
            #expect(Set(a.nodes.keys) == Set(b.nodes.keys), "node names of thread \(name)")
            for node in b.nodes.keys { #expect(a.nodes[node] == b.nodes[node], "node \(node) of thread \(name)") }
            #expect(a.variableDefs == b.variableDefs, "variables of thread \(name)")
            #expect(a.interruptDefs == b.interruptDefs, "interrupt defs of thread \(name)")
        }
        #expect(ours == theirs)
    }

    @Test func handlerInputVariableIsNamedInput() {
        #expect(WorkflowThread.handlerInputVar == "INPUT")
    }
}
