import Foundation
import LHProto
import Testing

@testable import LHEngine

/// The collect-underpants WfSpec of seed 003, built by hand.
func collectUnderpants(handlerInput: Littlehorse_VariableType = .str) -> [String: Littlehorse_ThreadSpec] {
    [
        "entrypoint": linear(
            [
                Step("start", task("start-underpants-collection")),
                Step("done", waitEvent("done-collecting-underpants")),
                Step("profit", task("profit", [assign("all-underpants")])),
            ],
            variables: [variable("all-underpants", .jsonArr)],
            interrupts: [("underpant-collected", "handler")]),
        "handler": linear(
            [Step("collect", task("collect-underpant", [assign("INPUT")]))].map { $0 },
            variables: [variable("INPUT", handlerInput)]
        ).adding(mutationAfterEntry: mutation("all-underpants", .add, assign("INPUT"))),
    ]
}

let underpantTaskDefs = [
    taskDef("start-underpants-collection"), taskDef("collect-underpant", [("owner", .str)]),
    taskDef("profit", [("underpants", .jsonArr)]),
]
let underpantEvents = ["underpant-collected", "done-collecting-underpants"]

extension Littlehorse_ThreadSpec {
    func adding(mutationAfterEntry m: Littlehorse_VariableMutation) -> Littlehorse_ThreadSpec {
        var copy = self
        copy.nodes["0-entrypoint"]!.outgoingEdges[0].variableMutations.append(m)
        return copy
    }
}

/// Interrupts and halting, rule by rule (design.md "Halting and interrupts",
/// seed 003).
@Suite struct InterruptTests {
    func underpants(handlerInput: Littlehorse_VariableType = .str) throws -> Harness {
        try Harness(
            threads: collectUnderpants(handlerInput: handlerInput), taskDefs: underpantTaskDefs,
            events: underpantEvents,
            variables: ["all-underpants": jsonArr("[]")])
    }

    @Test func seedWalkthroughEachEventIsItsOwnHandlerAndTheBasketGrows() throws {
        var h = try underpants()
        try h.complete("start-underpants-collection")
        #expect(h.currentNodeName(0) == "done")
        for (i, who) in ["obiwan", "anakin", "yoda"].enumerated() {
            try h.post("underpant-collected", str(who))
            let handler = Int32(i + 1)
            #expect(h.state.thread(handler)?.type == .interrupt)
            #expect(h.state.thread(handler)?.parentThreadID == 0)
            #expect(h.variable("INPUT", thread: handler) == str(who))
            try h.complete("collect-underpant")
            #expect(h.threadStatus(handler) == .completed)
            #expect(h.threadStatus(0) == .running, "resumed after the handler completed")
        }
        #expect(h.variable("all-underpants") == jsonArr("[\"obiwan\",\"anakin\",\"yoda\"]"))
        #expect(h.status == .running)
        try h.post("done-collecting-underpants", str("done!"))
        #expect(h.lastInput("profit") == [jsonArr("[\"obiwan\",\"anakin\",\"yoda\"]")])
        try h.complete("profit")
        #expect(h.status == .completed)
        #expect(h.state.wfRun.threadRuns.count == 4)
    }

    @Test func externalEventNodeHaltsAtOnceAndTheWfRunStaysRunning() throws {
        var h = try underpants()
        try h.complete("start-underpants-collection")
        try h.post("underpant-collected", str("obiwan"))
        // Handler started in the same command: the interrupted thread halted at once.
        #expect(h.threadStatus(0) == .halted)
        #expect(h.nodeStatus(0) == .halted)
        #expect(h.status == .running, "the WfRun stays RUNNING while its entrypoint is interrupted")
        let reasons = h.state.thread(0)!.haltReasons
        #expect(reasons == [.with { $0.interrupted.interruptThreadID = 1 }])
    }

    @Test func interruptWhileTaskInFlightStaysHaltingUntilTheWorkerReports() throws {
        var h = try underpants()
        let guid = try h.start("start-underpants-collection")
        try h.post("underpant-collected", str("obiwan"))
        #expect(h.threadStatus(0) == .halting)
        #expect(h.nodeStatus(0) == .halting)
        #expect(h.state.wfRun.threadRuns.count == 1, "no handler before the thread is HALTED")
        #expect(h.state.thread(0)!.haltReasons.first?.pendingInterrupt.externalEventID.guid == "event-1")
        try h.report(guid)
        #expect(h.state.wfRun.threadRuns.count == 2, "the handler started as soon as the report came")
        #expect(h.threadStatus(0) == .halted)
        #expect(h.currentNodeName(0) == "start", "the finished task waits for the resume to move on")
        #expect(h.nodeStatus(0) == .completed)
        try h.complete("collect-underpant")
        #expect(h.currentNodeName(0) == "done", "moved on after the handler completed")
        #expect(h.variable("all-underpants") == jsonArr("[\"obiwan\"]"))
    }

