import Foundation
import SwiftProtobuf

/// Protobuf binary encoding in two linear passes, byte for byte what
/// `serializedBytes()` gives.
///
/// swift-protobuf writes a nested message's length by sizing that message
/// first, at every level: a field at depth d is sized d + 1 times (the
/// StoredWfRun of every command, five levels deep, spent two thirds of its
/// encoding time sizing). Here one pass records the size of every nested
/// message in visiting order and the second writes, taking the sizes from
/// that list. Both passes walk the generated `traverse`, so field order,
/// map order (the same dictionary is iterated twice) and unknown fields come
/// out as the library writes them. `FastEncodingTests` compares the bytes.
public enum LHFastEncoding {
    public static func serializedData<M: Message>(_ message: M) throws -> Data {
        var sizer = SizingVisitor()
        try message.traverse(visitor: &sizer)
        var data = Data(count: sizer.size)
        try data.withUnsafeMutableBytes { raw in
            try write(message, sizes: sizer.nested, into: raw)
        }
        return data
    }

    public static func serializedBytes<M: Message>(_ message: M) throws -> [UInt8] {
        var sizer = SizingVisitor()
        try message.traverse(visitor: &sizer)
        return try [UInt8](unsafeUninitializedCapacity: sizer.size) { buffer, count in
            try write(message, sizes: sizer.nested, into: UnsafeMutableRawBufferPointer(buffer))
            count = sizer.size
        }
    }

    /// The encoded size of `message` (one pass).
    public static func serializedSize<M: Message>(_ message: M) throws -> Int {
        var sizer = SizingVisitor()
        try message.traverse(visitor: &sizer)
        return sizer.size
    }

    /// A message sized and ready to be written where the caller wants it
    /// (e.g. straight into a NIO buffer after a length prefix).
    public struct Prepared<M: Message> {
        public let message: M
        public let size: Int
        fileprivate let sizes: [Int]

        /// Writes the message into `raw`, which must hold exactly `size` bytes.
        public func write(into raw: UnsafeMutableRawBufferPointer) throws {
            precondition(raw.count == size, "buffer of \(raw.count) bytes for a message of \(size)")
            try LHFastEncoding.write(message, sizes: sizes, into: raw)
        }
    }

    public static func prepare<M: Message>(_ message: M) throws -> Prepared<M> {
        var sizer = SizingVisitor()
        try message.traverse(visitor: &sizer)
        return Prepared(message: message, size: sizer.size, sizes: sizer.nested)
    }

    private static func write<M: Message>(_ message: M, sizes: [Int], into raw: UnsafeMutableRawBufferPointer) throws {
        guard let base = raw.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        try sizes.withUnsafeBufferPointer { sizes in
            var writer = WritingVisitor(cursor: base, end: base + raw.count, sizes: sizes)
            try message.traverse(visitor: &writer)
            precondition(writer.cursor == writer.end, "encoded size differs from the sized one")
        }
    }
}

@inline(__always) private func varintSize(_ v: UInt64) -> Int {
    v < 0x80 ? 1 : (70 - v.leadingZeroBitCount) / 7
}

@inline(__always) private func tagSize(_ fieldNumber: Int) -> Int {
    varintSize(UInt64(fieldNumber) << 3)
}

@inline(__always) private func zigZag(_ v: Int64) -> UInt64 {
    UInt64(bitPattern: (v << 1) ^ (v >> 63))
}

/// What both passes do alike: a nested message or map entry is one
/// length-delimited record (sized in pass one, its size taken in pass two).
private protocol NestedRecordVisitor: Visitor {
    mutating func nestedRecord(_ fieldNumber: Int, _ body: (inout Self) throws -> Void) rethrows
}

extension NestedRecordVisitor {
    mutating func visitSingularMessageField<M: Message>(value: M, fieldNumber: Int) throws {
        try nestedRecord(fieldNumber) { try value.traverse(visitor: &$0) }
    }

