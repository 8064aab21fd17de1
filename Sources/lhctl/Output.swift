import Foundation
import LHClient
import LHEngine
import SwiftProtobuf

/// Prints a message as LittleHorse's lhctl does: protobuf JSON with
/// camelCase names, indented by two spaces.
func printJSON(_ message: any SwiftProtobuf.Message) {
    let compact = (try? message.jsonString()) ?? "{}"
    print(prettyJSON(compact))
}

/// Re-indents compact JSON without reordering keys.
func prettyJSON(_ compact: String) -> String {
    var out = ""
    var indent = 0
    var inString = false
    var escaped = false
    let chars = Array(compact)
    var i = 0
    func newline() { out += "\n" + String(repeating: "  ", count: indent) }
    while i < chars.count {
        let c = chars[i]
        if inString {
            out.append(c)
            if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { inString = false }
            i += 1
            continue
        }
        switch c {
        case "\"":
            inString = true
            out.append(c)
        case "{", "[":
            let close: Character = c == "{" ? "}" : "]"
            if i + 1 < chars.count && chars[i + 1] == close {
                out += String([c, close])
                i += 1
            } else {
                out.append(c)
                indent += 1
                newline()
            }
        case "}", "]":
            indent -= 1
            newline()
            out.append(c)
        case ",":
            out.append(c)
            newline()
        case ":":
            out += ": "
        default:
            if !c.isWhitespace { out.append(c) }
        }
        i += 1
    }
    return out
}

/// Parses a value given on the command line as `type`; a value that does not
/// parse is refused before anything is sent, naming it.
func parseValue(_ text: String, as type: Littlehorse_VariableType, what: String) throws -> Littlehorse_VariableValue {
    func bad(_ why: String) -> ValidationError { ValidationError("\(what): '\(text)' is not a valid \(type.name)\(why.isEmpty ? "" : ": \(why)")") }
    switch type {
    case .str: return .with { $0.str = text }
    case .int:
        guard let i = Int64(text) else { throw bad("") }
        return .with { $0.int = i }
    case .double:
        guard let d = Double(text) else { throw bad("") }
        return .with { $0.double = d }
    case .bool:
        switch text.lowercased() {
        case "true": return .with { $0.bool = true }
        case "false": return .with { $0.bool = false }
        default: throw bad("use true or false")
        }
    case .jsonObj, .jsonArr:
        guard let obj = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]) else { throw bad("not JSON") }
        if type == .jsonObj {
            guard obj is [String: Any] else { throw bad("not a JSON object") }
            return .with { $0.jsonObj = text }
        }
        guard obj is [Any] else { throw bad("not a JSON array") }
        return .with { $0.jsonArr = text }
    case .bytes:
        guard let d = Data(base64Encoded: text) else { throw bad("not base64") }
        return .with { $0.bytes = d }
    case .wfRunID:
        return .with { $0.wfRunID.id = text }
    case .timestamp:
        let f = ISO8601DateFormatter()
        guard let date = f.date(from: text) else { throw bad("use ISO 8601, e.g. 2025-03-15T13:58:48Z") }
        return .with { $0.utcTimestamp = Google_Protobuf_Timestamp(date: date) }
    case .UNRECOGNIZED:
        throw bad("unknown type")
    }
}

import ArgumentParser
