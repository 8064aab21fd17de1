import Foundation
import LHEngine
import LHProto

/// TaskDefs, ExternalEventDefs and WfSpec versions, in memory, kept in step
/// with the store (every change is written through before it is visible).
struct MetadataCache: Sendable, Equatable {
    init() {}

    var taskDefs: [String: Littlehorse_TaskDef] = [:]
    var externalEventDefs: [String: Littlehorse_ExternalEventDef] = [:]
    /// By name, versions in ascending order.
    var wfSpecs: [String: [Littlehorse_WfSpec]] = [:]

    var lookup: LHMetadataLookup {
        LHMetadataLookup(taskDefs: taskDefs, externalEventDefs: Set(externalEventDefs.keys))
    }

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
}
