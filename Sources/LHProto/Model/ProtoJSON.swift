import Foundation
import SwiftProtobuf

/// Protobuf JSON as LittleHorse's `lhctl` prints it: Go's `protojson` with
/// `EmitUnpopulated` and a two-space indent.
///
/// swift-protobuf's JSON leaves out every field that holds its default, so
/// a Variable of thread 0 printed without `"threadRunNumber": 0` and
/// without `"masked": false`, where seed 003's walkthrough shows both. Here
/// the message is encoded by swift-protobuf and then completed from the
/// descriptors of `proto/` (committed in `descriptor_set.pb.swift`), with
/// protojson's rules:
///
/// - every field is printed in declaration order, unset ones with their
///   default: `0`, `"0"` for 64-bit integers, `false`, `""`, the enum's
///   zero value by name, `[]` for a repeated field, `{}` for a map;
/// - an unset singular message field is `null`;
/// - an unset field of a `oneof` (also a proto3 `optional` field) is left
///   out;
/// - map entries are sorted by key; well-known types (Timestamp) keep
///   their JSON form.
///
/// ```swift
/// print(try LHProtoJSON.string(variable))
/// // {
/// //   "id": {
/// //     "wfRunId": {
/// //       "id": "my-wf"
/// //     },
/// //     "threadRunNumber": 0,
/// // ...
/// ```
public enum LHProtoJSON {
    /// The multi-line JSON of `message`, without a trailing newline.
    public static func string(_ message: some SwiftProtobuf.Message) throws -> String {
        var options = JSONEncodingOptions()
        options.useDeterministicOrdering = true
        let compact = try message.jsonString(options: options)
        var parser = RawJSONParser(Array(compact.utf8))
        let tree = try parser.parseDocument()
        let filled = schema.complete(tree, as: "." + type(of: message).protoMessageName)
        var out = ""
        filled.write(into: &out, indent: 0)
        return out
    }

    /// The descriptors, read once.
    static let schema: Schema = {
        // The set is made from our own proto/ by the same script as the
        // generated types; a failure here is a broken build, not bad input.
        guard let data = Data(base64Encoded: fileDescriptorSetBase64, options: .ignoreUnknownCharacters),
            let set = try? Google_Protobuf_FileDescriptorSet(serializedBytes: data)
        else { fatalError("LHProtoJSON: descriptor_set.pb.swift does not hold a FileDescriptorSet") }
        return Schema(set)
    }()
}

/// What protojson needs to know of each message: its fields in declaration
/// order, what an unset one prints, and which hold floating-point numbers
/// (laid out as Go does).
struct Schema: Sendable {
    struct Field: Sendable {
        /// What one value of the field is.
        enum Element: Sendable {
            case message(String)
            case float32
            case float64
            case other
        }
        enum Shape: Sendable {
            /// A singular field; `unset` is what it prints when unset (its
            /// default as JSON text, `null` for a message).
            case single(Element, unset: String)
            case repeated(Element)
            /// A map field; the element is its value's.
            case map(Element)
        }
        let jsonName: String
        let shape: Shape
        /// In a oneof (a proto3 `optional` field is in a synthetic one):
        /// left out when unset.
        let inOneof: Bool
    }

    private(set) var messages: [String: [Field]] = [:]

