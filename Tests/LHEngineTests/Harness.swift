import Foundation
import LHProto
import SwiftProtobuf
import Testing

@testable import LHEngine

typealias Node = Littlehorse_Node
typealias VV = Littlehorse_VariableValue

// MARK: - Building WfSpecs in tests

func assign(_ variable: String) -> Littlehorse_VariableAssignment { .with { $0.variableName = variable } }
func literal(_ v: VV) -> Littlehorse_VariableAssignment { .with { $0.literalValue = v } }
func str(_ s: String) -> VV { .with { $0.str = s } }
func int(_ i: Int64) -> VV { .with { $0.int = i } }
func jsonArr(_ s: String) -> VV { .with { $0.jsonArr = s } }

func task(
    _ name: String, _ inputs: [Littlehorse_VariableAssignment] = [], retries: Int32 = 0,
    backoff: (Int32, Float, Int64)? = nil
) -> Node.OneOf_Node {
    .task(
        .with {
            $0.taskDefID.name = name
            $0.variables = inputs
            $0.retries = retries
            if let backoff {
                $0.exponentialBackoff = .with {
                    $0.baseIntervalMs = backoff.0; $0.multiplier = backoff.1; $0.maxDelayMs = backoff.2
                }
            }
        })
}
func waitEvent(_ name: String, timeout: Int64? = nil) -> Node.OneOf_Node {
    .externalEvent(
        .with {
            $0.externalEventDefID.name = name
            if let timeout { $0.timeoutSeconds = literal(int(timeout)) }
        })
}
func sleep(_ seconds: Int64) -> Node.OneOf_Node { .sleep(.with { $0.rawSeconds = literal(int(seconds)) }) }
let nop = Node.OneOf_Node.nop(.init())
func fail(_ name: String, _ message: String = "failed on purpose") -> Node.OneOf_Node {
    .exit(
        .with {
            $0.failureDef = .with {
                $0.failureName = name; $0.message = message
            }
        })
}
func spawn(_ thread: String, _ vars: [String: Littlehorse_VariableAssignment] = [:]) -> Node.OneOf_Node {
    .startThread(
        .with {
            $0.threadSpecName = thread; $0.variables = vars
        })
}
func waitThreads(_ numbers: [Littlehorse_VariableAssignment]) -> Node.OneOf_Node {
    .waitForThreads(.with { $0.threads.threads = numbers.map { n in .with { $0.threadRunNumber = n } } })
}
func mutation(_ lhs: String, _ op: Littlehorse_VariableMutationType, _ rhs: Littlehorse_VariableAssignment? = nil)
    -> Littlehorse_VariableMutation
{
    .with {
        $0.lhsName = lhs
        $0.operation = op
        if let rhs { $0.rhsAssignment = rhs } else { $0.nodeOutput = .init() }
    }
}
func variable(_ name: String, _ type: Littlehorse_VariableType, default value: VV? = nil, required: Bool = false)
    -> Littlehorse_ThreadVarDef
{
    .with {
        $0.varDef.name = name
        $0.varDef.typeDef.primitiveType = type
        if let value { $0.varDef.defaultValue = value }
        $0.required = required
    }
}

/// A step of a linear thread: a node, and the mutations on its edge to the next.
struct Step {
    var name: String
    var kind: Node.OneOf_Node
    var mutations: [Littlehorse_VariableMutation] = []
    var handlers: [Littlehorse_FailureHandlerDef] = []
    init(
        _ name: String, _ kind: Node.OneOf_Node, mutations: [Littlehorse_VariableMutation] = [],
        handlers: [Littlehorse_FailureHandlerDef] = []
    ) {
        self.name = name
        self.kind = kind
        self.mutations = mutations
        self.handlers = handlers
    }
}

/// ENTRYPOINT → steps… → EXIT (unless the last step is an EXIT).
func linear(_ steps: [Step], variables: [Littlehorse_ThreadVarDef] = [], interrupts: [(String, String)] = [])
    -> Littlehorse_ThreadSpec
{
    var thread = Littlehorse_ThreadSpec()
    thread.variableDefs = variables
    thread.interruptDefs = interrupts.map { e, h in
        .with {
            $0.externalEventDefID.name = e; $0.handlerSpecName = h
        }
    }
    var all = [Step("0-entrypoint", .entrypoint(.init()))] + steps
    if case .exit? = steps.last?.kind {} else { all.append(Step("exit", .exit(.init()))) }
    for (i, step) in all.enumerated() {
        var node = Node()
        node.node = step.kind
        node.failureHandlers = step.handlers
        if i + 1 < all.count {
            node.outgoingEdges = [
                .with {
                    $0.sinkNodeName = all[i + 1].name; $0.variableMutations = step.mutations
                }
            ]
        }
        thread.nodes[step.name] = node
    }
    return thread
}

func catching(_ failure: String?, with handler: String, type: Littlehorse_FailureHandlerDef.LHFailureType? = nil)
    -> Littlehorse_FailureHandlerDef
{
    .with {
        $0.handlerSpecName = handler
        if let failure { $0.specificFailure = failure } else if let type { $0.anyFailureOfType = type }
    }
}

func taskDef(_ name: String, _ inputs: [(String, Littlehorse_VariableType)] = []) -> Littlehorse_TaskDef {
    .with { d in
        d.id.name = name
        d.inputVars = inputs.map { n, t in
            .with {
                $0.name = n; $0.typeDef.primitiveType = t
            }
        }
    }
}

// MARK: - Driving a WfRun

