import Foundation
@_exported import LHClient
import LHProto

/// A Swift type a task may take or return: String (STR), Int (INT), Double
/// (DOUBLE), Bool (BOOL), Data (BYTES), arrays and string-keyed dictionaries
/// of Codable values (JSON_ARR, JSON_OBJ), and any Codable type that declares
/// `extension MyType: LHTaskValue {}` (JSON_OBJ).
public protocol LHTaskValue {
    static var lhType: Littlehorse_VariableType { get }
    init(lhValue: Littlehorse_VariableValue) throws
    func lhValue() throws -> Littlehorse_VariableValue
}

/// A value that does not convert to or from its Swift type.
public struct LHConversionError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

private func typeName(_ v: Littlehorse_VariableValue) -> String { v.type?.name ?? "NULL" }

extension String: LHTaskValue {
    public static var lhType: Littlehorse_VariableType { .str }
    public init(lhValue v: Littlehorse_VariableValue) throws {
        switch v.value {
        case .str(let s): self = s
        case .jsonObj(let s), .jsonArr(let s): self = s
        case .int(let i): self = String(i)
        case .double(let d): self = String(d)
        case .bool(let b): self = String(b)
        default: throw LHConversionError(message: "cannot read \(typeName(v)) as String")
        }
    }
    public func lhValue() throws -> Littlehorse_VariableValue { .with { $0.str = self } }
}

extension Int: LHTaskValue {
    public static var lhType: Littlehorse_VariableType { .int }
    public init(lhValue v: Littlehorse_VariableValue) throws {
        switch v.value {
        case .int(let i): self = Int(i)
        case .str(let s) where Int(s) != nil: self = Int(s)!
        default: throw LHConversionError(message: "cannot read \(typeName(v)) as Int")
        }
    }
    public func lhValue() throws -> Littlehorse_VariableValue { .with { $0.int = Int64(self) } }
}

extension Double: LHTaskValue {
    public static var lhType: Littlehorse_VariableType { .double }
    public init(lhValue v: Littlehorse_VariableValue) throws {
        switch v.value {
        case .double(let d): self = d
        case .int(let i): self = Double(i)
        default: throw LHConversionError(message: "cannot read \(typeName(v)) as Double")
        }
    }
    public func lhValue() throws -> Littlehorse_VariableValue { .with { $0.double = self } }
}

extension Bool: LHTaskValue {
    public static var lhType: Littlehorse_VariableType { .bool }
    public init(lhValue v: Littlehorse_VariableValue) throws {
        guard case .bool(let b) = v.value else {
            throw LHConversionError(message: "cannot read \(typeName(v)) as Bool")
        }
        self = b
    }
    public func lhValue() throws -> Littlehorse_VariableValue { .with { $0.bool = self } }
}

extension Data: LHTaskValue {
    public static var lhType: Littlehorse_VariableType { .bytes }
    public init(lhValue v: Littlehorse_VariableValue) throws {
        guard case .bytes(let b) = v.value else {
            throw LHConversionError(message: "cannot read \(typeName(v)) as Data")
        }
        self = b
    }
    public func lhValue() throws -> Littlehorse_VariableValue { .with { $0.bytes = self } }
}

/// JSON through Codable.
extension LHTaskValue where Self: Codable {
    public static var lhType: Littlehorse_VariableType { .jsonObj }
    public init(lhValue v: Littlehorse_VariableValue) throws {
        let text: String
        switch v.value {
        case .jsonObj(let s), .jsonArr(let s), .str(let s): text = s
        default: throw LHConversionError(message: "cannot read \(typeName(v)) as \(Self.self)")
        }
        do {
            self = try JSONDecoder().decode(Self.self, from: Data(text.utf8))
        } catch {
            throw LHConversionError(message: "cannot decode \(Self.self) from \(typeName(v)): \(error)")
        }
    }
    public func lhValue() throws -> Littlehorse_VariableValue {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let text = String(decoding: try encoder.encode(self), as: UTF8.self)
        return Self.lhType == .jsonArr ? .with { $0.jsonArr = text } : .with { $0.jsonObj = text }
    }
}

extension Array: LHTaskValue where Element: Codable {
    public static var lhType: Littlehorse_VariableType { .jsonArr }
}

extension Dictionary: LHTaskValue where Key == String, Value: Codable {
    public static var lhType: Littlehorse_VariableType { .jsonObj }
}

/// A business exception a task throws: reported as TASK_EXCEPTION with this
/// name (kebab-case), message and content, and never retried.
public struct LHTaskException: Error, Sendable {
    public var name: String
    public var message: String
    public var content: Littlehorse_VariableValue?

    public init(name: String, message: String, content: (any LHTaskValue)? = nil) {
        self.name = name
        self.message = message
        self.content = try? content?.lhValue()
    }
}
