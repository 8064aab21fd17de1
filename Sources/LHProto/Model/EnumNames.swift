import SwiftProtobuf
import Synchronization

/// Names already worked out, by enum type and raw value.
private let knownNames = Mutex<[ObjectIdentifier: [Int: String]]>([:])

extension SwiftProtobuf.Enum {
    /// The value's name as the proto file spells it (`TASK_SCHEDULED` for
    /// `.taskScheduled`), for people and metric labels; `UNRECOGNIZED(n)` for
    /// a number this build does not know. Worked out once per value (the
    /// dashboard asks thousands of times per page).
    public var protoName: String {
        let type = ObjectIdentifier(Self.self)
        let raw = rawValue
        if let name = knownNames.withLock({ $0[type]?[raw] }) { return name }
        let swiftName = "\(self)"
        if swiftName.hasPrefix("UNRECOGNIZED") { return swiftName }
        var name = ""
        for c in swiftName {
            if c.isUppercase, !name.isEmpty { name.append("_") }
            name.append(contentsOf: c.uppercased())
        }
        knownNames.withLock { $0[type, default: [:]][raw] = name }
        return name
    }
}
