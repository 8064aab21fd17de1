/// LittleHorse's variable types by name, and the type of a declaration or a
/// value: the one place these are written (the engine, the server, the
/// worker SDK and lhctl all use them).
extension Littlehorse_VariableType {
    /// LittleHorse's spelling, e.g. `JSON_ARR`.
    public var name: String {
        switch self {
        case .jsonObj: "JSON_OBJ"
        case .jsonArr: "JSON_ARR"
        case .double: "DOUBLE"
        case .bool: "BOOL"
        case .str: "STR"
        case .int: "INT"
        case .bytes: "BYTES"
        case .wfRunID: "WF_RUN_ID"
        case .timestamp: "TIMESTAMP"
        case .UNRECOGNIZED(let n): "TYPE_\(n)"
        }
    }

    /// The type LittleHorse spells `name` (any letter case), e.g. `STR`.
    public init?(name: String) {
        guard let t = Self.allCases.first(where: { $0.name == name.uppercased() }) else { return nil }
        self = t
    }
}

extension Littlehorse_VariableDef {
    /// The declared type, from `type_def` or the older `type` field; nil
    /// when neither names a primitive type.
    public var declaredType: Littlehorse_VariableType? {
        if hasTypeDef, case .primitiveType(let t)? = typeDef.definedType { return t }
        if hasType { return type }
        return nil
    }
}

extension Littlehorse_VariableValue {
    /// The value's type; nil for NULL.
    public var type: Littlehorse_VariableType? {
        switch value {
        case nil: nil
        case .jsonObj: .jsonObj
        case .jsonArr: .jsonArr
        case .double: .double
        case .bool: .bool
        case .str: .str
        case .int: .int
        case .bytes: .bytes
        case .wfRunID: .wfRunID
        case .utcTimestamp: .timestamp
        }
    }
}
