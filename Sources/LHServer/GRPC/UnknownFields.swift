import Foundation
import LHProto
import SwiftProtobuf

/// Finds fields of a request that this server's model does not declare (a
/// struct variable, `lh_path`, a child workflow, ...): swift-protobuf keeps
/// them as unknown fields, and a request carrying them would be run as if
/// they were not there. The gRPC front refuses such a request instead,
/// naming the message and the field's number.
struct UnknownFields: Visitor {
    /// "field <number> of <message> (in <request>)" for each unknown field found.
    private(set) var found: [String] = []
    private var path: [String]

    private init(root: String) { path = [root] }

    /// Throws INVALID_ARGUMENT naming the first unknown field of `message`.
    static func refuse(in message: some Message) throws {
        var visitor = UnknownFields(root: type(of: message).protoMessageName)
        try message.traverse(visitor: &visitor)
        guard let first = visitor.found.first else { return }
        throw LHError(
            .invalidArgument,
            "the request uses \(first), which this server does not support (a field of LittleHorse's model it does not implement, such as a struct value, an lh_path or a child workflow)"
        )
    }

    mutating func visitUnknown(bytes: Data) throws {
        var number = 0
        var shift = 0
        for byte in bytes {
            number |= Int(byte & 0x7F) << shift
            if byte & 0x80 == 0 { break }
            shift += 7
            if shift > 63 { break }
        }
        let message = path[path.count - 1]
        let field = UnsupportedFields.names[message]?[number >> 3].map { "\($0) (\(number >> 3))" } ?? "\(number >> 3)"
        let outer = path.count > 1 ? " (in \(path[0]))" : ""
        found.append("field \(field) of \(message)\(outer)")
    }

    mutating func visitSingularMessageField<M: Message>(value: M, fieldNumber: Int) throws {
        path.append("\(M.protoMessageName)")
        defer { path.removeLast() }
        try value.traverse(visitor: &self)
    }

    mutating func visitRepeatedMessageField<M: Message>(value: [M], fieldNumber: Int) throws {
        for v in value { try visitSingularMessageField(value: v, fieldNumber: fieldNumber) }
    }

    mutating func visitSingularGroupField<G: Message>(value: G, fieldNumber: Int) throws {
        try visitSingularMessageField(value: value, fieldNumber: fieldNumber)
    }

    mutating func visitMapField<KeyType, ValueType: MapValueType>(
        fieldType: _ProtobufMap<KeyType, ValueType>.Type, value: _ProtobufMap<KeyType, ValueType>.BaseType,
        fieldNumber: Int
    ) throws {}

    mutating func visitMapField<KeyType, ValueType>(
        fieldType: _ProtobufEnumMap<KeyType, ValueType>.Type, value: _ProtobufEnumMap<KeyType, ValueType>.BaseType,
        fieldNumber: Int
    ) throws {}

    mutating func visitMapField<KeyType, ValueType>(
        fieldType: _ProtobufMessageMap<KeyType, ValueType>.Type,
        value: _ProtobufMessageMap<KeyType, ValueType>.BaseType, fieldNumber: Int
    ) throws {
        for (_, v) in value { try visitSingularMessageField(value: v, fieldNumber: fieldNumber) }
    }

    // Scalars carry no unknown fields.
    mutating func visitSingularDoubleField(value: Double, fieldNumber: Int) throws {}
    mutating func visitSingularInt64Field(value: Int64, fieldNumber: Int) throws {}
    mutating func visitSingularUInt64Field(value: UInt64, fieldNumber: Int) throws {}
    mutating func visitSingularBoolField(value: Bool, fieldNumber: Int) throws {}
    mutating func visitSingularStringField(value: String, fieldNumber: Int) throws {}
    mutating func visitSingularBytesField(value: Data, fieldNumber: Int) throws {}
    mutating func visitSingularEnumField<E: Enum>(value: E, fieldNumber: Int) throws {}
    mutating func visitExtensionFields(fields: ExtensionFieldValueSet, start: Int, end: Int) throws {}
    mutating func visitExtensionFieldsAsMessageSet(fields: ExtensionFieldValueSet, start: Int, end: Int) throws {}
}
