// Registers what seed 003's walkthrough needs: the two ExternalEventDefs and
// the collect-underpants WfSpec, written with LHWorkflow.
import Foundation
import LHClient
import LHWorkflow

let wf = Workflow("collect-underpants") { wf in
    let allUnderpants = wf.declareJsonArr("all-underpants")
    wf.execute("start-underpants-collection")
    wf.waitForEvent("done-collecting-underpants")
    wf.execute("profit", allUnderpants)
    wf.registerInterruptHandler("underpant-collected") { handler in
        // The content of the ExternalEvent that triggered the interrupt.
        let interruptContent = handler.declareStr(WorkflowThread.handlerInputVar)
        // The handler may change its parent's variables...
        handler.mutate(allUnderpants, .add, interruptContent)
        // ...and execute tasks.
        handler.execute("collect-underpant", interruptContent)
    }
}

let client = try await LHClient.connect(try LHConfig.fromEnvironment())
for name in ["underpant-collected", "done-collecting-underpants"] {
    _ = try await client.putExternalEventDef(.with { $0.name = name })
}
if CommandLine.arguments.contains("--print") {
    print(try wf.compile().jsonString())
}
let spec = try await client.putWfSpec(wf.compile())
print("registered WfSpec \(spec.id.name) version \(spec.id.majorVersion).\(spec.id.revision)")
await client.close()
