import SwiftProtobuf

extension SwiftProtobuf.Enum {
    /// The value's name as the proto file spells it (`TASK_SCHEDULED` for
    /// `.taskScheduled`), for people and metric labels; `UNRECOGNIZED(n)` for
    /// a number this build does not know.
    public var protoName: String {
        let swiftName = "\(self)"
        if swiftName.hasPrefix("UNRECOGNIZED") { return swiftName }
        var name = ""
        for c in swiftName {
            if c.isUppercase, !name.isEmpty, name.last != "(" { name.append("_") }
            name.append(contentsOf: c.uppercased())
        }
        return name
    }
}
