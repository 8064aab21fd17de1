import Foundation
import LHProto
import SwiftProtobuf

typealias Value = Littlehorse_VariableValue

/// A problem computing or converting a value; the engine turns it into a
/// VAR_SUB_ERROR or VAR_MUTATION_ERROR failure depending on where it arose.
struct ValueError: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

extension Littlehorse_VariableValue {
    static func str(_ s: String) -> Value { .with { $0.str = s } }
    static func int(_ i: Int64) -> Value { .with { $0.int = i } }
    static func double(_ d: Double) -> Value { .with { $0.double = d } }
    static func bool(_ b: Bool) -> Value { .with { $0.bool = b } }
    static func jsonArr(_ s: String) -> Value { .with { $0.jsonArr = s } }
    static func jsonObj(_ s: String) -> Value { .with { $0.jsonObj = s } }
    static let null = Value()

    var isNull: Bool { value == nil }

    var typeName: String { type?.name ?? "NULL" }

    /// The value as a JSON document (JSON_OBJ and JSON_ARR are parsed).
    func json() throws -> JSONValue {
        switch value {
        case nil: return .null
        case .jsonObj(let s), .jsonArr(let s):
            do { return try JSONValue.parse(s) } catch {
                throw ValueError("\(typeName) value is not valid JSON: \(error)")
            }
        case .double(let d): return .double(d)
        case .bool(let b): return .bool(b)
        case .str(let s): return .string(s)
        case .int(let i): return .int(i)
        case .bytes(let b): return .string(b.base64EncodedString())
        case .wfRunID(let id): return .string(id.id)
        case .utcTimestamp(let t): return .string(Self.iso8601(t))
        }
    }

    /// The value that a JSON document (or a part of one) stands for.
    static func from(json: JSONValue) -> Value {
        switch json {
        case .null: .null
        case .bool(let b): .bool(b)
        case .int(let i): .int(i)
        case .double(let d): .double(d)
        case .string(let s): .str(s)
        case .array: .jsonArr(json.text)
        case .object: .jsonObj(json.text)
        }
    }

    /// How the value reads inside a format string or when cast to STR.
    var displayString: String {
        switch value {
        case nil: "null"
        case .jsonObj(let s), .jsonArr(let s): (try? JSONValue.parse(s).text) ?? s
        case .double(let d): d == d.rounded() && abs(d) < 1e15 ? String(format: "%.1f", d) : "\(d)"
        case .bool(let b): b ? "true" : "false"
        case .str(let s): s
        case .int(let i): String(i)
        case .bytes(let b): b.base64EncodedString()
        case .wfRunID(let id): id.id
        case .utcTimestamp(let t): Self.iso8601(t)
        }
    }

    static func iso8601(_ t: Google_Protobuf_Timestamp) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: t.date)
    }

    /// Converts to `type` by LittleHorse's rules: numbers convert between INT
    /// and DOUBLE, anything converts to STR, a STR converts to what it spells.
    func cast(to type: Littlehorse_VariableType) throws -> Value {
        if isNull || self.type == type {
            if type == .jsonObj || type == .jsonArr, !isNull {
                let parsed = try json()
                if type == .jsonObj, case .object = parsed {
                } else if type == .jsonArr, case .array = parsed {
                } else {
                    throw ValueError("\(typeName) value is not a JSON \(type == .jsonObj ? "object" : "array")")
                }
            }
            return self
        }
        let fail = ValueError("cannot convert \(typeName) value \(displayString.prefix(80)) to \(type.name)")
        switch (value, type) {
        case (_, .str):
            return .str(displayString)
        case (.int(let i), .double):
            return .double(Double(i))
        case (.double(let d), .int):
            guard d.isFinite, abs(d) < 9.2e18 else { throw fail }
            return .int(Int64(d.rounded(.towardZero)))
        case (.str(let s), .int):
            guard let i = Int64(s.trimmingCharacters(in: .whitespaces)) else { throw fail }
            return .int(i)
        case (.str(let s), .double):
            guard let d = Double(s.trimmingCharacters(in: .whitespaces)) else { throw fail }
            return .double(d)
        case (.str(let s), .bool):
            switch s.lowercased() {
            case "true": return .bool(true)
            case "false": return .bool(false)
            default: throw fail
            }
        case (.str(let s), .jsonObj):
            guard case .object = try? JSONValue.parse(s) else { throw fail }
            return .jsonObj(s)
        case (.str(let s), .jsonArr):
            guard case .array = try? JSONValue.parse(s) else { throw fail }
            return .jsonArr(s)
        case (.str(let s), .bytes):
            guard let data = Data(base64Encoded: s) else { throw fail }
            return .with { $0.bytes = data }
        case (.str(let s), .wfRunID):
            return .with { $0.wfRunID = .with { $0.id = s } }
        case (.str(let s), .timestamp):
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let plain = ISO8601DateFormatter()
            guard let date = formatter.date(from: s) ?? plain.date(from: s) else { throw fail }
            return .with { $0.utcTimestamp = Google_Protobuf_Timestamp(date: date) }
        case (.int(let ms), .timestamp):
            return .with {
                $0.utcTimestamp = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: Double(ms) / 1000))
            }
        default:
            throw fail
        }
    }

    /// Numeric view for arithmetic and ordering.
    var number: Double? {
        switch value {
        case .int(let i): Double(i)
        case .double(let d): d
        default: nil
        }
    }
}

