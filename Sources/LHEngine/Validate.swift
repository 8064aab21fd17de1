import Foundation
import LHProto

/// Metadata a WfSpec refers to, for validation.
public struct LHMetadataLookup: Sendable {
    public var taskDefs: [String: Littlehorse_TaskDef]
    public var externalEventDefs: Set<String>
    public init(taskDefs: [String: Littlehorse_TaskDef], externalEventDefs: Set<String>) {
        self.taskDefs = taskDefs
        self.externalEventDefs = externalEventDefs
    }
}

extension WorkflowEngine {
    /// User-defined names (WfSpec, TaskDef, ExternalEventDef, variable and
    /// failure names) are kebab-case.
    public static func isKebabCase(_ name: String) -> Bool {
        guard let first = name.first, let last = name.last, !name.isEmpty else { return false }
        func ok(_ c: Character) -> Bool { (c >= "a" && c <= "z") || (c >= "0" && c <= "9") }
        return ok(first) && ok(last) && name.allSatisfy { ok($0) || $0 == "-" }
    }

    /// System names (`INPUT`) are UPPER_UNDERSCORE_CASE.
    static let systemVariableNames: Set<String> = ["INPUT"]

    /// LittleHorse's SDKs name the variable that holds a node's output after
    /// the node (`8-child-thread-START_THREAD`): kebab-case, then the node kind.
    static func isSDKNodeVariableName(_ name: String) -> Bool {
        let kinds = [
            "START_THREAD", "START_MULTIPLE_THREADS", "TASK", "EXTERNAL_EVENT", "WAIT_FOR_THREADS", "RUN_CHILD_WF",
        ]
        for kind in kinds where name.hasSuffix("-" + kind) {
            return isKebabCase(String(name.dropLast(kind.count + 1)))
        }
        return false
    }

    /// Checks a PutWfSpecRequest and returns the WfSpec body it describes (id
    /// version fields left for the caller). Every refusal is INVALID_ARGUMENT
    /// naming the thread, node, edge or variable.
    public static func validate(_ request: Littlehorse_PutWfSpecRequest, metadata: LHMetadataLookup) throws
        -> Littlehorse_WfSpec
    {
        var v = Validator(request: request, metadata: metadata)
        try v.run()
        var spec = Littlehorse_WfSpec()
        spec.id.name = request.name
        spec.threadSpecs = request.threadSpecs
        spec.entrypointThreadName = request.entrypointThreadName
        spec.status = .active
        if request.hasRetentionPolicy { spec.retentionPolicy = request.retentionPolicy }
        spec.frozenVariables = request.threadSpecs[request.entrypointThreadName]?.variableDefs ?? []
        return spec
    }
}

private struct Validator {
    let request: Littlehorse_PutWfSpecRequest
    let metadata: LHMetadataLookup
    /// Declared type of each variable name; nil when threads declare it with
    /// different types (then it is not checked statically).
    let variableTypes: [String: Littlehorse_VariableType?]

    init(request: Littlehorse_PutWfSpecRequest, metadata: LHMetadataLookup) {
        self.request = request
        self.metadata = metadata
        var types: [String: Littlehorse_VariableType?] = [:]
        for thread in request.threadSpecs.values {
            for def in thread.variableDefs {
                let t = def.varDef.declaredType
                if let existing = types[def.varDef.name], existing != t {
                    types[def.varDef.name] = .some(nil)
                } else {
                    types[def.varDef.name] = t
                }
            }
        }
        variableTypes = types
    }

    /// Whether a value of type `from` can always, or may, be cast to `to`:
    /// the same type, numbers to numbers, anything to STR, STR to anything.
    static func assignable(_ from: Littlehorse_VariableType, to: Littlehorse_VariableType) -> Bool {
        from == to || to == .str || from == .str || (from == .int && to == .double) || (from == .double && to == .int)
    }

    func fail(_ message: String) -> LHEngineError { .invalid(message) }

    mutating func run() throws {
        guard WorkflowEngine.isKebabCase(request.name) else {
            throw fail("WfSpec name '\(request.name)' must be kebab-case (lowercase letters, digits and '-')")
        }
        guard !request.threadSpecs.isEmpty else { throw fail("WfSpec '\(request.name)' has no ThreadSpecs") }
        guard request.threadSpecs[request.entrypointThreadName] != nil else {
            throw fail(
                "entrypoint thread '\(request.entrypointThreadName)' is not one of the ThreadSpecs (\(request.threadSpecs.keys.sorted().joined(separator: ", ")))"
            )
        }
        if request.hasParentWfSpec { throw fail("parent_wf_spec is not implemented by this engine") }
        for name in request.threadSpecs.keys.sorted() {
            try checkThread(name, request.threadSpecs[name]!)
        }
        try checkInterrupts()
        try checkScopes()
    }

