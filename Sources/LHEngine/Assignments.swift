import Foundation
import LHProto

/// Variables, assignments, expressions and mutations.
extension Run {
    /// The thread that declares `name`, seen from thread `n`: `n` itself or
    /// its nearest ancestor (child threads see their ancestors' variables).
    func owner(of name: String, from n: Int32) -> Int32? {
        var current: Int32? = n
        while let c = current {
            if state.variables[VariableKey(thread: c, name: name)] != nil { return c }
            let t = thread(c)
            current = t.hasParentThreadID ? t.parentThreadID : nil
        }
        return nil
    }

    func declaredType(of name: String, in n: Int32) -> Littlehorse_VariableType? {
        threadSpec(n).variableDefs.first { $0.varDef.name == name }?.varDef.declaredType
    }

    func evaluate(_ n: Int32, _ a: Littlehorse_VariableAssignment) throws -> Value {
        var value: Value
        switch a.source {
        case .variableName(let name):
            guard let owner = owner(of: name, from: n) else {
                throw ValueError("variable '\(name)' is not in scope of thread \(n)")
            }
            value = state.variables[VariableKey(thread: owner, name: name)]!.value
        case .literalValue(let v):
            value = v
        case .formatString(let f):
            guard case .str(let format) = try evaluate(n, f.format).cast(to: .str).value else {
                throw ValueError("format is not a STR")
            }
            let args = try f.args.map { try evaluate(n, $0).displayString }
            var out = ""
            var i = format.startIndex
            while i < format.endIndex {
                if format[i] == "{", let close = format[i...].firstIndex(of: "}"),
                    let k = Int(format[format.index(after: i)..<close])
                {
                    guard k >= 0 && k < args.count else {
                        throw ValueError("format string refers to {\(k)} but has \(args.count) argument(s)")
                    }
                    out += args[k]
                    i = format.index(after: close)
                } else {
                    out.append(format[i])
                    i = format.index(after: i)
                }
            }
            value = .str(out)
        case .nodeOutput(let ref):
            guard
                let node = state.nodeRuns.filter({ $0.key.thread == n && $0.value.nodeName == ref.nodeName }).max(by: {
                    $0.key < $1.key
                })?.value
            else {
                throw ValueError("node '\(ref.nodeName)' has not run in thread \(n)")
            }
            value = nodeOutput(n, node)
        case .expression(let e):
            let lhs = try evaluate(n, e.lhs)
            let rhs = try evaluate(n, e.rhs)
            switch e.operation {
            case .comparator(let c): value = .bool(try Compare.evaluate(c, lhs, rhs))
            case .mutationType(let m): value = try Mutate.apply(m, to: lhs, with: rhs, declared: nil)
            case nil: throw ValueError("expression has no operation")
            }
        case nil:
            throw ValueError("assignment has no source")
        }
        if case .jsonPath(let path)? = a.path {
            do {
                value = Value.from(json: try JSONPath(path).get(value.json()))
            } catch let e as ValueError {
                throw e
            } catch {
                throw ValueError("\(error)")
            }
        }
        if a.hasTargetType, case .primitiveType(let t)? = a.targetType.definedType {
            value = try value.cast(to: t)
        }
        return value
    }

    /// What a completed NodeRun produced: a TASK's output, an
    /// EXTERNAL_EVENT's content, a START_THREAD's child number.
    func nodeOutput(_ n: Int32, _ node: NodeRun) -> Value {
        switch node.nodeType {
        case .task(let t):
            guard t.hasTaskRunID, let attempt = state.taskRuns[t.taskRunID.taskGuid]?.attempts.last,
                case .output(let v)? = attempt.result
            else { return .null }
            return v
        case .externalEvent(let e):
            guard e.hasExternalEventID else { return .null }
            return state.externalEvents.first { $0.id == e.externalEventID }?.content ?? .null
        case .startThread(let s):
            return s.hasChildThreadID ? .int(Int64(s.childThreadID)) : .null
        default:
            return .null
        }
    }

    /// Applies one VariableMutation seen from thread `n`.
    mutating func mutate(_ n: Int32, _ m: Littlehorse_VariableMutation, nodeOutput output: Value) throws {
        guard let owner = owner(of: m.lhsName, from: n) else {
            throw ValueError("variable '\(m.lhsName)' is not in scope of thread \(n)")
        }
        let key = VariableKey(thread: owner, name: m.lhsName)
        let current = state.variables[key]!.value
        let declared = declaredType(of: m.lhsName, in: owner)
        var rhs: Value
        switch m.rhsValue {
        case .rhsAssignment(let a): rhs = try evaluate(n, a)
        case .literalValue(let v): rhs = v
        case .nodeOutput(let source):
            rhs = output
            if case .jsonpath(let path)? = source.path {
                rhs = Value.from(json: try JSONPath(path).get(output.json()))
            }
        case nil: rhs = output
        }
        var updated: Value
        if m.hasLhsJsonPath {
            let path = try JSONPath(m.lhsJsonPath)
            let root = current.isNull ? JSONValue.object([:]) : try current.json()
            let sub = (try? path.get(root)) ?? .null
            let newSub = try Mutate.apply(m.operation, to: Value.from(json: sub), with: rhs, declared: nil)
            updated = Value.from(json: try path.set(newSub.json(), in: root))
        } else {
            updated = try Mutate.apply(m.operation, to: current, with: rhs, declared: declared)
        }
        if let declared, !updated.isNull { updated = try updated.cast(to: declared) }
        state.variables[key]?.value = updated
    }
}
