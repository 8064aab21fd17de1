import Foundation

/// A JSON document as the engine manipulates it (JSON_OBJ and JSON_ARR
/// variables, json_path, mutations). Integers stay integers.
indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    static func parse(_ text: String) throws -> JSONValue {
        var parser = JSONParser(Array(text.utf8))
        let value = try parser.parseValue()
        parser.skipSpace()
        guard parser.atEnd else { throw JSONParser.Error(message: "trailing characters at offset \(parser.index)") }
        return value
    }

    /// Compact JSON with object keys sorted, so equal documents print alike.
    var text: String {
        var out = ""
        write(into: &out)
        return out
    }

    private func write(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d):
            if d.isFinite, d == d.rounded(), abs(d) < 1e15 { out += String(format: "%.1f", d) } else { out += "\(d)" }
        case .string(let s): JSONValue.writeString(s, into: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(into: &out)
            }
            out += "]"
        case .object(let dict):
            out += "{"
            for (i, key) in dict.keys.sorted().enumerated() {
                if i > 0 { out += "," }
                JSONValue.writeString(key, into: &out)
                out += ":"
                dict[key]!.write(into: &out)
            }
            out += "}"
        }
    }

    private static func writeString(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }

    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .int, .double: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }
}

/// A small strict JSON parser (RFC 8259) that keeps integers apart from
/// doubles, which Foundation's parser does not.
struct JSONParser {
    struct Error: Swift.Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    let bytes: [UInt8]
    var index = 0
    var depth = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { index >= bytes.count }

    mutating func skipSpace() {
        while index < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[index]) { index += 1 }
    }

    mutating func parseValue() throws -> JSONValue {
        skipSpace()
        guard index < bytes.count else { throw Error(message: "unexpected end of JSON") }
        depth += 1
        defer { depth -= 1 }
        guard depth < 512 else { throw Error(message: "JSON nested too deeply") }
        switch bytes[index] {
        case UInt8(ascii: "{"):
            index += 1
            var dict: [String: JSONValue] = [:]
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") { index += 1; return .object(dict) }
            while true {
                skipSpace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                    throw Error(message: "expected a key at offset \(index)")
                }
                let key = try parseString()
                skipSpace()
                try expect(":")
                dict[key] = try parseValue()
                skipSpace()
                if try consumeEither(",", "}") == "}" { return .object(dict) }
            }
        case UInt8(ascii: "["):
            index += 1
            var items: [JSONValue] = []
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
            while true {
                items.append(try parseValue())
                skipSpace()
                if try consumeEither(",", "]") == "]" { return .array(items) }
            }
        case UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "t"):
            try literal("true"); return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false"); return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null"); return .null
        default:
            return try parseNumber()
        }
    }

    private mutating func expect(_ c: Character) throws {
        guard index < bytes.count, bytes[index] == c.asciiValue! else {
            throw Error(message: "expected '\(c)' at offset \(index)")
        }
        index += 1
    }

    private mutating func consumeEither(_ a: Character, _ b: Character) throws -> Character {
        guard index < bytes.count else { throw Error(message: "unexpected end of JSON") }
        let c = bytes[index]
        index += 1
        if c == a.asciiValue! { return a }
        if c == b.asciiValue! { return b }
        throw Error(message: "expected '\(a)' or '\(b)' at offset \(index - 1)")
    }

    private mutating func literal(_ word: String) throws {
        let w = Array(word.utf8)
        guard index + w.count <= bytes.count, Array(bytes[index..<index + w.count]) == w else {
            throw Error(message: "invalid literal at offset \(index)")
        }
        index += w.count
    }

    private mutating func parseNumber() throws -> JSONValue {
        let start = index
        var isDouble = false
        while index < bytes.count {
            let c = bytes[index]
            if (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "-") || c == UInt8(ascii: "+") {
                index += 1
            } else if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") {
                isDouble = true
                index += 1
            } else {
                break
            }
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        guard !text.isEmpty else { throw Error(message: "unexpected character at offset \(start)") }
        if !isDouble, let i = Int64(text) { return .int(i) }
        guard let d = Double(text) else { throw Error(message: "invalid number '\(text)'") }
        return .double(d)
    }

    private mutating func parseString() throws -> String {
        try expect("\"")
        var scalars = String.UnicodeScalarView()
        var run: [UInt8] = []
        func flush() {
            if !run.isEmpty {
                scalars.append(contentsOf: String(decoding: run, as: UTF8.self).unicodeScalars); run.removeAll()
            }
        }
        while index < bytes.count {
            let c = bytes[index]
            index += 1
            if c == UInt8(ascii: "\"") {
                flush()
                return String(scalars)
            }
            if c == UInt8(ascii: "\\") {
                flush()
                guard index < bytes.count else { break }
                let e = bytes[index]
                index += 1
                switch e {
                case UInt8(ascii: "\""): scalars.append("\"")
                case UInt8(ascii: "\\"): scalars.append("\\")
                case UInt8(ascii: "/"): scalars.append("/")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800...0xDBFF).contains(code), index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"),
                        bytes[index + 1] == UInt8(ascii: "u")
                    {
                        index += 2
                        let low = try hex4()
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw Error(message: "invalid \\u escape") }
                    scalars.append(scalar)
                default:
                    throw Error(message: "invalid escape at offset \(index - 1)")
                }
            } else {
                if c < 0x20 { throw Error(message: "control character in string at offset \(index - 1)") }
                run.append(c)
            }
        }
        throw Error(message: "unterminated string")
    }

    private mutating func hex4() throws -> UInt32 {
        guard index + 4 <= bytes.count,
            let v = UInt32(String(decoding: bytes[index..<index + 4], as: UTF8.self), radix: 16)
        else {
            throw Error(message: "invalid \\u escape at offset \(index)")
        }
        index += 4
        return v
    }
}

