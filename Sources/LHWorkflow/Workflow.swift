import Foundation
import LHProto

/// A WfSpec written in Swift, LittleHorse-style.
///
/// ```swift
/// let wf = Workflow("collect-underpants") { wf in
///     let all = wf.declareJsonArr("all-underpants")
///     wf.execute("start-underpants-collection")
///     wf.waitForEvent("done-collecting-underpants")
///     wf.execute("profit", all)
///     wf.registerInterruptHandler("underpant-collected") { h in
///         let input = h.declareStr(WorkflowThread.handlerInputVar)
///         h.mutate(all, .add, input)
///         h.execute("collect-underpant", input)
///     }
/// }
/// let request = wf.compile()
/// ```
public final class Workflow {
    public let name: String
    let entrypoint: (WorkflowThread) -> Void
    var threads: [String: Littlehorse_ThreadSpec] = [:]
    var pending: [(String, (WorkflowThread) -> Void)] = []

    public init(_ name: String, _ entrypoint: @escaping (WorkflowThread) -> Void) {
        self.name = name
        self.entrypoint = entrypoint
    }

    /// The PutWfSpecRequest this workflow describes.
    public func compile() -> Littlehorse_PutWfSpecRequest {
        threads = [:]
        pending = [("entrypoint", entrypoint)]
        while !pending.isEmpty {
            let (threadName, body) = pending.removeFirst()
            let thread = WorkflowThread(workflow: self, name: threadName)
            body(thread)
            threads[threadName] = thread.finish()
        }
        var request = Littlehorse_PutWfSpecRequest()
        request.name = name
        request.threadSpecs = threads
        request.entrypointThreadName = "entrypoint"
        return request
    }

    func addThread(_ name: String, _ body: @escaping (WorkflowThread) -> Void) -> String {
        if !pending.contains(where: { $0.0 == name }) && threads[name] == nil { pending.append((name, body)) }
        return name
    }
}

/// A variable of a WfRun, as the DSL refers to it.
public struct WfRunVariable: Sendable {
    public let name: String
    public let type: Littlehorse_VariableType
    public var jsonPath: String?

    /// The same variable, narrowed by a JSONPath such as `$.size`.
    public func jsonPath(_ path: String) -> WfRunVariable {
        var copy = self
        copy.jsonPath = path
        return copy
    }
}

/// The output of a node (a TASK's result, an event's content).
public struct NodeOutput: Sendable {
    public let nodeName: String
    public var jsonPath: String?
    public func jsonPath(_ path: String) -> NodeOutput { NodeOutput(nodeName: nodeName, jsonPath: path) }
}

/// A condition for doIf/doWhile: `wf.condition(count, .lessThan, 3)`.
public struct WorkflowCondition {
    let condition: Littlehorse_LegacyEdgeCondition
    var negated: WorkflowCondition {
        var c = condition
        switch c.comparator {
        case .lessThan: c.comparator = .greaterThanEq
        case .greaterThan: c.comparator = .lessThanEq
        case .lessThanEq: c.comparator = .greaterThan
        case .greaterThanEq: c.comparator = .lessThan
        case .equals: c.comparator = .notEquals
        case .notEquals: c.comparator = .equals
        case .in: c.comparator = .notIn
        case .notIn: c.comparator = .in
        case .UNRECOGNIZED: break
        }
        return WorkflowCondition(condition: c)
    }
}

/// Options of a TASK node.
public struct TaskOptions {
    public var retries: Int32 = 0
    public var timeoutSeconds: Int32 = 0
    /// (base interval ms, multiplier, max delay ms)
    public var exponentialBackoff: (Int32, Float, Int64)?
    public init(retries: Int32 = 0, timeoutSeconds: Int32 = 0, exponentialBackoff: (Int32, Float, Int64)? = nil) {
        self.retries = retries
        self.timeoutSeconds = timeoutSeconds
        self.exponentialBackoff = exponentialBackoff
    }
}

/// Anything that can be a node's input: a variable, a node's output, or a
/// literal (String, Int, Double, Bool).
public protocol WorkflowValue {
    var assignment: Littlehorse_VariableAssignment { get }
}

extension WfRunVariable: WorkflowValue {
    public var assignment: Littlehorse_VariableAssignment {
        .with {
            $0.variableName = name; if let jsonPath { $0.jsonPath = jsonPath }
        }
    }
}
extension NodeOutput: WorkflowValue {
    public var assignment: Littlehorse_VariableAssignment {
        .with {
            $0.nodeOutput.nodeName = nodeName; if let jsonPath { $0.jsonPath = jsonPath }
        }
    }
}
extension String: WorkflowValue {
    public var assignment: Littlehorse_VariableAssignment { .with { $0.literalValue.str = self } }
}
extension Int: WorkflowValue {
    public var assignment: Littlehorse_VariableAssignment { .with { $0.literalValue.int = Int64(self) } }
}
extension Double: WorkflowValue {
    public var assignment: Littlehorse_VariableAssignment { .with { $0.literalValue.double = self } }
}
extension Bool: WorkflowValue {
    public var assignment: Littlehorse_VariableAssignment { .with { $0.literalValue.bool = self } }
}