    func checkThread(_ name: String, _ thread: Littlehorse_ThreadSpec) throws {
        let entrypoints = thread.nodes.filter {
            if case .entrypoint? = $0.value.node { return true } else { return false }
        }
        guard entrypoints.count == 1 else {
            throw fail("thread '\(name)' must have exactly one ENTRYPOINT node, has \(entrypoints.count)")
        }
        if thread.hasRetentionPolicy {
            throw fail("thread '\(name)': retention_policy is not implemented by this engine")
        }
        var seen = Set<String>()
        for def in thread.variableDefs {
            let v = def.varDef.name
            if !(WorkflowEngine.isKebabCase(v) || WorkflowEngine.systemVariableNames.contains(v)
                || WorkflowEngine.isSDKNodeVariableName(v))
            {
                throw fail(
                    "variable '\(v)' of thread '\(name)' must be kebab-case (system names such as INPUT are UPPER_UNDERSCORE)"
                )
            }
            guard seen.insert(v).inserted else { throw fail("variable '\(v)' is declared twice in thread '\(name)'") }
            guard def.varDef.declaredType != nil else { throw fail("variable '\(v)' of thread '\(name)' has no type") }
            if def.varDef.hasTypeDef, def.varDef.typeDef.definedType == nil {
                throw fail("variable '\(v)' of thread '\(name)' uses a type this engine does not implement")
            }
            if def.varDef.hasDefaultValue, !def.varDef.defaultValue.isNull, let t = def.varDef.declaredType {
                do { _ = try def.varDef.defaultValue.cast(to: t) } catch {
                    throw fail(
                        "default value of variable '\(v)' in thread '\(name)' does not fit its type \(t.name): \(error)"
                    )
                }
            }
            if !def.jsonIndexes.isEmpty {
                throw fail("variable '\(v)' of thread '\(name)': json_indexes are not implemented by this engine")
            }
        }
        for nodeName in thread.nodes.keys.sorted() {
            let node = thread.nodes[nodeName]!
            let at = "node '\(nodeName)' of thread '\(name)'"
            switch node.node {
            case nil:
                throw fail("\(at) has no node kind")
            case .userTask:
                throw fail("\(at) is a USER_TASK node, which this engine does not implement")
            case .startMultipleThreads:
                throw fail("\(at) is a START_MULTIPLE_THREADS node, which this engine does not implement")
            case .throwEvent:
                throw fail("\(at) is a THROW_EVENT node, which this engine does not implement")
            case .waitForCondition:
                throw fail("\(at) is a WAIT_FOR_CONDITION node, which this engine does not implement")
            case .task(let task):
                try checkTask(at, task)
            case .externalEvent(let e):
                guard metadata.externalEventDefs.contains(e.externalEventDefID.name) else {
                    throw fail("\(at) waits for ExternalEventDef '\(e.externalEventDefID.name)', which does not exist")
                }
                if e.hasCorrelationKey { throw fail("\(at): correlation_key is not implemented by this engine") }
            case .startThread(let s):
                guard request.threadSpecs[s.threadSpecName] != nil else {
                    throw fail("\(at) starts thread '\(s.threadSpecName)', which is not a ThreadSpec of this WfSpec")
                }
                let childVars = Set(request.threadSpecs[s.threadSpecName]!.variableDefs.map(\.varDef.name))
                for key in s.variables.keys.sorted() where !childVars.contains(key) {
                    throw fail("\(at) passes variable '\(key)', which thread '\(s.threadSpecName)' does not declare")
                }
            case .waitForThreads(let w):
                for handler in w.perThreadFailureHandlers where request.threadSpecs[handler.handlerSpecName] == nil {
                    throw fail(
                        "per-thread failure handler of \(at) names thread '\(handler.handlerSpecName)', which is not a ThreadSpec of this WfSpec"
                    )
                }
            case .exit(let e):
                if case .failureDef(let f)? = e.result {
                    guard !Failure.systemErrorNames.contains(f.failureName) else {
                        throw fail("\(at) fails with '\(f.failureName)', a reserved system error name")
                    }
                    guard WorkflowEngine.isKebabCase(f.failureName) else {
                        throw fail("\(at) fails with '\(f.failureName)': failure names must be kebab-case")
                    }
                }
            case .entrypoint, .nop, .sleep:
                break
            }
            if case .exit? = node.node {
                if !node.outgoingEdges.isEmpty { throw fail("\(at) is an EXIT node but has outgoing edges") }
            } else if node.outgoingEdges.isEmpty {
                throw fail("\(at) has no outgoing edge (only EXIT nodes may end a thread)")
            }
            for (i, edge) in node.outgoingEdges.enumerated() {
                guard thread.nodes[edge.sinkNodeName] != nil else {
                    throw fail(
                        "edge \(i) of \(at) goes to node '\(edge.sinkNodeName)', which does not exist in thread '\(name)'"
                    )
                }
            }
            for handler in node.failureHandlers {
                guard request.threadSpecs[handler.handlerSpecName] != nil else {
                    throw fail(
                        "failure handler of \(at) names thread '\(handler.handlerSpecName)', which is not a ThreadSpec of this WfSpec"
                    )
                }
                if case .specificFailure(let f)? = handler.failureToCatch,
                    !(WorkflowEngine.isKebabCase(f) || Failure.systemErrorNames.contains(f))
                {
                    throw fail(
                        "failure handler of \(at) catches '\(f)', which is neither kebab-case nor a system error")
                }
            }
        }
    }