    init(_ set: Google_Protobuf_FileDescriptorSet) {
        var enumZero: [String: String] = [:]
        var mapValues: [String: Field.Element] = [:]  // map entry type -> its value
        var pending: [(String, Google_Protobuf_DescriptorProto)] = []

        func element(_ f: Google_Protobuf_FieldDescriptorProto) -> Field.Element {
            switch f.type {
            case .message, .group: return .message(f.typeName)
            case .float: return .float32
            case .double: return .float64
            default: return .other
            }
        }
        func collect(_ message: Google_Protobuf_DescriptorProto, scope: String) {
            let name = scope + "." + message.name
            pending.append((name, message))
            for e in message.enumType { enumZero[name + "." + e.name] = Self.zeroName(e) }
            for nested in message.nestedType { collect(nested, scope: name) }
            if message.options.mapEntry, let value = message.field.first(where: { $0.number == 2 }) {
                mapValues[name] = element(value)
            }
        }
        for file in set.file {
            let scope = file.package.isEmpty ? "" : "." + file.package
            for e in file.enumType { enumZero[scope + "." + e.name] = Self.zeroName(e) }
            for message in file.messageType { collect(message, scope: scope) }
        }
        for (name, message) in pending where !message.options.mapEntry {
            messages[name] = message.field.map { f in
                let shape: Field.Shape
                if f.label == .repeated {
                    shape = mapValues[f.typeName].map { .map($0) } ?? .repeated(element(f))
                } else if f.type == .enum {
                    shape = .single(.other, unset: "\"" + (enumZero[f.typeName] ?? "") + "\"")
                } else {
                    shape = .single(element(f), unset: Self.unsetText(f.type))
                }
                return Field(
                    jsonName: f.hasJsonName ? f.jsonName : Self.lowerCamel(f.name),
                    shape: shape,
                    inOneof: f.hasOneofIndex)
            }
        }
    }

    /// `tree` (swift-protobuf's JSON of a `typeName`) with every unset field
    /// added, in declaration order.
    func complete(_ tree: RawJSON, as typeName: String) -> RawJSON {
        guard case .object(let present) = tree, let fields = messages[typeName] else {
            return tree  // a well-known type in its own JSON form, or not an object
        }
        var byName: [String: RawJSON] = [:]
        for (key, value) in present { byName[key] = value }
        var out: [(String, RawJSON)] = []
        for field in fields {
            if let value = byName.removeValue(forKey: field.jsonName) {
                out.append((field.jsonName, completeValue(value, field.shape)))
                continue
            }
            if field.inOneof { continue }
            switch field.shape {
            case .single(_, let unset): out.append((field.jsonName, .atom(unset)))
            case .repeated: out.append((field.jsonName, .array([])))
            case .map: out.append((field.jsonName, .object([])))
            }
        }
        // Nothing should be left (the types and the descriptors come from the
        // same files); whatever is, is kept rather than lost.
        for (key, _) in present where byName[key] != nil { out.append((key, byName[key]!)) }
        return .object(out)
    }

    private func completeValue(_ value: RawJSON, _ shape: Field.Shape) -> RawJSON {
        switch shape {
        case .single(let element, _): return completeElement(value, element)
        case .repeated(let element):
            guard case .array(let items) = value else { return value }
            return .array(items.map { completeElement($0, element) })
        case .map(let element):
            guard case .object(let entries) = value else { return value }
            let sorted = entries.sorted {
                RawJSON.unescape($0.0).utf8.lexicographicallyPrecedes(RawJSON.unescape($1.0).utf8)
            }
            return .object(sorted.map { ($0.0, completeElement($0.1, element)) })
        }
    }

    private func completeElement(_ value: RawJSON, _ element: Field.Element) -> RawJSON {
        switch (element, value) {
        case (.message(let type), _): return complete(value, as: type)
        case (.float64, .atom(let text)): return .atom(GoFloat.text(text, bits: 64))
        case (.float32, .atom(let text)): return .atom(GoFloat.text(text, bits: 32))
        default: return value
        }
    }

    private static func zeroName(_ e: Google_Protobuf_EnumDescriptorProto) -> String {
        (e.value.first(where: { $0.number == 0 }) ?? e.value.first)?.name ?? ""
    }

    private static func unsetText(_ type: Google_Protobuf_FieldDescriptorProto.TypeEnum) -> String {
        switch type {
        case .message, .group: return "null"
        case .bool: return "false"
        case .string, .bytes: return "\"\""
        case .int64, .uint64, .sint64, .fixed64, .sfixed64: return "\"0\""
        default: return "0"
        }
    }

    /// protoc's JSON name of a field (used only if the descriptor lacks one).
    private static func lowerCamel(_ name: String) -> String {
        var out = ""
        var upper = false
        for c in name {
            if c == "_" { upper = true; continue }
            out += upper ? c.uppercased() : String(c)
            upper = false
        }
        return out
    }
}