/// A JSONPath subset: `$`, `.key`, `['key']`, `[index]`.
struct JSONPath: Equatable {
    enum Step: Equatable {
        case key(String)
        case index(Int)
    }
    let steps: [Step]
    let text: String

    init(_ text: String) throws {
        self.text = text
        var steps: [Step] = []
        let chars = Array(text)
        guard chars.first == "$" else { throw JSONParser.Error(message: "json_path '\(text)' must start with '$'") }
        var i = 1
        while i < chars.count {
            if chars[i] == "." {
                i += 1
                var key = ""
                while i < chars.count, chars[i] != ".", chars[i] != "[" { key.append(chars[i]); i += 1 }
                guard !key.isEmpty else { throw JSONParser.Error(message: "json_path '\(text)' has an empty key") }
                steps.append(.key(key))
            } else if chars[i] == "[" {
                i += 1
                var inner = ""
                while i < chars.count, chars[i] != "]" { inner.append(chars[i]); i += 1 }
                guard i < chars.count else {
                    throw JSONParser.Error(message: "json_path '\(text)' has an unclosed '['")
                }
                i += 1
                if let n = Int(inner) {
                    steps.append(.index(n))
                } else if inner.count >= 2,
                    (inner.first == "'" && inner.last == "'") || (inner.first == "\"" && inner.last == "\"")
                {
                    steps.append(.key(String(inner.dropFirst().dropLast())))
                } else {
                    throw JSONParser.Error(message: "json_path '\(text)' has an unsupported selector [\(inner)]")
                }
            } else {
                throw JSONParser.Error(message: "json_path '\(text)' is not supported at '\(chars[i])'")
            }
        }
        self.steps = steps
    }

    func get(_ root: JSONValue) throws -> JSONValue {
        var current = root
        for step in steps {
            switch (step, current) {
            case (.key(let k), .object(let dict)):
                guard let next = dict[k] else { throw JSONParser.Error(message: "json_path '\(text)': no key '\(k)'") }
                current = next
            case (.index(let n), .array(let items)):
                let idx = n < 0 ? items.count + n : n
                guard items.indices.contains(idx) else {
                    throw JSONParser.Error(
                        message: "json_path '\(text)': index \(n) out of range (\(items.count) items)")
                }
                current = items[idx]
            default:
                throw JSONParser.Error(
                    message: "json_path '\(text)': cannot select \(step) in a JSON \(current.typeName)")
            }
        }
        return current
    }

    func set(_ value: JSONValue, in root: JSONValue) throws -> JSONValue {
        try JSONPath.set(value, steps: steps[...], in: root, text: text)
    }

    private static func set(_ value: JSONValue, steps: ArraySlice<Step>, in node: JSONValue, text: String) throws
        -> JSONValue
    {
        guard let step = steps.first else { return value }
        switch (step, node) {
        case (.key(let k), .object(var dict)):
            dict[k] = try set(value, steps: steps.dropFirst(), in: dict[k] ?? .null, text: text)
            return .object(dict)
        case (.key(let k), .null) where steps.count == 1:
            return .object([k: value])
        case (.index(let n), .array(var items)):
            let idx = n < 0 ? items.count + n : n
            guard items.indices.contains(idx) else {
                throw JSONParser.Error(message: "json_path '\(text)': index \(n) out of range")
            }
            items[idx] = try set(value, steps: steps.dropFirst(), in: items[idx], text: text)
            return .array(items)
        default:
            throw JSONParser.Error(message: "json_path '\(text)': cannot select \(step) in a JSON \(node.typeName)")
        }
    }
}
