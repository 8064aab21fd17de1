import Foundation
import LHEngine
import LHProto
import LHWire

/// TaskDefs, ExternalEventDefs and WfSpec versions, in memory, kept in step
/// with the store (every change is written through before it is visible).
struct MetadataCache: Sendable {
    var taskDefs: [String: Littlehorse_TaskDef] = [:]
    var externalEventDefs: [String: Littlehorse_ExternalEventDef] = [:]
    /// By name, versions in ascending order.
    var wfSpecs: [String: [Littlehorse_WfSpec]] = [:]

    var lookup: LHMetadataLookup { LHMetadataLookup(taskDefs: taskDefs, externalEventDefs: Set(externalEventDefs.keys)) }

    func wfSpec(_ id: Littlehorse_WfSpecId) -> Littlehorse_WfSpec? {
        wfSpecs[id.name]?.first { $0.id.majorVersion == id.majorVersion && $0.id.revision == id.revision }
    }

    func latestWfSpec(_ name: String, major: Int32? = nil, revision: Int32? = nil) -> Littlehorse_WfSpec? {
        var versions = wfSpecs[name] ?? []
        if let major { versions = versions.filter { $0.id.majorVersion == major } }
        if let revision { versions = versions.filter { $0.id.revision == revision } }
        return versions.last
    }

    /// The context the engine needs for WfRuns of `spec`.
    func context(for spec: Littlehorse_WfSpec) -> LHEngineContext {
        LHEngineContext(spec: spec, taskDefs: taskDefs)
    }

    /// The version a PutWfSpec with this body gets: the same as the latest
    /// when nothing changed, a new revision when only the logic changed, a
    /// new major version when the entrypoint's variables changed.
    func version(for spec: Littlehorse_WfSpec) -> (Littlehorse_WfSpecId, unchanged: Bool) {
        var id = Littlehorse_WfSpecId()
        id.name = spec.id.name
        guard let latest = wfSpecs[spec.id.name]?.last else { return (id, false) }
        if latest.threadSpecs == spec.threadSpecs && latest.entrypointThreadName == spec.entrypointThreadName {
            return (latest.id, true)
        }
        let interface = { (s: Littlehorse_WfSpec) in s.threadSpecs[s.entrypointThreadName]?.variableDefs ?? [] }
        if interface(latest) != interface(spec) {
            id.majorVersion = latest.id.majorVersion + 1
            id.revision = 0
        } else {
            id.majorVersion = latest.id.majorVersion
            id.revision = latest.id.revision + 1
        }
        return (id, false)
    }
}

extension LHError {
    /// The engine's refusals in the wire's codes (the one mapping place).
    init(_ e: LHEngineError) {
        switch e.code {
        case .notFound: self.init(.notFound, e.message)
        case .alreadyExists: self.init(.alreadyExists, e.message)
        case .failedPrecondition: self.init(.failedPrecondition, e.message)
        default: self.init(.invalidArgument, e.message)
        }
    }
}