    @Test func aHaltingThreadWhoseAttemptWasLostInARestartHaltsAndItsHandlerStarts() throws {
        var h = try Harness(
            threads: [
                "entrypoint": linear([Step("t", task("slow", retries: 1))], interrupts: [("poke", "h")]),
                "h": linear([Step("n", task("handle"))]),
            ], taskDefs: [taskDef("slow"), taskDef("handle")], events: ["poke"])
        let guid = try h.start("slow")
        try h.post("poke", str("now"))
        #expect(h.threadStatus(0) == .halting)
        #expect(h.state.wfRun.threadRuns.count == 1)
        try h.apply(.attemptLost(taskGuid: guid, attempt: 0, reason: "not claimed"))
        #expect(h.threadStatus(0) == .halted, "the lost attempt is no longer in anyone's hands")
        #expect(h.state.wfRun.threadRuns.count == 2, "the interrupt handler started")
        #expect(h.queued.keys.allSatisfy { h.state.taskRuns[$0]?.taskDefID.name == "handle" }, "the retry waits")
        try h.complete("handle")
        #expect(h.threadStatus(0) == .running, "resumed after the handler")
        #expect(h.queued[guid] == 1, "attempt 1 queued on resume")
        try h.complete("slow")
        #expect(h.status == .completed)
    }

    @Test func theNextTaskSeesTheHandlersMutation() throws {
        let threads: [String: Littlehorse_ThreadSpec] = [
            "entrypoint": linear(
                [Step("a", task("first")), Step("b", task("second", [assign("note")]))],
                variables: [variable("note", .str, default: str("before"))], interrupts: [("update-note", "h")]),
            "h": linear([Step("n", nop)], variables: [variable("INPUT", .str)]).adding(
                mutationAfterEntry: mutation("note", .assign, assign("INPUT"))),
        ]
        var h = try Harness(
            threads: threads, taskDefs: [taskDef("first"), taskDef("second", [("note", .str)])], events: ["update-note"]
        )
        let guid = try h.start("first")
        try h.post("update-note", str("after"))
        #expect(h.threadStatus(0) == .halting)
        try h.report(guid)
        #expect(h.lastInput("second") == [str("after")])
    }