/// Floating-point numbers as Go's protojson writes them: the shortest
/// digits that read back to the same value (as swift-protobuf writes too),
/// without an exponent from 1e-6 up to 1e21 (`3`, `0.000001`), with one
/// beyond (`1e+21`, `1.5e-7`); `"NaN"` and `"Infinity"` as they came.
enum GoFloat {
    static func text(_ written: String, bits: Int) -> String {
        let shortest: String
        let useExponent: Bool  // compared at the field's own width, as Go does
        if bits == 32, let f = Float(written), f.isFinite {
            shortest = f.description
            useExponent = f != 0 && (abs(f) < Float(1e-6) || abs(f) >= Float(1e21))
        } else if let d = Double(written), d.isFinite {
            shortest = d.description
            useExponent = d != 0 && (abs(d) < 1e-6 || abs(d) >= 1e21)
        } else {
            return written  // a quoted "NaN", "Infinity", "-Infinity"
        }
        // shortest is Swift's description: "3.0", "0.1", "1.5e-07", "1e+21".
        var rest = Substring(shortest)
        let negative = rest.first == "-"
        if negative { rest = rest.dropFirst() }
        var exponent = 0
        if let e = rest.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(rest[rest.index(after: e)...]) ?? 0
            rest = rest[..<e]
        }
        // value = 0.digits × 10^point
        let parts = rest.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let intPart = parts.first ?? ""
        let fracPart = parts.dropFirst().first ?? ""
        var digits = String(intPart) + String(fracPart)
        var point = intPart.count + exponent
        while digits.first == "0", digits.count > 1 { digits.removeFirst(); point -= 1 }
        while digits.last == "0", digits.count > 1 { digits.removeLast() }
        let sign = negative ? "-" : ""
        if digits == "0" { return sign + "0" }
        if useExponent {
            let mantissa = String(digits.prefix(1)) + (digits.count > 1 ? "." + digits.dropFirst() : "")
            let e = point - 1
            return sign + mantissa + (e < 0 ? "e-\(-e)" : (e < 10 ? "e+0\(e)" : "e+\(e)"))
        }
        if point <= 0 { return sign + "0." + String(repeating: "0", count: -point) + digits }
        if point >= digits.count { return sign + digits + String(repeating: "0", count: point - digits.count) }
        let split = digits.index(digits.startIndex, offsetBy: point)
        return sign + digits[..<split] + "." + digits[split...]
    }
}

/// JSON whose scalars keep the exact text they were written with and whose
/// objects keep their order.
indirect enum RawJSON: Sendable {
    /// A string (with its quotes and escapes), number, `true`, `false` or `null`.
    case atom(String)
    case array([RawJSON])
    /// Keys as written between the quotes (escapes kept).
    case object([(String, RawJSON)])

    /// Go's `protojson` layout with `Indent: "  "`: one member or element a
    /// line, `{}` and `[]` when empty.
    func write(into out: inout String, indent: Int) {
        switch self {
        case .atom(let text):
            out += text
        case .array(let items):
            guard !items.isEmpty else { out += "[]"; return }
            out += "[\n"
            for (i, item) in items.enumerated() {
                out += String(repeating: "  ", count: indent + 1)
                item.write(into: &out, indent: indent + 1)
                out += i == items.count - 1 ? "\n" : ",\n"
            }
            out += String(repeating: "  ", count: indent) + "]"
        case .object(let members):
            guard !members.isEmpty else { out += "{}"; return }
            out += "{\n"
            for (i, (key, value)) in members.enumerated() {
                out += String(repeating: "  ", count: indent + 1) + "\"" + key + "\": "
                value.write(into: &out, indent: indent + 1)
                out += i == members.count - 1 ? "\n" : ",\n"
            }
            out += String(repeating: "  ", count: indent) + "}"
        }
    }

    /// The string a key's escaped text stands for (to sort map keys as Go
    /// does, by their bytes).
    static func unescape(_ escaped: String) -> String {
        guard escaped.contains("\\") else { return escaped }
        var out = String.UnicodeScalarView()
        var it = Array(escaped.unicodeScalars).makeIterator()
        var pendingHigh: UInt32?
        while let c = it.next() {
            guard c == "\\", let e = it.next() else { out.append(c); continue }
            switch e {
            case "b": out.append("\u{8}")
            case "f": out.append("\u{c}")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "u":
                var hex = ""
                for _ in 0..<4 { if let h = it.next() { hex.unicodeScalars.append(h) } }
                let v = UInt32(hex, radix: 16) ?? 0xFFFD
                if (0xD800..<0xDC00).contains(v) { pendingHigh = v; continue }
                if (0xDC00..<0xE000).contains(v), let high = pendingHigh {
                    out.append(Unicode.Scalar(0x10000 + ((high - 0xD800) << 10) + (v - 0xDC00)) ?? "\u{FFFD}")
                } else {
                    out.append(Unicode.Scalar(v) ?? "\u{FFFD}")
                }
                pendingHigh = nil
            default: out.append(e)
            }
        }
        return String(out)
    }
}