    mutating func visitMapField<KeyType, ValueType: MapValueType>(
        fieldType: _ProtobufMap<KeyType, ValueType>.Type,
        value: _ProtobufMap<KeyType, ValueType>.BaseType,
        fieldNumber: Int
    ) throws {
        for (k, v) in value {
            try nestedRecord(fieldNumber) { visitor in
                try KeyType.visitSingular(value: k, fieldNumber: 1, with: &visitor)
                try ValueType.visitSingular(value: v, fieldNumber: 2, with: &visitor)
            }
        }
    }

    mutating func visitMapField<KeyType, ValueType>(
        fieldType: _ProtobufEnumMap<KeyType, ValueType>.Type,
        value: _ProtobufEnumMap<KeyType, ValueType>.BaseType,
        fieldNumber: Int
    ) throws where ValueType.RawValue == Int {
        for (k, v) in value {
            try nestedRecord(fieldNumber) { visitor in
                try KeyType.visitSingular(value: k, fieldNumber: 1, with: &visitor)
                try visitor.visitSingularEnumField(value: v, fieldNumber: 2)
            }
        }
    }

    mutating func visitMapField<KeyType, ValueType>(
        fieldType: _ProtobufMessageMap<KeyType, ValueType>.Type,
        value: _ProtobufMessageMap<KeyType, ValueType>.BaseType,
        fieldNumber: Int
    ) throws {
        for (k, v) in value {
            try nestedRecord(fieldNumber) { visitor in
                try KeyType.visitSingular(value: k, fieldNumber: 1, with: &visitor)
                try visitor.visitSingularMessageField(value: v, fieldNumber: 2)
            }
        }
    }
}

/// Pass one: the total size, and every nested message's (and map entry's)
/// size in visiting order.
private struct SizingVisitor: NestedRecordVisitor {
    var size = 0
    var nested: [Int] = []

    @inline(__always) mutating func lengthDelimited(_ fieldNumber: Int, _ length: Int) {
        size += tagSize(fieldNumber) + varintSize(UInt64(length)) + length
    }

    @inline(__always) mutating func varint(_ fieldNumber: Int, _ v: UInt64) {
        size += tagSize(fieldNumber) + varintSize(v)
    }

    /// Sizes what `body` visits as one nested, length-delimited record.
    @inline(__always) mutating func nestedRecord(_ fieldNumber: Int, _ body: (inout SizingVisitor) throws -> Void)
        rethrows
    {
        let slot = nested.count
        nested.append(0)
        let outer = size
        size = 0
        try body(&self)
        let inner = size
        nested[slot] = inner
        size = outer
        lengthDelimited(fieldNumber, inner)
    }

    mutating func visitUnknown(bytes: Data) throws { size += bytes.count }

