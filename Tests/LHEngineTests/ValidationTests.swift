import Foundation
import LHProto
import Testing

@testable import LHEngine

/// PutWfSpec validation: every refusal is INVALID_ARGUMENT and names what
/// was wrong.
@Suite struct ValidationTests {
    func validate(
        _ threads: [String: Littlehorse_ThreadSpec], name: String = "my-wf", taskDefs: [Littlehorse_TaskDef] = [],
        events: [String] = []
    ) throws {
        var request = Littlehorse_PutWfSpecRequest()
        request.name = name
        request.threadSpecs = threads
        request.entrypointThreadName = "entrypoint"
        _ = try WorkflowEngine.validate(
            request,
            metadata: .init(
                taskDefs: Dictionary(taskDefs.map { ($0.id.name, $0) }, uniquingKeysWith: { a, _ in a }),
                externalEventDefs: Set(events)))
    }

    func refusal(
        _ threads: [String: Littlehorse_ThreadSpec], name: String = "my-wf", taskDefs: [Littlehorse_TaskDef] = [],
        events: [String] = []
    ) -> String {
        do {
            try validate(threads, name: name, taskDefs: taskDefs, events: events)
            return "accepted"
        } catch let error as LHEngineError {
            #expect(error.code == .invalidArgument)
            return error.message
        } catch {
            return "\(error)"
        }
    }

    @Test func theSeedsWorkflowIsAccepted() throws {
        try validate(collectUnderpants(), taskDefs: underpantTaskDefs, events: underpantEvents)
    }

    @Test func pythonSDKFixtureIsAccepted() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("LHProtoTests/Fixtures/collect-underpants.json")
        let request = try Littlehorse_PutWfSpecRequest(jsonUTF8Data: Data(contentsOf: url))
        _ = try WorkflowEngine.validate(
            request,
            metadata: .init(
                taskDefs: Dictionary(underpantTaskDefs.map { ($0.id.name, $0) }, uniquingKeysWith: { a, _ in a }),
                externalEventDefs: Set(underpantEvents)))
    }

    @Test func namesMustBeKebabCase() {
        #expect(refusal(["entrypoint": linear([])], name: "My_WF").contains("'My_WF'"))
        #expect(refusal(["entrypoint": linear([], variables: [variable("myVar", .str)])]).contains("'myVar'"))
        #expect(refusal(["entrypoint": linear([Step("f", fail("BadName"))])]).contains("'BadName'"))
        // The SDKs name a node-output variable after its node: accepted.
        #expect(
            refusal(["entrypoint": linear([], variables: [variable("8-child-thread-START_THREAD", .int)])])
                == "accepted")
        #expect(
            refusal(["entrypoint": linear([], variables: [variable("child_THREAD", .int)])]).contains("'child_THREAD'"))
        #expect(refusal(["entrypoint": linear([Step("f", fail("VAR_SUB_ERROR"))])]).contains("reserved"))
    }

    @Test func eachThreadHasExactlyOneEntrypoint() {
        var thread = linear([])
        thread.nodes["second"] = .with {
            $0.entrypoint = .init(); $0.outgoingEdges = [.with { $0.sinkNodeName = "exit" }]
        }
        #expect(refusal(["entrypoint": thread]).contains("exactly one ENTRYPOINT"))
    }

    @Test func edgesMustLeadToExistingNodesAndOnlyExitEndsAThread() {
        var thread = linear([Step("n", nop)])
        thread.nodes["n"]!.outgoingEdges[0].sinkNodeName = "nowhere"
        #expect(refusal(["entrypoint": thread]).contains("'nowhere'"))
        var dead = linear([Step("n", nop)])
        dead.nodes["n"]!.outgoingEdges = []
        #expect(refusal(["entrypoint": dead]).contains("node 'n'"))
    }

    @Test func unimplementedNodeKindsAreRefusedByName() {
        #expect(
            refusal(["entrypoint": linear([Step("ut", .userTask(.with { $0.userTaskDefName = "approve" }))])]).contains(
                "USER_TASK"))
    }

    @Test func variablesMustBeDeclaredInScope() {
        #expect(
            refusal(
                ["entrypoint": linear([Step("t", task("a", [assign("ghost")]))])],
                taskDefs: [taskDef("a", [("x", .str)])]
            ).contains("'ghost'"))
        #expect(
            refusal(["entrypoint": linear([Step("n", nop, mutations: [mutation("ghost", .assign, literal(int(1)))])])])
                .contains("'ghost'"))
    }

    @Test func taskInputsMustMatchTheTaskDef() {
        #expect(
            refusal(["entrypoint": linear([Step("t", task("a"))])], taskDefs: [taskDef("a", [("x", .str)])]).contains(
                "takes 1"))
        #expect(
            refusal(
                ["entrypoint": linear([Step("t", task("a", [literal(str("abc"))]))])],
                taskDefs: [taskDef("a", [("x", .int)])]
            ).contains("INT"))
        #expect(refusal(["entrypoint": linear([Step("t", task("missing"))])]).contains("'missing'"))
        let wrongVar = refusal(
            ["entrypoint": linear([Step("t", task("a", [assign("flag")]))], variables: [variable("flag", .bool)])],
            taskDefs: [taskDef("a", [("n", .int)])])
        #expect(wrongVar.contains("'flag'") && wrongVar.contains("BOOL") && wrongVar.contains("INT"))
    }

    @Test func startThreadMustNameAThreadSpec() {
        #expect(refusal(["entrypoint": linear([Step("s", spawn("nobody"))])]).contains("'nobody'"))
    }

    @Test func onlyOneThreadSpecMayRegisterAnInterruptForAnEvent() {
        let threads = [
            "entrypoint": linear([Step("s", spawn("other"))], interrupts: [("ping", "h")]),
            "other": linear([], interrupts: [("ping", "h")]),
            "h": linear([]),
        ]
        let message = refusal(threads, events: ["ping"])
        #expect(message.contains("'entrypoint'") && message.contains("'other'") && message.contains("'ping'"))
    }

    @Test func anInterruptEventMayNotBeWaitedForByAnExternalEventNode() {
        let threads = [
            "entrypoint": linear([Step("w", waitEvent("ping"))], interrupts: [("ping", "h")]), "h": linear([]),
        ]
        let message = refusal(threads, events: ["ping"])
        #expect(message.contains("'ping'") && message.contains("'w'"))
    }

    @Test func theHandlerMustExistAndDeclareNoVariableButInput() {
        #expect(
            refusal(["entrypoint": linear([], interrupts: [("ping", "ghost")])], events: ["ping"]).contains("'ghost'"))
        let threads = [
            "entrypoint": linear([], interrupts: [("ping", "h")]),
            "h": linear([], variables: [variable("INPUT", .str), variable("mine", .int)]),
        ]
        #expect(refusal(threads, events: ["ping"]).contains("mine"))
    }

    @Test func theInterruptsExternalEventDefMustExist() {
        let threads = ["entrypoint": linear([], interrupts: [("ping", "h")]), "h": linear([])]
        #expect(refusal(threads).contains("'ping'"))
    }

    @Test func handlerSeesTheInterruptedThreadsVariables() throws {
        let threads = [
            "entrypoint": linear([], variables: [variable("email", .str)], interrupts: [("email-update", "h")]),
            "h": linear(
                [Step("n", nop, mutations: [mutation("email", .assign, assign("INPUT"))])],
                variables: [variable("INPUT", .str)]),
        ]
        try validate(threads, events: ["email-update"])
    }
}