/// Comparison of two values, as edge conditions and expressions use it.
enum Compare {
    static func evaluate(_ comparator: Littlehorse_Comparator, _ lhs: Value, _ rhs: Value) throws -> Bool {
        switch comparator {
        case .equals: return try equal(lhs, rhs)
        case .notEquals: return try !equal(lhs, rhs)
        case .lessThan: return try order(lhs, rhs) < 0
        case .lessThanEq: return try order(lhs, rhs) <= 0
        case .greaterThan: return try order(lhs, rhs) > 0
        case .greaterThanEq: return try order(lhs, rhs) >= 0
        case .in: return try contains(rhs, lhs)
        case .notIn: return try !contains(rhs, lhs)
        case .UNRECOGNIZED(let n): throw ValueError("unknown comparator \(n)")
        }
    }

    /// Equal after converting the right side to the left side's type.
    static func equal(_ lhs: Value, _ rhs: Value) throws -> Bool {
        if lhs.isNull || rhs.isNull { return lhs.isNull && rhs.isNull }
        if let a = lhs.number, let b = rhs.number { return a == b }
        guard let type = lhs.type, let converted = try? rhs.cast(to: type) else { return false }
        if type == .jsonObj || type == .jsonArr { return try lhs.json() == converted.json() }
        return lhs == converted
    }

    static func order(_ lhs: Value, _ rhs: Value) throws -> Int {
        if let a = lhs.number, let b = rhs.number { return a < b ? -1 : (a > b ? 1 : 0) }
        if case .str(let a) = lhs.value, case .str(let b) = rhs.value { return a < b ? -1 : (a > b ? 1 : 0) }
        if case .utcTimestamp(let a) = lhs.value, case .utcTimestamp(let b) = rhs.value {
            return a.date < b.date ? -1 : (a.date > b.date ? 1 : 0)
        }
        throw ValueError("cannot order \(lhs.typeName) against \(rhs.typeName)")
    }

    /// Whether `collection` holds `element`: an item of a JSON_ARR, a key of
    /// a JSON_OBJ, a substring of a STR.
    static func contains(_ collection: Value, _ element: Value) throws -> Bool {
        switch collection.value {
        case .jsonArr:
            guard case .array(let items) = try collection.json() else { return false }
            let target = try element.json()
            return items.contains { item in
                if item == target { return true }
                if case .int(let a) = item, case .double(let b) = target { return Double(a) == b }
                if case .double(let a) = item, case .int(let b) = target { return a == Double(b) }
                return false
            }
        case .jsonObj:
            guard case .object(let dict) = try collection.json() else { return false }
            return dict[element.displayString] != nil
        case .str(let s):
            return s.contains(element.displayString)
        default:
            throw ValueError("IN needs a JSON_ARR, JSON_OBJ or STR on the right, got \(collection.typeName)")
        }
    }
}