    mutating func visitSingularFloatField(value: Float, fieldNumber: Int) throws { size += tagSize(fieldNumber) + 4 }
    mutating func visitSingularDoubleField(value: Double, fieldNumber: Int) throws { size += tagSize(fieldNumber) + 8 }
    mutating func visitSingularInt32Field(value: Int32, fieldNumber: Int) throws {
        varint(fieldNumber, UInt64(bitPattern: Int64(value)))
    }
    mutating func visitSingularInt64Field(value: Int64, fieldNumber: Int) throws {
        varint(fieldNumber, UInt64(bitPattern: value))
    }
    mutating func visitSingularUInt32Field(value: UInt32, fieldNumber: Int) throws {
        varint(fieldNumber, UInt64(value))
    }
    mutating func visitSingularUInt64Field(value: UInt64, fieldNumber: Int) throws { varint(fieldNumber, value) }
    mutating func visitSingularSInt32Field(value: Int32, fieldNumber: Int) throws {
        varint(fieldNumber, zigZag(Int64(value)))
    }
    mutating func visitSingularSInt64Field(value: Int64, fieldNumber: Int) throws { varint(fieldNumber, zigZag(value)) }
    mutating func visitSingularFixed32Field(value: UInt32, fieldNumber: Int) throws { size += tagSize(fieldNumber) + 4 }
    mutating func visitSingularFixed64Field(value: UInt64, fieldNumber: Int) throws { size += tagSize(fieldNumber) + 8 }
    mutating func visitSingularSFixed32Field(value: Int32, fieldNumber: Int) throws { size += tagSize(fieldNumber) + 4 }
    mutating func visitSingularSFixed64Field(value: Int64, fieldNumber: Int) throws { size += tagSize(fieldNumber) + 8 }
    mutating func visitSingularBoolField(value: Bool, fieldNumber: Int) throws { size += tagSize(fieldNumber) + 1 }
    mutating func visitSingularStringField(value: String, fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.utf8.count)
    }
    mutating func visitSingularBytesField(value: Data, fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.count)
    }
    mutating func visitSingularEnumField<E: Enum>(value: E, fieldNumber: Int) throws {
        varint(fieldNumber, UInt64(bitPattern: Int64(value.rawValue)))
    }
    mutating func visitSingularGroupField<G: Message>(value: G, fieldNumber: Int) throws {
        size += 2 * tagSize(fieldNumber)
        try value.traverse(visitor: &self)
    }

    mutating func visitPackedFloatField(value: [Float], fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.count * 4)
    }
    mutating func visitPackedDoubleField(value: [Double], fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.count * 8)
    }
    mutating func visitPackedInt32Field(value: [Int32], fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.reduce(0) { $0 + varintSize(UInt64(bitPattern: Int64($1))) })
    }
    mutating func visitPackedInt64Field(value: [Int64], fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.reduce(0) { $0 + varintSize(UInt64(bitPattern: $1)) })
    }
    mutating func visitPackedUInt32Field(value: [UInt32], fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.reduce(0) { $0 + varintSize(UInt64($1)) })
    }
    mutating func visitPackedUInt64Field(value: [UInt64], fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.reduce(0) { $0 + varintSize($1) })
    }
    mutating func visitPackedSInt32Field(value: [Int32], fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.reduce(0) { $0 + varintSize(zigZag(Int64($1))) })
    }
    mutating func visitPackedSInt64Field(value: [Int64], fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.reduce(0) { $0 + varintSize(zigZag($1)) })
    }
    mutating func visitPackedFixed32Field(value: [UInt32], fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.count * 4)
    }
    mutating func visitPackedFixed64Field(value: [UInt64], fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.count * 8)
    }
    mutating func visitPackedSFixed32Field(value: [Int32], fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.count * 4)
    }
    mutating func visitPackedSFixed64Field(value: [Int64], fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.count * 8)
    }
    mutating func visitPackedBoolField(value: [Bool], fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.count)
    }
    mutating func visitPackedEnumField<E: Enum>(value: [E], fieldNumber: Int) throws {
        lengthDelimited(fieldNumber, value.reduce(0) { $0 + varintSize(UInt64(bitPattern: Int64($1.rawValue))) })
    }
}

/// Pass two: writes, taking nested sizes from pass one in the same order.
private struct WritingVisitor: NestedRecordVisitor {
    var cursor: UnsafeMutablePointer<UInt8>
    let end: UnsafeMutablePointer<UInt8>
    let sizes: UnsafeBufferPointer<Int>
    var next = 0

    init(cursor: UnsafeMutablePointer<UInt8>, end: UnsafeMutablePointer<UInt8>, sizes: UnsafeBufferPointer<Int>) {
        self.cursor = cursor
        self.end = end
        self.sizes = sizes
    }

    @inline(__always) mutating func room(_ n: Int) {
        precondition(end - cursor >= n, "encoding ran past the sized buffer")
    }

    @inline(__always) mutating func putVarint(_ value: UInt64) {
        room(varintSize(value))
        var v = value
        while v >= 0x80 {
            cursor.pointee = UInt8(truncatingIfNeeded: v) | 0x80
            cursor += 1
            v >>= 7
        }
        cursor.pointee = UInt8(v)
        cursor += 1
    }

