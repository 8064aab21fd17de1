import ArgumentParser
import Foundation
import LHClient
import LHProto
import SwiftProtobuf

/// Prints a message as LittleHorse's lhctl does: protobuf JSON with
/// camelCase names and every field, also the unset ones (`"masked": false`,
/// `"threadRunNumber": 0`), indented by two spaces (`LHProtoJSON`).
func printJSON(_ message: any SwiftProtobuf.Message) throws {
    print(try LHProtoJSON.string(message))
}

/// Parses a value given on the command line as `type`; a value that does not
/// parse is refused before anything is sent, naming it.
func parseValue(_ text: String, as type: Littlehorse_VariableType, what: String) throws -> Littlehorse_VariableValue {
    func bad(_ why: String) -> ValidationError {
        ValidationError("\(what): '\(text)' is not a valid \(type.name)\(why.isEmpty ? "" : ": \(why)")")
    }
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
        guard let obj = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]) else {
            throw bad("not JSON")
        }
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
