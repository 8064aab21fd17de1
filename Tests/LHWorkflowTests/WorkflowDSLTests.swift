import Foundation
import LHEngine
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
            let a = ours.threadSpecs[name]!
            let b = theirs.threadSpecs[name]!
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

/// DSL control flow, compiled and then run through the engine.
@Suite struct WorkflowDSLExecutionTests {
    func run(
        _ wf: Workflow, taskDefs: [Littlehorse_TaskDef] = [], events: Set<String> = [],
        variables: [String: Littlehorse_VariableValue] = [:]
    ) throws -> WfRunState {
        let defs = Dictionary(taskDefs.map { ($0.id.name, $0) }, uniquingKeysWith: { a, _ in a })
        let spec = try WorkflowEngine.validate(wf.compile(), metadata: .init(taskDefs: defs, externalEventDefs: events))
        let (state, _) = try WorkflowEngine.runWf(
            .with { $0.variables = variables }, id: "wf", context: .init(spec: spec, taskDefs: defs), now: Date())
        return state
    }

    @Test func doWhileLoopsUntilTheConditionFails() throws {
        let wf = Workflow("loop") { wf in
            let count = wf.declare("count", .int, default: .with { $0.int = 0 })
            wf.doWhile(wf.condition(count, .lessThan, 5)) { body in
                body.mutate(count, .add, 1)
            }
        }
        let state = try run(wf)
        #expect(state.wfRun.status == .completed)
        #expect(state.variable("count")?.int == 5)
    }

    @Test func doIfTakesTheBranchWhoseConditionHolds() throws {
        let wf = Workflow("branch") { wf in
            let n = wf.declareInt("n")
            let out = wf.declareStr("out")
            wf.doIf(
                wf.condition(n, .greaterThan, 10), { t in t.mutate(out, .assign, "big") },
                else: { t in t.mutate(out, .assign, "small") })
        }
        #expect(try run(wf, variables: ["n": .with { $0.int = 42 }]).variable("out")?.str == "big")
        #expect(try run(wf, variables: ["n": .with { $0.int = 1 }]).variable("out")?.str == "small")
    }

    @Test func handleExceptionRunsTheHandlerThread() throws {
        let wf = Workflow("handled") { wf in
            let handled = wf.declareBool("handled")
            let child = wf.spawnThread("child") { c in c.fail("child-gave-up", "no") }
            let waited = wf.waitForThreads(child)
            wf.handleException(waited, "child-gave-up") { h in h.mutate(handled, .assign, true) }
        }
        let state = try run(wf)
        #expect(state.variable("handled")?.bool == true)
        #expect(state.wfRun.status == .completed)
    }
}

extension WorkflowDSLExecutionTests {
    @Test func doIfWithNodesInBothBranchesJoinsAfterwards() throws {
        let wf = Workflow("branch-nodes") { wf in
            let n = wf.declareInt("n")
            let out = wf.declareStr("out")
            wf.doIf(
                wf.condition(n, .greaterThan, 10),
                { t in
                    t.sleepSeconds(0); t.mutate(out, .assign, "big")
                },
                else: { t in
                    t.sleepSeconds(0); t.mutate(out, .assign, "small")
                })
            wf.mutate(out, .add, "!")
        }
        #expect(try run(wf, variables: ["n": .with { $0.int = 42 }]).variable("out")?.str == "big!")
        #expect(try run(wf, variables: ["n": .with { $0.int = 3 }]).variable("out")?.str == "small!")
    }
}