/// VariableMutationType applied to a current value, by LittleHorse's rules.
enum Mutate {
    static func apply(
        _ op: Littlehorse_VariableMutationType, to lhs: Value, with rhs: Value, declared: Littlehorse_VariableType?
    ) throws -> Value {
        switch op {
        case .assign:
            guard let declared else { return rhs }
            return try rhs.cast(to: declared)
        case .add:
            switch lhs.value {
            case .int(let a):
                if case .double(let b) = rhs.value { return .int(a &+ Int64(b)) }
                guard let b = try? rhs.cast(to: .int), case .int(let bi) = b.value else {
                    throw ValueError("cannot ADD \(rhs.typeName) to INT")
                }
                return .int(a &+ bi)
            case .double(let a):
                guard let b = rhs.number ?? (try? rhs.cast(to: .double))?.number else {
                    throw ValueError("cannot ADD \(rhs.typeName) to DOUBLE")
                }
                return .double(a + b)
            case .str(let a):
                return .str(a + rhs.displayString)
            case .jsonArr:
                guard case .array(var items) = try lhs.json() else {
                    throw ValueError("JSON_ARR value is not an array")
                }
                items.append(try rhs.json())
                return .jsonArr(JSONValue.array(items).text)
            case nil:
                if declared == .jsonArr { return .jsonArr(JSONValue.array([try rhs.json()]).text) }
                if let declared { return try rhs.cast(to: declared) }
                return rhs
            default:
                throw ValueError("ADD is not defined for \(lhs.typeName)")
            }
        case .extend:
            switch lhs.value {
            case .str(let a):
                return .str(a + rhs.displayString)
            case .jsonArr,
                nil where declared == .jsonArr:
                var items: [JSONValue] = []
                if !lhs.isNull {
                    guard case .array(let existing) = try lhs.json() else {
                        throw ValueError("JSON_ARR value is not an array")
                    }; items = existing
                }
                guard case .array(let more) = try rhs.json() else {
                    throw ValueError("EXTEND needs a JSON_ARR on the right, got \(rhs.typeName)")
                }
                return .jsonArr(JSONValue.array(items + more).text)
            default:
                throw ValueError("EXTEND is not defined for \(lhs.typeName)")
            }
        case .subtract, .multiply, .divide, .pow:
            guard let b = rhs.number ?? (try? rhs.cast(to: .double))?.number else {
                throw ValueError("\(op) needs a number on the right, got \(rhs.typeName)")
            }
            switch lhs.value {
            case .int(let a):
                let bi = Int64(b)
                switch op {
                case .subtract: return .int(a &- bi)
                case .multiply: return .int(Int64(Double(a) * b))
                case .divide:
                    guard b != 0 else { throw ValueError("DIVIDE by zero") }
                    return .int(Int64(Double(a) / b))
                default: return .int(Int64(pow(Double(a), b)))
                }
            case .double(let a):
                switch op {
                case .subtract: return .double(a - b)
                case .multiply: return .double(a * b)
                case .divide:
                    guard b != 0 else { throw ValueError("DIVIDE by zero") }
                    return .double(a / b)
                default: return .double(pow(a, b))
                }
            default:
                throw ValueError("\(op) is not defined for \(lhs.typeName)")
            }
        case .and, .or:
            guard case .bool(let a) = lhs.value, case .bool(let b) = (try rhs.cast(to: .bool)).value else {
                throw ValueError("\(op) needs BOOL values, got \(lhs.typeName) and \(rhs.typeName)")
            }
            return .bool(op == .and ? (a && b) : (a || b))
        case .removeIfPresent:
            switch try lhs.json() {
            case .array(let items):
                let target = try rhs.json()
                return .jsonArr(JSONValue.array(items.filter { $0 != target }).text)
            case .object(var dict):
                dict[rhs.displayString] = nil
                return .jsonObj(JSONValue.object(dict).text)
            default:
                throw ValueError("REMOVE_IF_PRESENT is not defined for \(lhs.typeName)")
            }
        case .removeIndex:
            guard case .array(var items) = try lhs.json() else {
                throw ValueError("REMOVE_INDEX needs a JSON_ARR, got \(lhs.typeName)")
            }
            guard case .int(let i) = (try rhs.cast(to: .int)).value else {
                throw ValueError("REMOVE_INDEX needs an INT index")
            }
            let idx = i < 0 ? items.count + Int(i) : Int(i)
            guard items.indices.contains(idx) else {
                throw ValueError("REMOVE_INDEX: index \(i) out of range (\(items.count) items)")
            }
            items.remove(at: idx)
            return .jsonArr(JSONValue.array(items).text)
        case .removeKey:
            guard case .object(var dict) = try lhs.json() else {
                throw ValueError("REMOVE_KEY needs a JSON_OBJ, got \(lhs.typeName)")
            }
            dict[rhs.displayString] = nil
            return .jsonObj(JSONValue.object(dict).text)
        case .UNRECOGNIZED(let n):
            throw ValueError("unknown mutation type \(n)")
        }
    }
}
