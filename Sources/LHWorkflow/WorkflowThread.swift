import Foundation
import LHProto

/// One ThreadSpec being written. Nodes are named as LittleHorse's SDKs name
/// them (`<n>-<name>-<KIND>`), and a mutation rides on the edge that leaves
/// the node before it.
public final class WorkflowThread {
    /// The name of the variable that receives an interrupt's or a failure's
    /// content in a handler thread.
    public static let handlerInputVar = "INPUT"

    let workflow: Workflow
    public let name: String
    var spec = Littlehorse_ThreadSpec()
    var lastNode: String
    var counter = 0
    /// Mutations waiting for the next edge out of `lastNode`.
    var pendingMutations: [Littlehorse_VariableMutation] = []
    var pendingCondition: Littlehorse_LegacyEdgeCondition?

    init(workflow: Workflow, name: String) {
        self.workflow = workflow
        self.name = name
        lastNode = "0-entrypoint-ENTRYPOINT"
        counter = 1
        spec.nodes[lastNode] = .with { $0.entrypoint = .init() }
    }

    func finish() -> Littlehorse_ThreadSpec {
        if !isTerminated { addNode("exit", "EXIT", .exit(.init())) }
        return spec
    }

    var isTerminated: Bool {
        if case .exit? = spec.nodes[lastNode]?.node { return true }
        return false
    }

    @discardableResult
    func addNode(_ label: String, _ kind: String, _ node: Littlehorse_Node.OneOf_Node) -> String {
        let nodeName = "\(counter)-\(label)-\(kind)"
        counter += 1
        var edge = Littlehorse_Edge()
        edge.sinkNodeName = nodeName
        edge.variableMutations = pendingMutations
        if let c = pendingCondition { edge.legacyCondition = c }
        pendingMutations = []
        pendingCondition = nil
        spec.nodes[lastNode]!.outgoingEdges.append(edge)
        spec.nodes[nodeName] = .with { $0.node = node }
        lastNode = nodeName
        return nodeName
    }

    // MARK: Variables

    public func declare(
        _ name: String, _ type: Littlehorse_VariableType, default value: Littlehorse_VariableValue? = nil,
        required: Bool = false
    ) -> WfRunVariable {
        var def = Littlehorse_ThreadVarDef()
        def.varDef.name = name
        def.varDef.typeDef.primitiveType = type
        if let value { def.varDef.defaultValue = value }
        def.required = required
        def.accessLevel = .privateVar
        spec.variableDefs.append(def)
        return WfRunVariable(name: name, type: type)
    }
    public func declareStr(_ name: String) -> WfRunVariable { declare(name, .str) }
    public func declareInt(_ name: String) -> WfRunVariable { declare(name, .int) }
    public func declareDouble(_ name: String) -> WfRunVariable { declare(name, .double) }
    public func declareBool(_ name: String) -> WfRunVariable { declare(name, .bool) }
    public func declareJsonObj(_ name: String) -> WfRunVariable { declare(name, .jsonObj) }
    public func declareJsonArr(_ name: String) -> WfRunVariable { declare(name, .jsonArr) }
    public func declareBytes(_ name: String) -> WfRunVariable { declare(name, .bytes) }

    // MARK: Nodes

    /// A TASK node running TaskDef `taskDef` with `inputs`.
    @discardableResult
    public func execute(_ taskDef: String, _ inputs: any WorkflowValue..., options: TaskOptions = .init()) -> NodeOutput
    {
        var task = Littlehorse_TaskNode()
        task.taskDefID.name = taskDef
        task.variables = inputs.map(\.assignment)
        task.retries = options.retries
        task.timeoutSeconds = options.timeoutSeconds
        if let b = options.exponentialBackoff {
            task.exponentialBackoff = .with {
                $0.baseIntervalMs = b.0; $0.multiplier = b.1; $0.maxDelayMs = b.2
            }
        }
        return NodeOutput(nodeName: addNode(taskDef, "TASK", .task(task)))
    }

    /// An EXTERNAL_EVENT node waiting for `eventDef`.
    @discardableResult
    public func waitForEvent(_ eventDef: String, timeoutSeconds: Int? = nil) -> NodeOutput {
        var node = Littlehorse_ExternalEventNode()
        node.externalEventDefID.name = eventDef
        if let timeoutSeconds { node.timeoutSeconds = timeoutSeconds.assignment }
        return NodeOutput(nodeName: addNode(eventDef, "EXTERNAL_EVENT", .externalEvent(node)))
    }

    /// A SLEEP node.
    public func sleepSeconds(_ seconds: any WorkflowValue) {
        addNode("sleep", "SLEEP", .sleep(.with { $0.rawSeconds = seconds.assignment }))
    }

    /// Changes a variable when the thread leaves the current node.
    public func mutate(
        _ variable: WfRunVariable, _ operation: Littlehorse_VariableMutationType, _ value: any WorkflowValue
    ) {
        var m = Littlehorse_VariableMutation()
        m.lhsName = variable.name
        if let path = variable.jsonPath { m.lhsJsonPath = path }
        m.operation = operation
        m.rhsAssignment = value.assignment
        pendingMutations.append(m)
    }

    /// Registers `handler` as this thread's interrupt handler for `eventDef`.
    public func registerInterruptHandler(_ eventDef: String, _ handler: @escaping (WorkflowThread) -> Void) {
        let threadName = workflow.addThread("interrupt-\(eventDef)", handler)
        spec.interruptDefs.append(
            .with {
                $0.externalEventDefID.name = eventDef; $0.handlerSpecName = threadName
            })
    }