    func checkTask(_ at: String, _ task: Littlehorse_TaskNode) throws {
        guard case .taskDefID(let id)? = task.taskToExecute else {
            throw fail("\(at): dynamic tasks are not implemented by this engine")
        }
        guard let def = metadata.taskDefs[id.name] else {
            throw fail("\(at) runs TaskDef '\(id.name)', which does not exist")
        }
        guard task.variables.count == def.inputVars.count else {
            throw fail(
                "\(at) passes \(task.variables.count) input(s) to TaskDef '\(id.name)', which takes \(def.inputVars.count) (\(def.inputVars.map(\.name).joined(separator: ", ")))"
            )
        }
        for (i, a) in task.variables.enumerated() {
            guard let t = def.inputVars[i].declaredType else { continue }
            if case .literalValue(let v)? = a.source, !v.isNull {
                do { _ = try v.cast(to: t) } catch {
                    throw fail(
                        "\(at): input \(i) ('\(def.inputVars[i].name)') of TaskDef '\(id.name)' is \(t.name) but the literal is \(v.typeName)"
                    )
                }
            }
            if case .variableName(let name)? = a.source, a.path == nil, !a.hasTargetType,
                let declared = variableTypes[name], let vt = declared, !Validator.assignable(vt, to: t)
            {
                throw fail(
                    "\(at): input \(i) ('\(def.inputVars[i].name)') of TaskDef '\(id.name)' is \(t.name) but variable '\(name)' is \(vt.name)"
                )
            }
        }
        if task.retries < 0 { throw fail("\(at): retries must not be negative") }
        if task.timeoutSeconds < 0 { throw fail("\(at): timeout_seconds must not be negative") }
    }

    func checkInterrupts() throws {
        var owners: [String: String] = [:]
        var waited: [String: (thread: String, node: String)] = [:]
        for (threadName, thread) in request.threadSpecs {
            for (nodeName, node) in thread.nodes {
                if case .externalEvent(let e)? = node.node {
                    waited[e.externalEventDefID.name] = (threadName, nodeName)
                }
            }
        }
        for threadName in request.threadSpecs.keys.sorted() {
            for def in request.threadSpecs[threadName]!.interruptDefs {
                let event = def.externalEventDefID.name
                guard metadata.externalEventDefs.contains(event) else {
                    throw fail(
                        "thread '\(threadName)' registers an interrupt for ExternalEventDef '\(event)', which does not exist"
                    )
                }
                if let other = owners[event] {
                    throw fail(
                        "threads '\(other)' and '\(threadName)' both register an interrupt for ExternalEventDef '\(event)'; only one ThreadSpec may"
                    )
                }
                owners[event] = threadName
                if let w = waited[event] {
                    throw fail(
                        "ExternalEventDef '\(event)' triggers an interrupt of thread '\(threadName)' and is also waited for by EXTERNAL_EVENT node '\(w.node)' of thread '\(w.thread)'"
                    )
                }
                guard let handler = request.threadSpecs[def.handlerSpecName] else {
                    throw fail(
                        "interrupt of thread '\(threadName)' for '\(event)' names handler thread '\(def.handlerSpecName)', which is not a ThreadSpec of this WfSpec"
                    )
                }
                let own = handler.variableDefs.map(\.varDef.name).filter { $0 != "INPUT" }
                if !own.isEmpty {
                    throw fail(
                        "interrupt handler thread '\(def.handlerSpecName)' (for '\(event)') may declare no variable but INPUT, declares \(own.joined(separator: ", "))"
                    )
                }
            }
        }
    }

