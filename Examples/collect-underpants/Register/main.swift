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

/// The TaskDefs the WfSpec runs. collect-underpants-worker registers them
/// when it starts, which may be after this program (in docker compose the
/// two start together): wait for them rather than fail the WfSpec.
func waitForTaskDefs(
    of request: Littlehorse_PutWfSpecRequest, client: LittleHorseClient, timeout: Duration = .seconds(120)
) async throws {
    var missing = Set(
        request.threadSpecs.values.flatMap { thread in
            thread.nodes.values.compactMap { node -> String? in
                guard case .task(let task)? = node.node, case .taskDefID(let id)? = task.taskToExecute else {
                    return nil
                }
                return id.name
            }
        }
    ).sorted()
    let deadline = ContinuousClock.now + timeout
    var told = false
    while true {
        var still: [String] = []
        for name in missing {
            do {
                _ = try await client.getTaskDef(name)
            } catch let error as LHError where error.code == .notFound {
                still.append(name)
            }
        }
        missing = still
        if missing.isEmpty { return }
        guard ContinuousClock.now < deadline else {
            throw LHError(
                .failedPrecondition,
                "TaskDef(s) \(missing.joined(separator: ", ")) still missing after \(timeout): start collect-underpants-worker, which registers them"
            )
        }
        if !told {
            FileHandle.standardError.write(
                Data(
                    "waiting for TaskDef(s) \(missing.joined(separator: ", ")) (collect-underpants-worker registers them)...\n"
                        .utf8))
            told = true
        }
        try await Task.sleep(for: .milliseconds(250))
    }
}

do {
    let client = try await LittleHorseClient.connect(try LHConfig.fromEnvironment())
    for name in ["underpant-collected", "done-collecting-underpants"] {
        _ = try await client.putExternalEventDef(.with { $0.name = name })
    }
    let request = wf.compile()
    if CommandLine.arguments.contains("--print") {
        print(try request.jsonString())
    }
    try await waitForTaskDefs(of: request, client: client)
    let spec = try await client.putWfSpec(request)
    print("registered WfSpec \(spec.id.name) version \(spec.id.majorVersion).\(spec.id.revision)")
    await client.close()
} catch {
    FileHandle.standardError.write(Data("collect-underpants-register: \(error)\n".utf8))
    exit(1)
}