    @Test func queuedTaskIsWithdrawnHaltsAtOnceAndIsRequeuedOnResume() throws {
        let threads: [String: Littlehorse_ThreadSpec] = [
            "entrypoint": linear([Step("a", task("slow"))], interrupts: [("ping", "h")]),
            "h": linear([Step("n", task("handle"))]),
        ]
        var h = try Harness(threads: threads, taskDefs: [taskDef("slow"), taskDef("handle")], events: ["ping"])
        let guid = h.queued.keys.first!
        try h.post("ping", str("x"))
        #expect(h.allEffects.contains(.withdrawTask(taskGuid: guid, taskDef: "slow")))
        #expect(h.queued[guid] == nil)
        #expect(h.threadStatus(0) == .halted)
        let refused = #expect(throws: LHEngineError.self) {
            try h.apply(.taskStarted(taskGuid: guid, attempt: 0, workerId: "w"))
        }
        #expect(refused?.code == .failedPrecondition, "a withdrawn task is not handed to a worker")
        try h.complete("handle")
        #expect(h.queued[guid] == 0, "queued again on resume")
        try h.complete("slow")
        #expect(h.status == .completed)
    }

    @Test func interruptDuringSleepStartsTheHandlerAtOnceAndAMaturedSleepCompletesOnResume() throws {
        let threads: [String: Littlehorse_ThreadSpec] = [
            "entrypoint": linear([Step("s", sleep(10)), Step("after", task("after"))], interrupts: [("ping", "h")]),
            "h": linear([Step("n", task("handle"))]),
        ]
        var h = try Harness(threads: threads, taskDefs: [taskDef("after"), taskDef("handle")], events: ["ping"])
        try h.post("ping", str("x"))
        #expect(h.threadStatus(0) == .halted)
        #expect(h.threadStatus(1) == .running)
        try h.advance(11)
        #expect(h.currentNodeName(0) == "s", "a matured sleep waits for the resume")
        #expect(h.state.currentNodeRun(of: 0)?.sleep.matured == true)
        try h.complete("handle")
        #expect(h.currentNodeName(0) == "after")
    }

    @Test func eventThatArrivedWhileHaltedIsConsumedOnResume() throws {
        let threads: [String: Littlehorse_ThreadSpec] = [
            "entrypoint": linear([Step("wait", waitEvent("go"))], interrupts: [("ping", "h")]),
            "h": linear([Step("n", task("handle"))]),
        ]
        var h = try Harness(threads: threads, taskDefs: [taskDef("handle")], events: ["ping", "go"])
        try h.post("ping", str("x"))
        try h.post("go", str("now"))
        #expect(h.currentNodeName(0) == "wait")
        #expect(h.state.externalEvents.last?.claimed == false)
        try h.complete("handle")
        #expect(h.status == .completed)
    }

    @Test func interruptingAParentHaltsItsWaitingChildAndTheParentIsHaltedOnlyWhenTheChildIs() throws {
        let threads: [String: Littlehorse_ThreadSpec] = [
            "entrypoint": linear(
                [
                    Step("spawn", spawn("child"), mutations: [mutation("c", .assign)]),
                    Step("wait", waitThreads([assign("c")])),
                ],
                variables: [variable("c", .int)], interrupts: [("ping", "h")]),
            "child": linear([Step("t", task("work"))]),
            "h": linear([Step("n", task("handle"))]),
        ]
        var h = try Harness(threads: threads, taskDefs: [taskDef("work"), taskDef("handle")], events: ["ping"])
        let work = try h.start("work")
        try h.post("ping", str("x"))
        #expect(h.threadStatus(1) == .halting, "the child's task is in a worker's hands")
        #expect(h.state.thread(1)!.haltReasons == [.with { $0.parentHalted.parentThreadID = 0 }])
        #expect(h.threadStatus(0) == .halting, "not HALTED while a child is not")
        try h.report(work)
        #expect(h.threadStatus(1) == .halted)
        #expect(h.threadStatus(0) == .halted)
        #expect(h.state.thread(2)?.type == .interrupt)
        try h.complete("handle")
        #expect(h.threadStatus(1) == .completed, "the child resumed with its parent and finished")
        #expect(h.status == .completed)
    }

    @Test func handlerErrorFailsTheInterruptedNodeWithChildFailure() throws {
        let threads: [String: Littlehorse_ThreadSpec] = [
            "entrypoint": linear([Step("wait", waitEvent("go"))], interrupts: [("ping", "h")]),
            "h": linear([Step("t", task("handle"))]),
        ]
        var h = try Harness(threads: threads, taskDefs: [taskDef("handle")], events: ["ping", "go"])
        try h.post("ping", str("x"))
        let guid = try h.start("handle")
        try h.report(guid, .taskFailed)
        #expect(h.threadStatus(1) == .error)
        let failure = h.state.currentNodeRun(of: 0)?.failures.first
        #expect(failure?.failureName == "CHILD_FAILURE")
        #expect(h.status == .error)
    }

    @Test func handlerExceptionPropagatesTheSameExceptionAndTheNodesFailureHandlersApply() throws {
        let threads: [String: Littlehorse_ThreadSpec] = [
            "entrypoint": linear(
                [Step("wait", waitEvent("go"), handlers: [catching("cancelled", with: "cleanup")])],
                variables: [variable("cleaned", .bool, default: .with { $0.bool = false })],
                interrupts: [("cancel", "h")]),
            "h": linear([Step("f", fail("cancelled", "customer cancelled"))]),
            "cleanup": linear([
                Step("n", nop, mutations: [mutation("cleaned", .assign, literal(.with { $0.bool = true }))])
            ]),
        ]
        var h = try Harness(threads: threads, events: ["cancel", "go"])
        try h.post("cancel", str("x"))
        let failure = h.state.nodeRuns[NodeRunKey(thread: 0, position: 1)]?.failures.first
        #expect(failure?.failureName == "cancelled")
        #expect(failure?.message == "customer cancelled")
        #expect(h.variable("cleaned") == .with { $0.bool = true }, "the node's failure handler ran")
        #expect(h.status == .completed, "handled: the thread moved past the failed node")
    }

    @Test func inputOfTheWrongTypeFailsTheHandlerWithAnErrorNamingTheTypes() throws {
        var h = try underpants(handlerInput: .int)
        try h.complete("start-underpants-collection")
        try h.post("underpant-collected", str("obiwan"))
        #expect(h.threadStatus(1) == .error)
        #expect(h.state.thread(1)!.errorMessage.contains("INT") && h.state.thread(1)!.errorMessage.contains("STR"))
        #expect(h.state.currentNodeRun(of: 0)?.failures.first?.failureName == "CHILD_FAILURE")
        #expect(h.status == .error)
    }

    @Test func oneEventInterruptsEveryThreadRunOfTheRegisteringThreadSpec() throws {
        let threads: [String: Littlehorse_ThreadSpec] = [
            "entrypoint": linear(
                [
                    Step("s1", spawn("worker"), mutations: [mutation("a", .assign)]),
                    Step("s2", spawn("worker"), mutations: [mutation("b", .assign)]),
                    Step("wait", waitThreads([assign("a"), assign("b")])),
                ],
                variables: [variable("a", .int), variable("b", .int), variable("count", .int, default: int(0))]),
            "worker": linear([Step("w", waitEvent("go"))], interrupts: [("ping", "h")]),
            "h": linear([Step("n", nop, mutations: [mutation("count", .add, literal(int(1)))])]),
        ]
        var h = try Harness(threads: threads, events: ["ping", "go"])
        try h.post("ping", str("x"))
        let handlers = h.state.wfRun.threadRuns.filter { $0.type == .interrupt }
        #expect(handlers.map(\.parentThreadID).sorted() == [1, 2])
        #expect(h.variable("count") == int(2))
    }

    @Test func manyEventsEachGetTheirOwnHandlerAndNoneIsLost() throws {
        let threads: [String: Littlehorse_ThreadSpec] = [
            "entrypoint": linear(
                [Step("wait", waitEvent("done"))], variables: [variable("counter", .int, default: int(0))],
                interrupts: [("ping", "h")]),
            "h": linear([Step("t", task("work"), mutations: [mutation("counter", .add, literal(int(1)))])]),
        ]
        var h = try Harness(threads: threads, taskDefs: [taskDef("work")], events: ["ping", "done"])
        for i in 0..<200 { try h.post("ping", int(Int64(i))) }
        #expect(h.state.wfRun.threadRuns.count == 201, "handlers run side by side")
        while !h.queued.isEmpty { try h.complete("work") }
        #expect(h.variable("counter") == int(200))
        #expect(h.threadStatus(0) == .running)
    }

    @Test func newInterruptDoesNotHaltHandlersAlreadyRunning() throws {
        var h = try underpants()
        try h.complete("start-underpants-collection")
        try h.post("underpant-collected", str("obiwan"))
        let first = try h.start("collect-underpant")
        try h.post("underpant-collected", str("anakin"))
        #expect(h.threadStatus(1) == .running)
        #expect(h.threadStatus(2) == .running)
        try h.report(first)
        try h.complete("collect-underpant")
        #expect(h.variable("all-underpants") == jsonArr("[\"obiwan\",\"anakin\"]"))
        #expect(h.threadStatus(0) == .running)
    }

    @Test func eventPostedToAFinishedWfRunIsStoredAndInterruptsNothing() throws {
        var h = try underpants()
        try h.complete("start-underpants-collection")
        try h.post("done-collecting-underpants", str("done"))
        try h.complete("profit")
        #expect(h.status == .completed)
        try h.post("underpant-collected", str("late"))
        #expect(h.state.externalEvents.count == 2)
        #expect(h.state.wfRun.threadRuns.count == 1)
        #expect(h.state.wfRun.pendingInterrupts.isEmpty)
    }

    @Test func stopWithATaskInFlightIsHaltingUntilTheWorkerReportsAndResumeRuns() throws {
        var h = try underpants()
        let guid = try h.start("start-underpants-collection")
        try h.apply(.stopThread(0))
        #expect(h.status == .halting)
        #expect(h.state.thread(0)!.haltReasons == [.with { $0.manualHalt = .init() }])
        try h.report(guid)
        #expect(h.status == .halted)
        try h.apply(.resumeThread(0))
        #expect(h.status == .running)
        #expect(h.currentNodeName(0) == "done")
    }

    @Test func stopHaltsHandlersToo() throws {
        var h = try underpants()
        try h.complete("start-underpants-collection")
        try h.post("underpant-collected", str("obiwan"))
        try h.apply(.stopThread(0))
        #expect(h.threadStatus(1) == .halted, "a manual stop halts the running handler, whose task was only queued")
        #expect(h.status == .halted)
        try h.apply(.resumeThread(0))
        try h.complete("collect-underpant")
        #expect(h.threadStatus(0) == .running)
    }
}