    @inline(__always) mutating func tag(_ fieldNumber: Int, _ wireType: UInt64) {
        putVarint(UInt64(fieldNumber) << 3 | wireType)
    }

    @inline(__always) mutating func putFixed32(_ v: UInt32) {
        room(4)
        UnsafeMutableRawPointer(cursor).storeBytes(of: v.littleEndian, as: UInt32.self)
        cursor += 4
    }

    @inline(__always) mutating func putFixed64(_ v: UInt64) {
        room(8)
        UnsafeMutableRawPointer(cursor).storeBytes(of: v.littleEndian, as: UInt64.self)
        cursor += 8
    }

    @inline(__always) mutating func putBytes(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        room(bytes.count)
        cursor.update(from: base.assumingMemoryBound(to: UInt8.self), count: bytes.count)
        cursor += bytes.count
    }

    /// A packed field of varints: its length, then each value as `varint` makes it.
    @inline(__always) mutating func putPackedVarints<T>(_ fieldNumber: Int, _ values: [T], _ varint: (T) -> UInt64) {
        tag(fieldNumber, 2)
        putVarint(UInt64(values.reduce(0) { $0 + varintSize(varint($1)) }))
        for v in values { putVarint(varint(v)) }
    }

    @inline(__always) mutating func nextSize() -> Int {
        precondition(next < sizes.count, "more nested messages than were sized")
        defer { next += 1 }
        return sizes[next]
    }

    @inline(__always) mutating func nestedRecord(_ fieldNumber: Int, _ body: (inout WritingVisitor) throws -> Void)
        rethrows
    {
        tag(fieldNumber, 2)
        putVarint(UInt64(nextSize()))
        try body(&self)
    }

    mutating func visitUnknown(bytes: Data) throws { bytes.withUnsafeBytes { putBytes($0) } }

    mutating func visitSingularFloatField(value: Float, fieldNumber: Int) throws {
        tag(fieldNumber, 5); putFixed32(value.bitPattern)
    }
    mutating func visitSingularDoubleField(value: Double, fieldNumber: Int) throws {
        tag(fieldNumber, 1); putFixed64(value.bitPattern)
    }
    mutating func visitSingularInt32Field(value: Int32, fieldNumber: Int) throws {
        tag(fieldNumber, 0); putVarint(UInt64(bitPattern: Int64(value)))
    }
    mutating func visitSingularInt64Field(value: Int64, fieldNumber: Int) throws {
        tag(fieldNumber, 0); putVarint(UInt64(bitPattern: value))
    }
    mutating func visitSingularUInt32Field(value: UInt32, fieldNumber: Int) throws {
        tag(fieldNumber, 0); putVarint(UInt64(value))
    }
    mutating func visitSingularUInt64Field(value: UInt64, fieldNumber: Int) throws {
        tag(fieldNumber, 0); putVarint(value)
    }
    mutating func visitSingularSInt32Field(value: Int32, fieldNumber: Int) throws {
        tag(fieldNumber, 0); putVarint(zigZag(Int64(value)))
    }
    mutating func visitSingularSInt64Field(value: Int64, fieldNumber: Int) throws {
        tag(fieldNumber, 0); putVarint(zigZag(value))
    }
    mutating func visitSingularFixed32Field(value: UInt32, fieldNumber: Int) throws {
        tag(fieldNumber, 5); putFixed32(value)
    }
    mutating func visitSingularFixed64Field(value: UInt64, fieldNumber: Int) throws {
        tag(fieldNumber, 1); putFixed64(value)
    }
    mutating func visitSingularSFixed32Field(value: Int32, fieldNumber: Int) throws {
        tag(fieldNumber, 5); putFixed32(UInt32(bitPattern: value))
    }
    mutating func visitSingularSFixed64Field(value: Int64, fieldNumber: Int) throws {
        tag(fieldNumber, 1); putFixed64(UInt64(bitPattern: value))
    }
    mutating func visitSingularBoolField(value: Bool, fieldNumber: Int) throws {
        tag(fieldNumber, 0); putVarint(value ? 1 : 0)
    }
    mutating func visitSingularStringField(value: String, fieldNumber: Int) throws {
        tag(fieldNumber, 2)
        var value = value
        value.withUTF8 { utf8 in
            putVarint(UInt64(utf8.count))
            putBytes(UnsafeRawBufferPointer(utf8))
        }
    }
    mutating func visitSingularBytesField(value: Data, fieldNumber: Int) throws {
        tag(fieldNumber, 2)
        putVarint(UInt64(value.count))
        value.withUnsafeBytes { putBytes($0) }
    }
    mutating func visitSingularEnumField<E: Enum>(value: E, fieldNumber: Int) throws {
        tag(fieldNumber, 0)
        putVarint(UInt64(bitPattern: Int64(value.rawValue)))
    }
    mutating func visitSingularGroupField<G: Message>(value: G, fieldNumber: Int) throws {
        tag(fieldNumber, 3)
        try value.traverse(visitor: &self)
        tag(fieldNumber, 4)
    }

