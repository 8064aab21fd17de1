import Foundation
import LHProto
import Testing

@testable import LHEngine

/// Execution rules of the engine (issue: run WfSpecs), one test per rule.
@Suite struct ExecutionTests {
    @Test func taskNodeDispatchesATaskRunAndItsOutputFeedsTheEdgeMutation() throws {
        var h = try Harness(
            threads: [
                "entrypoint": linear(
                    [Step("greet", task("greet", [assign("name")]), mutations: [mutation("greeting", .assign)])],
                    variables: [variable("name", .str), variable("greeting", .str)])
            ],
            taskDefs: [taskDef("greet", [("who", .str)])], variables: ["name": str("obiwan")]
        )
        #expect(h.status == .running)
        #expect(h.queued.count == 1)
        #expect(h.lastInput("greet") == [str("obiwan")])
        try h.complete("greet", output: str("hello obiwan"))
        #expect(h.variable("greeting") == str("hello obiwan"))
        #expect(h.status == .completed)
        #expect(h.allEffects.last == .wfRunTerminated(.completed))
    }

    @Test func runWfRefusesUndeclaredVariableWrongTypeAndMissingRequired() throws {
        let threads = ["entrypoint": linear([], variables: [variable("count", .int, required: true)])]
        let undeclared = #expect(throws: LHEngineError.self) {
            try Harness(threads: threads, variables: ["count": int(1), "nope": int(1)])
        }
        #expect(undeclared?.message.contains("'nope'") == true)
        let wrongType = #expect(throws: LHEngineError.self) {
            try Harness(threads: threads, variables: ["count": str("many")])
        }
        #expect(wrongType?.message.contains("'count'") == true && wrongType?.code == .invalidArgument)
        let missing = #expect(throws: LHEngineError.self) { try Harness(threads: threads) }
        #expect(missing?.message.contains("required") == true)
    }

    @Test func defaultValuesInitialiseVariables() throws {
        let h = try Harness(threads: [
            "entrypoint": linear([Step("n", nop)], variables: [variable("count", .int, default: int(7))])
        ])
        #expect(h.variable("count") == int(7))
    }

    @Test func firstEdgeWhoseConditionHoldsIsTakenAndLoopsRunViaEdges() throws {
        // entry → check: count < 3 → body (count += 1) → check; else → exit
        var thread = Littlehorse_ThreadSpec()
        thread.variableDefs = [variable("count", .int, default: int(0))]
        thread.nodes["entry"] = .with {
            $0.entrypoint = .init(); $0.outgoingEdges = [.with { $0.sinkNodeName = "check" }]
        }
        thread.nodes["check"] = .with {
            $0.nop = .init()
            $0.outgoingEdges = [
                .with {
                    $0.sinkNodeName = "body";
                    $0.legacyCondition = .with {
                        $0.comparator = .lessThan; $0.left = assign("count"); $0.right = literal(int(3))
                    }
                },
                .with { $0.sinkNodeName = "exit" },
            ]
        }
        thread.nodes["body"] = .with {
            $0.nop = .init()
            $0.outgoingEdges = [
                .with {
                    $0.sinkNodeName = "check"; $0.variableMutations = [mutation("count", .add, literal(int(1)))]
                }
            ]
        }
        thread.nodes["exit"] = .with { $0.exit = .init() }
        let h = try Harness(threads: ["entrypoint": thread])
        #expect(h.variable("count") == int(3))
        #expect(h.status == .completed)
    }

    @Test func noEdgeConditionHoldingFailsTheNodeWithVarSubError() throws {
        var thread = Littlehorse_ThreadSpec()
        thread.nodes["entry"] = .with {
            $0.entrypoint = .init()
            $0.outgoingEdges = [
                .with {
                    $0.sinkNodeName = "exit";
                    $0.legacyCondition = .with {
                        $0.comparator = .equals; $0.left = literal(int(1)); $0.right = literal(int(2))
                    }
                }
            ]
        }
        thread.nodes["exit"] = .with { $0.exit = .init() }
        let h = try Harness(threads: ["entrypoint": thread])
        #expect(h.status == .error)
        #expect(h.state.nodeRuns[NodeRunKey(thread: 0, position: 0)]?.failures.first?.failureName == "VAR_SUB_ERROR")
    }

    @Test func badMutationFailsTheNodeWithVarMutationError() throws {
        let h = try Harness(threads: [
            "entrypoint": linear(
                [Step("n", nop, mutations: [mutation("count", .divide, literal(int(0)))])],
                variables: [variable("count", .int, default: int(1))])
        ])
        #expect(h.status == .error)
        #expect(h.state.thread(0)?.errorMessage.contains("VAR_MUTATION_ERROR") == true)
        #expect(h.variable("count") == int(1), "no mutation after a failure")
    }

    @Test func mutationsFollowLittleHorsesTypeRules() throws {
        let h = try Harness(threads: [
            "entrypoint": linear(
                [
                    Step(
                        "n", nop,
                        mutations: [
                            mutation("arr", .add, literal(str("a"))),
                            mutation("arr", .extend, literal(jsonArr("[\"b\",\"c\"]"))),
                            mutation("arr", .removeIndex, literal(int(0))),
                            mutation("s", .add, literal(int(5))),
                            mutation("d", .multiply, literal(int(3))),
                            mutation("obj", .assign, literal(.with { $0.jsonObj = "{\"k\":1,\"j\":2}" })),
                            mutation("obj", .removeKey, literal(str("j"))),
                            mutation("i", .subtract, literal(int(10))),
                        ])
                ],
                variables: [
                    variable("arr", .jsonArr, default: jsonArr("[]")), variable("s", .str, default: str("x")),
                    variable("d", .double, default: .with { $0.double = 1.5 }), variable("obj", .jsonObj),
                    variable("i", .int, default: int(0)),
                ])
        ])
        #expect(h.status == .completed)
        #expect(h.variable("arr") == jsonArr("[\"b\",\"c\"]"))
        #expect(h.variable("s") == str("x5"))
        #expect(h.variable("d") == .with { $0.double = 4.5 })
        #expect(h.variable("obj") == .with { $0.jsonObj = "{\"k\":1}" })
        #expect(h.variable("i") == int(-10))
    }

    @Test func formatStringsJsonPathAndExpressionsAssignValues() throws {
        var fmt = Littlehorse_VariableAssignment()
        fmt.formatString = .with {
            $0.format = literal(str("hi {0}, size {1}"));
            $0.args = [
                assign("name"),
                .with {
                    $0.variableName = "doc"; $0.jsonPath = "$.size"
                },
            ]
        }
        var expr = Littlehorse_VariableAssignment()
        expr.expression = .with {
            $0.lhs = literal(int(2)); $0.mutationType = .multiply;
            $0.rhs = .with {
                $0.variableName = "doc"; $0.jsonPath = "$.size"
            }
        }
        let h = try Harness(
            threads: [
                "entrypoint": linear(
                    [Step("n", nop, mutations: [mutation("out", .assign, fmt), mutation("twice", .assign, expr)])],
                    variables: [
                        variable("name", .str, default: str("yoda")),
                        variable("doc", .jsonObj, default: .with { $0.jsonObj = "{\"size\":21}" }),
                        variable("out", .str), variable("twice", .int),
                    ])
            ])
        #expect(h.variable("out") == str("hi yoda, size 21"))
        #expect(h.variable("twice") == int(42))
    }

    @Test func failedTaskRetriesWithExponentialBackoffThenFailsWithTaskFailure() throws {
        var h = try Harness(
            threads: ["entrypoint": linear([Step("t", task("flaky", retries: 2, backoff: (1000, 2, 1500)))])],
            taskDefs: [taskDef("flaky")])
        var guid = try h.start("flaky")
        try h.report(guid, .taskFailed)
        #expect(h.queued.isEmpty, "the retry waits out its backoff")
        #expect(h.timers[.retryBackoff(taskGuid: guid, attempt: 1)] == h.now.addingTimeInterval(1.0))
        try h.advance(1.0)
        guid = try h.start("flaky")
        try h.report(guid, .taskFailed)
        #expect(
            h.timers[.retryBackoff(taskGuid: guid, attempt: 2)] == h.now.addingTimeInterval(1.5),
            "capped at max_delay_ms")
        try h.advance(1.5)
        guid = try h.start("flaky")
        try h.report(guid, .taskFailed)
        #expect(h.status == .error)
        #expect(h.state.taskRuns[guid]?.attempts.count == 3)
        #expect(h.state.currentNodeRun(of: 0)?.failures.first?.failureName == "TASK_FAILURE")
    }

    @Test func taskExceptionIsNotRetriedAndFailsWithTheExceptionsName() throws {
        var h = try Harness(
            threads: ["entrypoint": linear([Step("t", task("pay", retries: 3))])], taskDefs: [taskDef("pay")])
        let guid = try h.start("pay")
        try h.report(guid, .taskException, exception: ("card-declined", "no money"))
        #expect(h.status == .exception)
        #expect(h.state.taskRuns[guid]?.attempts.count == 1)
        #expect(h.state.currentNodeRun(of: 0)?.failures.first?.failureName == "card-declined")
    }

    @Test func attemptTimeoutRetriesAndFailsWithTimeout() throws {
        var h = try Harness(
            threads: ["entrypoint": linear([Step("t", task("slow", retries: 1))])], taskDefs: [taskDef("slow")])
        try h.start("slow")
        try h.advance(61)
        #expect(h.queued.count == 1, "retried after the attempt timed out")
        try h.start("slow")
        try h.advance(61)
        #expect(h.status == .error)
        #expect(h.state.currentNodeRun(of: 0)?.failures.first?.failureName == "TIMEOUT")
    }

    @Test func anAttemptLostInARestartIsRetriedAtOnceAndItsTimeoutCancelled() throws {
        var h = try Harness(
            threads: ["entrypoint": linear([Step("t", task("slow", retries: 1))])], taskDefs: [taskDef("slow")])
        let guid = try h.start("slow")
        #expect(h.timers[.attemptTimeout(taskGuid: guid, attempt: 0)] != nil)
        try h.apply(.attemptLost(taskGuid: guid, attempt: 0, reason: "not claimed"))
        #expect(h.queued[guid] == 1, "attempt 1 is queued at once, not after the 60 s timeout")
        #expect(h.timers[.attemptTimeout(taskGuid: guid, attempt: 0)] == nil)
        #expect(h.state.taskRuns[guid]?.attempts[0].status == .taskTimeout)
        #expect(h.state.taskRuns[guid]?.attempts[0].error.message == "not claimed")
        // The old holder's late report changes nothing; the new attempt's does.
        let before = h.state
        try h.report(guid, output: str("late"), attempt: 0)
        #expect(h.state == before)
        try h.complete("slow")
        #expect(h.status == .completed)
    }

    @Test func aLostAttemptWithoutRetriesFailsItsNodeWithTimeoutNamingTheReason() throws {
        var h = try Harness(
            threads: ["entrypoint": linear([Step("t", task("slow"))])], taskDefs: [taskDef("slow")])
        let guid = try h.start("slow")
        try h.apply(.attemptLost(taskGuid: guid, attempt: 0, reason: "not claimed within 10 s"))
        #expect(h.status == .error)
        let failure = h.state.currentNodeRun(of: 0)?.failures.first
        #expect(failure?.failureName == "TIMEOUT")
        #expect(failure?.message.contains("not claimed within 10 s") == true)
    }

    @Test func aLostAttemptThatWasReportedOrIsNotCurrentIsIgnored() throws {
        var h = try Harness(
            threads: ["entrypoint": linear([Step("t", task("a")), Step("u", task("b"))])],
            taskDefs: [taskDef("a"), taskDef("b")])
        let guid = try h.start("a")
        try h.report(guid)
        let before = h.state
        try h.apply(.attemptLost(taskGuid: guid, attempt: 0, reason: "late"))
        try h.apply(.attemptLost(taskGuid: guid, attempt: 3, reason: "no such attempt"))
        #expect(h.state == before)
    }

    @Test func lateOrRepeatedReportIsIgnored() throws {
        var h = try Harness(
            threads: ["entrypoint": linear([Step("t", task("a")), Step("u", task("b"))])],
            taskDefs: [taskDef("a"), taskDef("b")])
        let guid = try h.start("a")
        try h.report(guid, output: str("first"), attempt: 0)
        let before = h.state
        try h.report(guid, output: str("again"), attempt: 0)
        #expect(h.state == before)
        let unknown = #expect(throws: LHEngineError.self) { try h.report("nope", attempt: 0) }
        #expect(unknown?.code == .notFound)
    }

    @Test func sleepCompletesWhenItsTimerFires() throws {
        var h = try Harness(threads: ["entrypoint": linear([Step("s", sleep(5))])])
        #expect(h.status == .running)
        try h.advance(4)
        #expect(h.status == .running)
        try h.advance(1)
        #expect(h.status == .completed)
    }

    @Test func externalEventNodeConsumesAnEventPostedBeforeOrAfterItWaits() throws {
        var early = try Harness(
            threads: [
                "entrypoint": linear(
                    [Step("t", task("a")), Step("e", waitEvent("go"), mutations: [mutation("got", .assign)])],
                    variables: [variable("got", .str)])
            ],
            taskDefs: [taskDef("a")], events: ["go"])
        try early.post("go", str("early"))
        #expect(early.state.externalEvents.first?.claimed == false)
        try early.complete("a")
        #expect(early.variable("got") == str("early"))
        #expect(early.status == .completed)

        var late = try Harness(threads: ["entrypoint": linear([Step("e", waitEvent("go"))])], events: ["go"])
        #expect(late.status == .running)
        try late.post("go", str("late"))
        #expect(late.status == .completed)
        #expect(late.state.externalEvents.first?.claimed == true)
    }

    @Test func externalEventTimeoutFailsWithTimeout() throws {
        var h = try Harness(threads: ["entrypoint": linear([Step("e", waitEvent("go", timeout: 10))])], events: ["go"])
        try h.advance(10)
        #expect(h.status == .error)
        #expect(h.state.currentNodeRun(of: 0)?.failures.first?.failureName == "TIMEOUT")
    }

    @Test func failureHandlerCatchesAnExceptionAndTheThreadMovesPastTheFailedNode() throws {
        let threads = [
            "entrypoint": linear(
                [
                    Step("t", task("pay"), handlers: [catching("card-declined", with: "on-decline")]),
                    Step("after", task("ship")),
                ],
                variables: [variable("declined", .bool, default: .with { $0.bool = false })]),
            "on-decline": linear([
                Step("n", nop, mutations: [mutation("declined", .assign, literal(.with { $0.bool = true }))])
            ]),
        ]
        var h = try Harness(threads: threads, taskDefs: [taskDef("pay"), taskDef("ship")])
        let guid = try h.start("pay")
        try h.report(guid, .taskException, exception: ("card-declined", "no"))
        #expect(h.variable("declined") == .with { $0.bool = true })
        #expect(h.state.thread(1)?.type == .failureHandler)
        #expect(h.queued.count == 1, "moved on to 'after'")
        try h.complete("ship")
        #expect(h.status == .completed)
        #expect(h.state.nodeRuns[NodeRunKey(thread: 0, position: 1)]?.failures.first?.wasProperlyHandled == true)
    }

    @Test func unhandledFailuresEndTheThreadAsErrorOrException() throws {
        let exception = try Harness(threads: ["entrypoint": linear([Step("f", fail("gave-up"))])])
        #expect(exception.status == .exception)
        let error = try Harness(
            threads: [
                "entrypoint": linear(
                    [Step("f", task("missing-input", [assign("x")]))],
                    variables: [variable("x", .str, default: str("1"))])
            ],
            taskDefs: [taskDef("missing-input", [("n", .bool)])])
        #expect(error.status == .error, "a value that cannot be cast is a VAR_SUB_ERROR")
    }

    @Test func anyErrorHandlerDoesNotCatchExceptions() throws {
        let threads = [
            "entrypoint": linear([
                Step("f", fail("business-problem"), handlers: [catching(nil, with: "h", type: .failureTypeError)])
            ]),
            "h": linear([]),
        ]
        let h = try Harness(threads: threads)
        #expect(h.status == .exception)
        #expect(h.state.wfRun.threadRuns.count == 1)
    }

    @Test func childThreadReadsAndWritesItsParentsVariablesAndWaitForThreadsSeesIt() throws {
        let threads = [
            "entrypoint": linear(
                [
                    Step(
                        "spawn", spawn("child", ["greeting": literal(str("hi"))]),
                        mutations: [mutation("child-id", .assign)]),
                    Step("wait", waitThreads([assign("child-id")])),
                ],
                variables: [variable("total", .int, default: int(1)), variable("child-id", .int)]),
            "child": linear(
                [Step("t", task("work", [assign("greeting")]), mutations: [mutation("total", .add, literal(int(10)))])],
                variables: [variable("greeting", .str)]),
        ]
        var h = try Harness(threads: threads, taskDefs: [taskDef("work", [("g", .str)])])
        #expect(h.variable("child-id") == int(1))
        #expect(h.lastInput("work") == [str("hi")])
        #expect(h.currentNodeName(0) == "wait")
        try h.complete("work")
        #expect(h.variable("total") == int(11), "the child wrote its parent's variable")
        #expect(h.status == .completed)
    }

    @Test func failedChildFailsWaitForThreadsWithChildFailure() throws {
        let threads = [
            "entrypoint": linear(
                [
                    Step("spawn", spawn("child"), mutations: [mutation("child-id", .assign)]),
                    Step("wait", waitThreads([assign("child-id")])),
                ],
                variables: [variable("child-id", .int)]),
            "child": linear([Step("t", task("work"))]),
        ]
        var h = try Harness(threads: threads, taskDefs: [taskDef("work")])
        let guid = try h.start("work")
        try h.report(guid, .taskFailed)
        #expect(h.threadStatus(1) == .error)
        #expect(h.status == .error)
        #expect(h.state.currentNodeRun(of: 0)?.failures.first?.failureName == "CHILD_FAILURE")
    }

    @Test func perThreadFailureHandlerOfWaitForThreadsHandlesAFailedChild() throws {
        var wait = Littlehorse_WaitForThreadsNode()
        wait.threads.threads = [.with { $0.threadRunNumber = assign("c") }]
        wait.perThreadFailureHandlers = [catching("child-failed", with: "on-child")]
        let threads = [
            "entrypoint": linear(
                [
                    Step("spawn", spawn("child"), mutations: [mutation("c", .assign)]),
                    Step("wait", .waitForThreads(wait)),
                ],
                variables: [variable("c", .int), variable("seen", .str)]),
            "child": linear([Step("f", fail("child-failed", "the child gave up"))]),
            "on-child": linear([Step("n", nop, mutations: [mutation("seen", .assign, literal(str("handled")))])]),
        ]
        let h = try Harness(threads: threads)
        #expect(h.threadStatus(1) == .exception)
        #expect(h.state.thread(2)?.type == .failureHandler && h.state.thread(2)?.parentThreadID == 0)
        #expect(h.variable("seen") == str("handled"))
        #expect(h.status == .completed, "the handled child does not fail the WAIT_FOR_THREADS node")
        #expect(h.state.thread(0)?.handledFailedChildren == [1])
    }

    @Test func kitchenSinkFixtureOfThePythonSDKValidatesAndRuns() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("LHProtoTests/Fixtures/kitchen-sink.json")
        let request = try Littlehorse_PutWfSpecRequest(jsonUTF8Data: Data(contentsOf: url))
        var h = try Harness(
            threads: request.threadSpecs, taskDefs: [taskDef("greet", [("who", .str)])], events: ["go-on"],
            variables: ["name": str("yoda")])
        try h.complete("greet", output: .with { $0.jsonObj = #"{"size": 3}"# })
        try h.advance(5)
        // The loop ran, the small branch doubled the ratio, the child failed and was handled.
        #expect(h.variable("count") == int(3))
        #expect(h.variable("ratio") == .with { $0.double = 3.0 })
        try h.complete("greet")
        #expect(h.variable("flag") == .with { $0.bool = false }, "the per-thread handler of the child's exception ran")
        try h.complete("greet")
        try h.post("go-on", str("x"))
        #expect(h.status == .exception)
        #expect(h.state.thread(0)?.errorMessage.contains("give-up") == true)
    }

    @Test func aRunawayLoopFailsWithInternalError() throws {
        var thread = Littlehorse_ThreadSpec()
        thread.nodes["entry"] = .with {
            $0.entrypoint = .init(); $0.outgoingEdges = [.with { $0.sinkNodeName = "spin" }]
        }
        thread.nodes["spin"] = .with {
            $0.nop = .init(); $0.outgoingEdges = [.with { $0.sinkNodeName = "spin" }]
        }
        let h = try Harness(threads: ["entrypoint": thread], validate: false)
        #expect(h.status == .error)
        #expect(h.state.thread(0)?.errorMessage.contains("INTERNAL_ERROR") == true)
    }
}
