import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import SwiftProtobuf

/// The admin API's rules, whatever door a request came in by: metadata
/// (TaskDef and ExternalEventDef idempotency, WfSpec versioning and
/// `allowed_updates`), WfRun commands (run, events and orphan events,
/// stop, resume, delete), reads and searches, and the worker flow.
/// Routers decode a request, call one method here and encode its answer.
struct AdminService: Sendable {
    let processor: CommandProcessor
    let store: any LHStorage
    let dispatcher: TaskDispatcher
    let clock: any LHClock
    /// Attempts in workers' hands when the server last stopped, until their
    /// workers claim them or the grace period ends.
    let claims: RestartClaims
    /// Set in a cluster: commands this server does not own go to their owner.
    let cluster: ClusterRouting?

    init(
        processor: CommandProcessor, store: any LHStorage, dispatcher: TaskDispatcher,
        clock: any LHClock = SystemClock(), claims: RestartClaims = RestartClaims([], grace: 0),
        cluster: ClusterRouting? = nil
    ) {
        self.cluster = cluster
        self.processor = processor
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.claims = claims
    }

    var metadata: MetadataCache { processor.currentMetadata }

    static func checkName(_ name: String, _ what: String) throws {
        guard WorkflowEngine.isKebabCase(name) else {
            throw LHError(
                .invalidArgument, "\(what) name '\(name)' must be kebab-case (lowercase letters, digits and '-')")
        }
    }

    // MARK: - TaskDef

    /// Stores a TaskDef. Putting one that exists with the same inputs and
    /// return type answers the existing one; with others, ALREADY_EXISTS.
    func putTaskDef(_ r: Littlehorse_PutTaskDefRequest) async throws -> Littlehorse_TaskDef {
        try Self.checkName(r.name, "TaskDef")
        for v in r.inputVars {
            try Self.checkName(v.name, "input variable of TaskDef '\(r.name)': the")
            guard v.declaredType != nil else {
                throw LHError(.invalidArgument, "input variable '\(v.name)' of TaskDef '\(r.name)' has no type")
            }
        }
        var def = Littlehorse_TaskDef()
        def.id.name = r.name
        def.inputVars = r.inputVars
        def.createdAt = Google_Protobuf_Timestamp(date: clock.now())
        if r.hasReturnType { def.returnType = r.returnType }
        if r.hasDescription_p { def.description_p = r.description_p }
        if let existing = metadata.taskDefs[r.name] {
            if existing.inputVars == def.inputVars && existing.returnType == def.returnType { return existing }
            throw LHError(.alreadyExists, "TaskDef '\(r.name)' already exists with other inputs or return type")
        }
        try LHError.mapping { try store.put(taskDef: def) }
        await processor.updateMetadata { $0.taskDefs[r.name] = def }
        return def
    }

    func taskDef(_ name: String) throws -> Littlehorse_TaskDef {
        guard let t = metadata.taskDefs[name] ?? metadataAfterMiss()?.taskDefs[name] else {
            throw LHError(.notFound, "TaskDef '\(name)' not found")
        }
        return t
    }

    func searchTaskDefs(prefix: String?) -> [Littlehorse_TaskDefId] {
        metadata.taskDefs.keys.filter { prefix == nil || $0.hasPrefix(prefix!) }.sorted().map { n in
            .with { $0.name = n }
        }
    }

    // MARK: - ExternalEventDef

    /// Stores an ExternalEventDef; putting one that exists answers the existing one.
    func putExternalEventDef(_ r: Littlehorse_PutExternalEventDefRequest) async throws -> Littlehorse_ExternalEventDef {
        try Self.checkName(r.name, "ExternalEventDef")
        if let existing = metadata.externalEventDefs[r.name] { return existing }
        var def = Littlehorse_ExternalEventDef()
        def.id.name = r.name
        def.createdAt = Google_Protobuf_Timestamp(date: clock.now())
        def.retentionPolicy = r.retentionPolicy
        if r.hasContentType { def.typeInformation = r.contentType }
        try LHError.mapping { try store.put(externalEventDef: def) }
        await processor.updateMetadata { $0.externalEventDefs[r.name] = def }
        return def
    }

    func externalEventDef(_ name: String) throws -> Littlehorse_ExternalEventDef {
        guard let e = metadata.externalEventDefs[name] ?? metadataAfterMiss()?.externalEventDefs[name] else {
            throw LHError(.notFound, "ExternalEventDef '\(name)' not found")
        }
        return e
    }

    func searchExternalEventDefs(prefix: String?) -> [Littlehorse_ExternalEventDefId] {
        metadata.externalEventDefs.keys.filter { prefix == nil || $0.hasPrefix(prefix!) }.sorted().map { n in
            .with { $0.name = n }
        }
    }

    // MARK: - WfSpec

    /// Validates and stores a WfSpec under the version ``WfSpecVersioning``
    /// gives it (or answers the identical latest version).
    func putWfSpec(_ r: Littlehorse_PutWfSpecRequest) async throws -> Littlehorse_WfSpec {
        let metadata = self.metadata
        var spec = try LHError.mapping { try WorkflowEngine.validate(r, metadata: metadata.lookup) }
        switch try WfSpecVersioning.decide(
            spec, allowedUpdates: r.allowedUpdates, versions: metadata.wfSpecs[r.name] ?? [])
        {
        case .existing(let existing):
            return existing
        case .new(let id):
            spec.id = id
        }
        spec.createdAt = Google_Protobuf_Timestamp(date: clock.now())
        try LHError.mapping { try store.put(wfSpec: spec) }
        let stored = spec
        await processor.updateMetadata { $0.wfSpecs[r.name, default: []].append(stored) }
        return spec
    }

    func wfSpec(_ id: Littlehorse_WfSpecId) throws -> Littlehorse_WfSpec {
        guard let s = metadata.wfSpec(id) ?? metadataAfterMiss()?.wfSpec(id) else {
            throw LHError(.notFound, "WfSpec '\(id.name)' version \(id.majorVersion).\(id.revision) not found")
        }
        return s
    }

    func latestWfSpec(_ name: String, majorVersion: Int32?) throws -> Littlehorse_WfSpec {
        guard
            let s = metadata.latestWfSpec(name, major: majorVersion)
                ?? metadataAfterMiss()?.latestWfSpec(name, major: majorVersion)
        else {
            throw LHError(.notFound, "WfSpec '\(name)' not found")
        }
        return s
    }

    func searchWfSpecs(_ r: Littlehorse_SearchWfSpecRequest) -> [Littlehorse_WfSpecId] {
        let specs = metadata.wfSpecs.values.flatMap { $0 }
        return specs.filter { s in
            switch r.wfSpecCriteria {
            case .name(let n): s.id.name == n
            case .prefix(let p): s.id.name.hasPrefix(p)
            case .taskDefName(let t): s.uses(taskDef: t)
            case nil: true
            }
        }.map(\.id).sorted { ($0.name, $0.majorVersion, $0.revision) < ($1.name, $1.majorVersion, $1.revision) }
    }
}

extension Littlehorse_WfSpec {
    /// Whether a TASK node of any thread runs the TaskDef `name`.
    func uses(taskDef name: String) -> Bool {
        threadSpecs.values.contains { thread in
            thread.nodes.values.contains {
                if case .task(let task)? = $0.node { task.taskDefID.name == name } else { false }
            }
        }
    }
}