    mutating func visitPackedFloatField(value: [Float], fieldNumber: Int) throws {
        tag(fieldNumber, 2); putVarint(UInt64(value.count * 4))
        for v in value { putFixed32(v.bitPattern) }
    }
    mutating func visitPackedDoubleField(value: [Double], fieldNumber: Int) throws {
        tag(fieldNumber, 2); putVarint(UInt64(value.count * 8))
        for v in value { putFixed64(v.bitPattern) }
    }
    mutating func visitPackedInt32Field(value: [Int32], fieldNumber: Int) throws {
        putPackedVarints(fieldNumber, value) { UInt64(bitPattern: Int64($0)) }
    }
    mutating func visitPackedInt64Field(value: [Int64], fieldNumber: Int) throws {
        putPackedVarints(fieldNumber, value) { UInt64(bitPattern: $0) }
    }
    mutating func visitPackedUInt32Field(value: [UInt32], fieldNumber: Int) throws {
        putPackedVarints(fieldNumber, value) { UInt64($0) }
    }
    mutating func visitPackedUInt64Field(value: [UInt64], fieldNumber: Int) throws {
        putPackedVarints(fieldNumber, value) { $0 }
    }
    mutating func visitPackedSInt32Field(value: [Int32], fieldNumber: Int) throws {
        putPackedVarints(fieldNumber, value) { zigZag(Int64($0)) }
    }
    mutating func visitPackedSInt64Field(value: [Int64], fieldNumber: Int) throws {
        putPackedVarints(fieldNumber, value) { zigZag($0) }
    }
    mutating func visitPackedFixed32Field(value: [UInt32], fieldNumber: Int) throws {
        tag(fieldNumber, 2); putVarint(UInt64(value.count * 4))
        for v in value { putFixed32(v) }
    }
    mutating func visitPackedFixed64Field(value: [UInt64], fieldNumber: Int) throws {
        tag(fieldNumber, 2); putVarint(UInt64(value.count * 8))
        for v in value { putFixed64(v) }
    }
    mutating func visitPackedSFixed32Field(value: [Int32], fieldNumber: Int) throws {
        tag(fieldNumber, 2); putVarint(UInt64(value.count * 4))
        for v in value { putFixed32(UInt32(bitPattern: v)) }
    }
    mutating func visitPackedSFixed64Field(value: [Int64], fieldNumber: Int) throws {
        tag(fieldNumber, 2); putVarint(UInt64(value.count * 8))
        for v in value { putFixed64(UInt64(bitPattern: v)) }
    }
    mutating func visitPackedBoolField(value: [Bool], fieldNumber: Int) throws {
        tag(fieldNumber, 2); putVarint(UInt64(value.count))
        for v in value { putVarint(v ? 1 : 0) }
    }
    mutating func visitPackedEnumField<E: Enum>(value: [E], fieldNumber: Int) throws {
        putPackedVarints(fieldNumber, value) { UInt64(bitPattern: Int64($0.rawValue)) }
    }
}