    /// Every variable read or written must be declared by the thread or by a
    /// thread that can be its ancestor.
    func checkScopes() throws {
        var parents: [String: Set<String>] = [:]
        for (name, thread) in request.threadSpecs {
            for node in thread.nodes.values {
                if case .startThread(let s)? = node.node { parents[s.threadSpecName, default: []].insert(name) }
                for h in node.failureHandlers { parents[h.handlerSpecName, default: []].insert(name) }
                if case .waitForThreads(let w)? = node.node {
                    for h in w.perThreadFailureHandlers { parents[h.handlerSpecName, default: []].insert(name) }
                }
            }
            for i in thread.interruptDefs { parents[i.handlerSpecName, default: []].insert(name) }
        }
        var visible: [String: Set<String>] = [:]
        for (name, thread) in request.threadSpecs { visible[name] = Set(thread.variableDefs.map(\.varDef.name)) }
        var changed = true
        while changed {
            changed = false
            for (child, ps) in parents {
                for p in ps {
                    let before = visible[child]?.count ?? 0
                    visible[child, default: []].formUnion(visible[p] ?? [])
                    if visible[child]!.count != before { changed = true }
                }
            }
        }
        for threadName in request.threadSpecs.keys.sorted() {
            let thread = request.threadSpecs[threadName]!
            let scope = visible[threadName] ?? []
            for nodeName in thread.nodes.keys.sorted() {
                let node = thread.nodes[nodeName]!
                let at = "node '\(nodeName)' of thread '\(threadName)'"
                var used: [String] = []
                collect(node, into: &used)
                for name in used where !scope.contains(name) {
                    throw fail(
                        "\(at) uses variable '\(name)', which is not declared in scope of thread '\(threadName)'")
                }
                for (i, edge) in node.outgoingEdges.enumerated() {
                    for m in edge.variableMutations where !scope.contains(m.lhsName) {
                        throw fail(
                            "edge \(i) of \(at) mutates variable '\(m.lhsName)', which is not declared in scope of thread '\(threadName)'"
                        )
                    }
                }
            }
        }
    }

    func collect(_ node: Littlehorse_Node, into used: inout [String]) {
        func a(_ x: Littlehorse_VariableAssignment) {
            switch x.source {
            case .variableName(let n): used.append(n)
            case .formatString(let f): a(f.format); f.args.forEach(a)
            case .expression(let e): a(e.lhs); a(e.rhs)
            default: break
            }
        }
        switch node.node {
        case .task(let t): t.variables.forEach(a)
        case .externalEvent(let e): if e.hasTimeoutSeconds { a(e.timeoutSeconds) }
        case .sleep(let s):
            switch s.sleepLength {
            case .rawSeconds(let x), .timestamp(let x), .isoDate(let x): a(x)
            case nil: break
            }
        case .startThread(let s): s.variables.values.forEach(a)
        case .waitForThreads(let w):
            switch w.threadsToWaitFor {
            case .threads(let list): list.threads.forEach { a($0.threadRunNumber) }
            case .threadList(let x): a(x)
            case nil: break
            }
        case .exit(let e):
            switch e.result {
            case .failureDef(let f): if f.hasContent { a(f.content) }
            case .returnContent(let x): a(x)
            case nil: break
            }
        default: break
        }
        for edge in node.outgoingEdges {
            switch edge.edgeCondition {
            case .legacyCondition(let c): a(c.left); a(c.right)
            case .condition(let x): a(x)
            case nil: break
            }
            for m in edge.variableMutations {
                if case .rhsAssignment(let x)? = m.rhsValue { a(x) }
            }
        }
    }
}