/// Drives one WfRun through the engine the way the server would: keeps the
/// task queue and timers from the effects, and a clock.
struct Harness {
    var context: LHEngineContext
    var state: WfRunState
    var now = Date(timeIntervalSince1970: 1_700_000_000)
    var queued: [String: Int32] = [:]  // task guid → attempt, waiting for a worker
    var inFlight: [String: Int32] = [:]  // handed to a worker
    var timers: [LHTimerKey: Date] = [:]
    var allEffects: [LHEffect] = []
    var eventCount = 0

    init(
        threads: [String: Littlehorse_ThreadSpec], entry: String = "entrypoint", taskDefs: [Littlehorse_TaskDef] = [],
        events: [String] = [], variables: [String: VV] = [:], validate: Bool = true
    ) throws {
        var request = Littlehorse_PutWfSpecRequest()
        request.name = "test-wf"
        request.threadSpecs = threads
        request.entrypointThreadName = entry
        let defs = Dictionary(taskDefs.map { ($0.id.name, $0) }, uniquingKeysWith: { a, _ in a })
        let spec =
            validate
            ? try WorkflowEngine.validate(request, metadata: .init(taskDefs: defs, externalEventDefs: Set(events)))
            : Littlehorse_WfSpec.with {
                $0.id.name = "test-wf"; $0.threadSpecs = threads; $0.entrypointThreadName = entry
            }
        context = LHEngineContext(spec: spec, taskDefs: defs)
        var run = Littlehorse_RunWfRequest()
        run.wfSpecName = "test-wf"
        run.variables = variables
        let (state, effects) = try WorkflowEngine.runWf(run, id: "wf-1", context: context, now: now)
        self.state = state
        absorb(effects)
    }

    mutating func absorb(_ effects: [LHEffect]) {
        allEffects += effects
        for effect in effects {
            switch effect {
            case .dispatchTask(let guid, _, let attempt): queued[guid] = attempt
            case .withdrawTask(let guid, _): queued[guid] = nil
            case .scheduleTimer(let at, let key): timers[key] = at
            case .cancelTimer(let key): timers[key] = nil
            case .wfRunTerminated: break
            }
        }
    }

    mutating func apply(_ command: LHCommand) throws {
        absorb(try WorkflowEngine.apply(command, to: &state, context: context, now: now))
    }

    /// Hands the queued TaskRun of `taskDef` to a worker.
    @discardableResult
    mutating func start(_ taskDef: String) throws -> String {
        guard let (guid, attempt) = queued.first(where: { state.taskRuns[$0.key]?.taskDefID.name == taskDef }) else {
            throw LHEngineError(.notFound, "no queued TaskRun of \(taskDef); queued: \(queued)")
        }
        queued[guid] = nil
        try apply(.taskStarted(taskGuid: guid, attempt: attempt, workerId: "worker-1"))
        inFlight[guid] = attempt
        return guid
    }

    mutating func report(
        _ guid: String, _ status: Littlehorse_TaskStatus = .taskSuccess, output: VV? = nil,
        exception: (String, String)? = nil, attempt: Int32? = nil
    ) throws {
        var r = Littlehorse_ReportTaskRun()
        r.taskRunID.wfRunID.id = state.id
        r.taskRunID.taskGuid = guid
        r.status = status
        r.attemptNumber = attempt ?? inFlight[guid] ?? 0
        if let output { r.output = output }
        if let exception {
            r.exception = .with {
                $0.name = exception.0; $0.message = exception.1
            }
        }
        if status == .taskFailed {
            r.error = .with {
                $0.type = .taskFailure; $0.message = "boom"
            }
        }
        inFlight[guid] = nil
        try apply(.reportTask(r))
    }

    /// Starts the queued TaskRun of `taskDef` and reports success.
    mutating func complete(_ taskDef: String, output: VV? = nil) throws {
        let guid = try start(taskDef)
        try report(guid, output: output)
    }

    mutating func post(_ def: String, _ content: VV, thread: Int32? = nil) throws {
        eventCount += 1
        var e = Littlehorse_ExternalEvent()
        e.id.wfRunID.id = state.id
        e.id.externalEventDefID.name = def
        e.id.guid = "event-\(eventCount)"
        e.createdAt = Google_Protobuf_Timestamp(date: now)
        e.content = content
        if let thread { e.threadRunNumber = thread }
        try apply(.putExternalEvent(e))
    }

    /// Moves the clock and fires the timers that fall due.
    mutating func advance(_ seconds: Double) throws {
        now = now.addingTimeInterval(seconds)
        for (key, at) in timers.sorted(by: { $0.value < $1.value }) where at <= now {
            timers[key] = nil
            try apply(.timerFired(key))
        }
    }

    func threadStatus(_ n: Int32) -> Littlehorse_LHStatus { state.thread(n)?.status ?? .UNRECOGNIZED(-1) }
    func nodeStatus(_ n: Int32) -> Littlehorse_LHStatus { state.currentNodeRun(of: n)?.status ?? .UNRECOGNIZED(-1) }
    func currentNodeName(_ n: Int32) -> String { state.currentNodeRun(of: n)?.nodeName ?? "" }
    var status: Littlehorse_LHStatus { state.wfRun.status }
    func variable(_ name: String, thread: Int32 = 0) -> VV? { state.variable(name, thread: thread) }
    func lastInput(_ taskDef: String) -> [VV] {
        state.taskRuns.values.filter { $0.taskDefID.name == taskDef }.max(by: {
            $0.scheduledAt.date < $1.scheduledAt.date
                || ($0.scheduledAt.date == $1.scheduledAt.date && $0.id.taskGuid < $1.id.taskGuid)
        })?.inputVariables.map(\.value) ?? []
    }
}