    /// Ends the thread with a business EXCEPTION (kebab-case name).
    public func fail(_ failureName: String, _ message: String) {
        addNode(
            "exit", "EXIT",
            .exit(
                .with {
                    $0.failureDef = .with {
                        $0.failureName = failureName; $0.message = message
                    }
                }))
    }

    /// Ends the thread successfully here.
    public func complete() {
        addNode("complete", "EXIT", .exit(.init()))
    }

    public func condition(_ lhs: any WorkflowValue, _ comparator: Littlehorse_Comparator, _ rhs: any WorkflowValue)
        -> WorkflowCondition
    {
        WorkflowCondition(
            condition: .with {
                $0.comparator = comparator; $0.left = lhs.assignment; $0.right = rhs.assignment
            })
    }

    /// Runs `then` when `condition` holds, else `otherwise` (if any).
    public func doIf(
        _ condition: WorkflowCondition, _ then: (WorkflowThread) -> Void,
        else otherwise: ((WorkflowThread) -> Void)? = nil
    ) {
        let start = addNode("nop", "NOP", .nop(.init()))
        pendingCondition = condition.condition
        then(self)
        let thenEnd = lastNode
        let thenMutations = pendingMutations
        // Set when the branch added no node: its condition is still unused.
        let thenCondition = pendingCondition
        pendingMutations = []
        lastNode = start
        pendingCondition = condition.negated.condition
        otherwise?(self)
        let join = addNode("nop", "NOP", .nop(.init()))
        if thenEnd == start {
            spec.nodes[start]!.outgoingEdges.append(
                .with {
                    $0.sinkNodeName = join
                    $0.variableMutations = thenMutations
                    if let thenCondition { $0.legacyCondition = thenCondition }
                })
        } else if spec.nodes[thenEnd].map({ if case .exit? = $0.node { false } else { true } }) == true {
            spec.nodes[thenEnd]!.outgoingEdges.append(
                .with {
                    $0.sinkNodeName = join; $0.variableMutations = thenMutations
                })
        }
    }

    /// Runs `body` while `condition` holds.
    public func doWhile(_ condition: WorkflowCondition, _ body: (WorkflowThread) -> Void) {
        let start = addNode("nop", "NOP", .nop(.init()))
        pendingCondition = condition.condition
        body(self)
        let end = addNode("nop", "NOP", .nop(.init()))
        spec.nodes[end]!.outgoingEdges.append(
            .with {
                $0.sinkNodeName = start; $0.variableMutations = pendingMutations
            })
        pendingMutations = []
        lastNode = start
        pendingCondition = condition.negated.condition
        addNode("nop", "NOP", .nop(.init()))
    }

    /// Starts a child thread; its number lands in an INT variable.
    public func spawnThread(
        _ threadName: String, inputs: [String: any WorkflowValue] = [:], _ body: @escaping (WorkflowThread) -> Void
    ) -> WfRunVariable {
        let name = workflow.addThread(threadName, body)
        let node = addNode(
            threadName, "START_THREAD",
            .startThread(
                .with { s in
                    s.threadSpecName = name
                    s.variables = inputs.mapValues(\.assignment)
                }))
        let v = declare(node, .int)
        var m = Littlehorse_VariableMutation()
        m.lhsName = v.name
        m.operation = .assign
        m.nodeOutput = .init()
        pendingMutations.append(m)
        return v
    }

    /// Waits for child threads.
    @discardableResult
    public func waitForThreads(_ threads: WfRunVariable..., strategy: Littlehorse_WaitForThreadsStrategy = .waitForAll)
        -> NodeOutput
    {
        let node = Littlehorse_WaitForThreadsNode.with { w in
            w.threads.threads = threads.map { t in .with { $0.threadRunNumber = t.assignment } }
            w.strategy = strategy
        }
        return NodeOutput(nodeName: addNode("threads", "WAIT_FOR_THREADS", .waitForThreads(node)))
    }

    /// Handles a named exception of `node` with a handler thread.
    public func handleException(
        _ node: NodeOutput, _ exceptionName: String? = nil, _ handler: @escaping (WorkflowThread) -> Void
    ) {
        addHandler(node, handler) { h in
            if let exceptionName {
                h.specificFailure = exceptionName
            } else {
                h.anyFailureOfType = .failureTypeException
            }
        }
    }

    /// Handles an ERROR (a system failure) of `node`.
    public func handleError(
        _ node: NodeOutput, _ errorName: String? = nil, _ handler: @escaping (WorkflowThread) -> Void
    ) {
        addHandler(node, handler) { h in
            if let errorName { h.specificFailure = errorName } else { h.anyFailureOfType = .failureTypeError }
        }
    }

    /// Handles any failure of `node`.
    public func handleAnyFailure(_ node: NodeOutput, _ handler: @escaping (WorkflowThread) -> Void) {
        addHandler(node, handler) { _ in }
    }

    private func addHandler(
        _ node: NodeOutput, _ handler: @escaping (WorkflowThread) -> Void,
        _ configure: (inout Littlehorse_FailureHandlerDef) -> Void
    ) {
        let threadName = workflow.addThread(
            "exn-handler-\(node.nodeName)-\(spec.nodes[node.nodeName]?.failureHandlers.count ?? 0)", handler)
        var def = Littlehorse_FailureHandlerDef()
        def.handlerSpecName = threadName
        configure(&def)
        spec.nodes[node.nodeName]?.failureHandlers.append(def)
    }
}