/// Reads the compact JSON that swift-protobuf writes into a `RawJSON`.
struct RawJSONParser {
    struct Failure: Error, CustomStringConvertible {
        let offset: Int
        let reason: String
        var description: String { "not JSON at offset \(offset): \(reason)" }
    }

    private let bytes: [UInt8]
    private var i = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func parseDocument() throws -> RawJSON {
        let value = try parseValue()
        skipSpace()
        guard i == bytes.count else { throw Failure(offset: i, reason: "trailing characters") }
        return value
    }

    private mutating func skipSpace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
    }

    private mutating func expect(_ byte: UInt8) throws {
        skipSpace()
        guard i < bytes.count, bytes[i] == byte else {
            throw Failure(offset: i, reason: "expected '\(Character(Unicode.Scalar(byte)))'")
        }
        i += 1
    }

    private mutating func parseValue() throws -> RawJSON {
        skipSpace()
        guard i < bytes.count else { throw Failure(offset: i, reason: "unexpected end") }
        switch bytes[i] {
        case UInt8(ascii: "{"):
            i += 1
            var members: [(String, RawJSON)] = []
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
            while true {
                skipSpace()
                let quoted = try parseString()
                try expect(UInt8(ascii: ":"))
                members.append((String(quoted.dropFirst().dropLast()), try parseValue()))
                skipSpace()
                guard i < bytes.count else { throw Failure(offset: i, reason: "unexpected end in an object") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                try expect(UInt8(ascii: "}"))
                return .object(members)
            }
        case UInt8(ascii: "["):
            i += 1
            var items: [RawJSON] = []
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            while true {
                items.append(try parseValue())
                skipSpace()
                guard i < bytes.count else { throw Failure(offset: i, reason: "unexpected end in an array") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                try expect(UInt8(ascii: "]"))
                return .array(items)
            }
        case UInt8(ascii: "\""):
            return .atom(try parseString())
        default:
            let start = i
            while i < bytes.count, !Self.ends(bytes[i]) { i += 1 }
            guard i > start else { throw Failure(offset: i, reason: "expected a value") }
            return .atom(String(decoding: bytes[start..<i], as: UTF8.self))
        }
    }

    /// A string token with its quotes and escapes, as written.
    private mutating func parseString() throws -> String {
        guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else {
            throw Failure(offset: i, reason: "expected a string")
        }
        let start = i
        i += 1
        while i < bytes.count {
            switch bytes[i] {
            case UInt8(ascii: "\\"): i += 2
            case UInt8(ascii: "\""):
                i += 1
                return String(decoding: bytes[start..<i], as: UTF8.self)
            default: i += 1
            }
        }
        throw Failure(offset: start, reason: "unterminated string")
    }

    private static func ends(_ b: UInt8) -> Bool {
        b == UInt8(ascii: ",") || b == UInt8(ascii: "}") || b == UInt8(ascii: "]")
            || b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09
    }
}
