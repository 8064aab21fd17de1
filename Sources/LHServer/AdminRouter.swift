import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import SwiftProtobuf

/// Answers the admin API and the worker flow over the wire.
public struct LHAdminRouter: LHRequestRouter {
    let core: LHCore

    public init(core: LHCore) {
        self.core = core
    }

    var processor: CommandProcessor { core.processor }

    public func handle(_ request: Lhwire_Envelope.OneOf_Kind, session: LHSession) async throws -> Lhwire_Envelope.OneOf_Kind? {
        // The frequent requests first, each in a small function of its own:
        // an async function's frame holds the bindings of all its cases, and
        // a frame too large for the task's first slab costs a malloc and a
        // free per request.
        switch request {
        case .reportTask(let report): return try await reportTask(report, session: session)
        case .runWf(let r): return .wfRun(try await runWf(r))
        default: return try await handleOther(request, session: session)
        }
    }

    /// RunWf, ReportTask and PutExternalEvent go from the event loop straight
    /// into the processor's next group commit, answered from the commit
    /// thread once durable: no task, no actor hop.
    public func handleDirectly(_ request: Lhwire_Envelope.OneOf_Kind, session: LHSession,
                               reply: @escaping @Sendable (Result<Lhwire_Envelope.OneOf_Kind?, Error>) -> Void) -> Bool {
        switch request {
        case .reportTask(let report):
            let dispatcher = core.dispatcher
            let connection = session.token.id
            // The worker has room again once the report is settled, either way.
            let settled: @Sendable (Result<Lhwire_Envelope.OneOf_Kind?, Error>) -> Void = { result in
                dispatcher.reported(connection: connection, wfRunId: report.taskRunID.wfRunID.id, guid: report.taskRunID.taskGuid)
                reply(result)
            }
            enqueue({ reportTaskJob(report, from: connection) }, reply: settled) { _ in .empty(.init()) }
        case .runWf(let r):
            enqueue({ try runWfJob(r) }, reply: reply) { .wfRun($0) }
        case .putExternalEvent(let r):
            enqueue({ try putExternalEventJob(r) }, reply: reply) { .externalEvent($0) }
        default:
            return false
        }
        return true
    }

    /// Makes a request's job and enqueues it; `answer` turns its result into
    /// the response (an error making or running the job is the response).
    private func enqueue<T: Sendable>(
        _ make: () throws -> (String, @Sendable (inout CommandProcessor.Staging) throws -> T),
        reply: @escaping @Sendable (Result<Lhwire_Envelope.OneOf_Kind?, Error>) -> Void,
        answer: @escaping @Sendable (T) -> Lhwire_Envelope.OneOf_Kind
    ) {
        let key: String, work: @Sendable (inout CommandProcessor.Staging) throws -> T
        do {
            (key, work) = try make()
        } catch {
            reply(.failure(error))
            return
        }
        processor.enqueue(key: key, { try work(&$0) }) { result in reply(result.map { answer($0 as! T) }) }
    }

    func reportTask(_ report: Littlehorse_ReportTaskRun, session: LHSession) async throws -> Lhwire_Envelope.OneOf_Kind? {
        let (key, work) = reportTaskJob(report, from: session.token.id)
        defer { core.dispatcher.reported(connection: session.token.id, wfRunId: key, guid: report.taskRunID.taskGuid) }
        try await processor.submit(key: key, work)
        return .empty(.init())
    }

    /// The job of a worker's report; `connection` is that worker's, which
    /// gets first refusal of the attempts the report makes ready.
    func reportTaskJob(_ report: Littlehorse_ReportTaskRun, from connection: ObjectIdentifier) -> (String, @Sendable (inout CommandProcessor.Staging) throws -> Void) {
        let id = report.taskRunID.wfRunID.id
        return (id, { s in
            s.reportingWorker = connection
            defer { s.reportingWorker = nil }
            try CommandProcessor.apply(.reportTask(report), to: id, in: &s)
        })
    }

    func handleOther(_ request: Lhwire_Envelope.OneOf_Kind, session: LHSession) async throws -> Lhwire_Envelope.OneOf_Kind? {
        switch request {
        case .getServerVersion:
            return .serverVersion(LHServer.version)
        case .heartbeat:
            return nil
        case .putTaskDef(let r): return .taskDef(try await putTaskDef(r))
        case .getTaskDef(let id):
            guard let t = await processor.metadata.taskDefs[id.name] else { throw LHError(.notFound, "TaskDef '\(id.name)' not found") }
            return .taskDef(t)
        case .putExternalEventDef(let r): return .externalEventDef(try await putExternalEventDef(r))
        case .getExternalEventDef(let id):
            guard let e = await processor.metadata.externalEventDefs[id.name] else { throw LHError(.notFound, "ExternalEventDef '\(id.name)' not found") }
            return .externalEventDef(e)
        case .putWfSpec(let r): return .wfSpec(try await putWfSpec(r))
        case .getWfSpec(let id):
            guard let s = await processor.metadata.wfSpec(id) else {
                throw LHError(.notFound, "WfSpec '\(id.name)' version \(id.majorVersion).\(id.revision) not found")
            }
            return .wfSpec(s)
        case .getLatestWfSpec(let r):
            guard let s = await processor.metadata.latestWfSpec(r.name, major: r.hasMajorVersion ? r.majorVersion : nil) else {
                throw LHError(.notFound, "WfSpec '\(r.name)' not found")
            }
            return .wfSpec(s)
        case .searchWfSpec(let r):
            let specs = await processor.metadata.wfSpecs.values.flatMap { $0 }
            let ids = specs.filter { s in
                switch r.wfSpecCriteria {
                case .name(let n): s.id.name == n
                case .prefix(let p): s.id.name.hasPrefix(p)
                case .taskDefName(let t): s.threadSpecs.values.contains { $0.nodes.values.contains { if case .task(let task)? = $0.node { task.taskDefID.name == t } else { false } } }
                case nil: true
                }
            }.map(\.id).sorted { ($0.name, $0.majorVersion, $0.revision) < ($1.name, $1.majorVersion, $1.revision) }
            return .wfSpecIDList(.with { $0.results = ids })
        case .searchTaskDef(let r):
            let names = await processor.metadata.taskDefs.keys.filter { !r.hasPrefix || $0.hasPrefix(r.prefix) }.sorted()
            return .taskDefIDList(.with { $0.results = names.map { n in .with { $0.name = n } } })
        case .searchExternalEventDef(let r):
            let names = await processor.metadata.externalEventDefs.keys.filter { !r.hasPrefix || $0.hasPrefix(r.prefix) }.sorted()
            return .externalEventDefIDList(.with { $0.results = names.map { n in .with { $0.name = n } } })
        case .runWf(let r): return .wfRun(try await runWf(r))
        case .getWfRun(let id): return .wfRun(try await state(id.id).wfRun)
        case .stopWfRun(let r):
            try await processor.submit(key: r.wfRunID.id) { (s: inout CommandProcessor.Staging) -> Void in
                try CommandProcessor.apply(.stopThread(r.threadRunNumber), to: r.wfRunID.id, in: &s)
            }
            return .empty(.init())
        case .resumeWfRun(let r):
            try await processor.submit(key: r.wfRunID.id) { (s: inout CommandProcessor.Staging) -> Void in
                try CommandProcessor.apply(.resumeThread(r.threadRunNumber), to: r.wfRunID.id, in: &s)
            }
            return .empty(.init())
        case .deleteWfRun(let r):
            let id = r.id.id
            try await processor.submit(key: id) { (s: inout CommandProcessor.Staging) -> Void in
                guard try s.state(id) != nil else { throw LHError(.notFound, "WfRun '\(id)' not found") }
                s.states[id] = nil
                s.batch.wfRuns[id] = nil
                s.deleted.insert(id)
                s.batch.deletedWfRuns.insert(id)
            }
            return .empty(.init())
        case .putExternalEvent(let r): return .externalEvent(try await putExternalEvent(r))
        case .getExternalEvent(let id):
            let events = try await events(of: id.wfRunID.id)
            guard let e = events.first(where: { $0.id.guid == id.guid && $0.id.externalEventDefID.name == id.externalEventDefID.name }) else {
                throw LHError(.notFound, "ExternalEvent '\(id.externalEventDefID.name)/\(id.guid)' of WfRun '\(id.wfRunID.id)' not found")
            }
            return .externalEvent(e)
        case .listExternalEvents(let r):
            let list = (try? await events(of: r.wfRunID.id)) ?? []
            return .externalEventList(.with { $0.results = list })
        case .getNodeRun(let id):
            let s = try await state(id.wfRunID.id)
            guard let n = s.nodeRuns[NodeRunKey(thread: id.threadRunNumber, position: id.position)] else {
                throw LHError(.notFound, "NodeRun \(id.threadRunNumber)/\(id.position) of WfRun '\(id.wfRunID.id)' not found")
            }
            return .nodeRun(n)
        case .listNodeRuns(let r):
            let s = try await state(r.wfRunID.id)
            let runs = s.nodeRuns.sorted { $0.key < $1.key }.map(\.value).filter { !r.hasThreadRunNumber || $0.id.threadRunNumber == r.threadRunNumber }
            return .nodeRunList(.with { $0.results = runs })
        case .getTaskRun(let id):
            let s = try await state(id.wfRunID.id)
            guard let t = s.taskRuns[id.taskGuid] else { throw LHError(.notFound, "TaskRun '\(id.taskGuid)' of WfRun '\(id.wfRunID.id)' not found") }
            return .taskRun(t)
        case .listTaskRuns(let r):
            let s = try await state(r.wfRunID.id)
            return .taskRunList(.with { $0.results = s.taskRuns.values.sorted { ($0.scheduledAt.date, $0.id.taskGuid) < ($1.scheduledAt.date, $1.id.taskGuid) } })
        case .getVariable(let id):
            let s = try await state(id.wfRunID.id)
            guard let v = s.variables[VariableKey(thread: id.threadRunNumber, name: id.name)] else {
                throw LHError(.notFound, "Variable '\(id.name)' of thread \(id.threadRunNumber) in WfRun '\(id.wfRunID.id)' not found")
            }
            return .variable(v)
        case .listVariables(let r):
            let s = try await state(r.wfRunID.id)
            return .variableList(.with { $0.results = s.variables.sorted { $0.key < $1.key }.map(\.value) })
        case .searchWfRun(let r):
            guard !r.wfSpecName.isEmpty else { throw LHError(.invalidArgument, "search wfRun needs wf_spec_name") }
            let page = try core.store.searchWfRuns(r)
            return .wfRunIDList(.with { l in
                l.results = page.results.map { id in .with { $0.id = id } }
                if let b = page.bookmark { l.bookmark = b }
            })
        case .searchTaskRun(let r):
            guard !r.taskDefName.isEmpty else { throw LHError(.invalidArgument, "search taskRun needs task_def_name") }
            let page = try core.store.searchTaskRuns(r)
            return .taskRunIDList(.with { l in
                l.results = page.results
                if let b = page.bookmark { l.bookmark = b }
            })
        case .searchVariable(let r):
            do {
                let page = try core.store.searchVariables(r)
                return .variableIDList(.with { l in
                    l.results = page.results
                    if let b = page.bookmark { l.bookmark = b }
                })
            } catch let e as StoreError where e.isInvalidArgument {
                throw LHError(.invalidArgument, e.message)
            }
        case .subscribe(let r):
            guard session.role == .worker else { throw LHError(.failedPrecondition, "subscribe is for connections whose hello has role WORKER") }
            guard await processor.metadata.taskDefs[r.taskDefID.name] != nil else {
                throw LHError(.notFound, "TaskDef '\(r.taskDefID.name)' not found")
            }
            core.dispatcher.subscribe(connection: session.token.id, workerId: r.taskWorkerID.isEmpty ? session.clientId : r.taskWorkerID,
                                            taskDef: r.taskDefID.name, capacity: Int(max(1, r.capacity)), push: session.responder)
            return .empty(.init())
        case .reportTask(let report): return try await reportTask(report, session: session)
        case .hello:
            return nil
        default:
            throw LHError(.invalidArgument, "\(Lhwire_Envelope(id: 0, request).kindName) is a response, not a request")
        }
    }

    public func connectionClosed(_ session: LHSession) async {
        core.dispatcher.disconnected(connection: session.token.id)
    }

    // MARK: - Requests

    func state(_ id: String) async throws -> WfRunState {
        guard !id.isEmpty else { throw LHError(.invalidArgument, "wf_run_id is empty") }
        guard let s = try await processor.read(id) else { throw LHError(.notFound, "WfRun '\(id)' not found") }
        return s
    }

    func events(of wfRunId: String) async throws -> [Littlehorse_ExternalEvent] {
        if let s = try await processor.read(wfRunId) { return s.externalEvents }
        return try core.store.orphanEvents(of: wfRunId)
    }

    func checkName(_ name: String, _ what: String) throws {
        guard LHEngine.isKebabCase(name) else {
            throw LHError(.invalidArgument, "\(what) name '\(name)' must be kebab-case (lowercase letters, digits and '-')")
        }
    }

    func putTaskDef(_ r: Littlehorse_PutTaskDefRequest) async throws -> Littlehorse_TaskDef {
        try checkName(r.name, "TaskDef")
        for v in r.inputVars {
            try checkName(v.name, "input variable of TaskDef '\(r.name)': the")
            guard v.declaredTypeForServer != nil else { throw LHError(.invalidArgument, "input variable '\(v.name)' of TaskDef '\(r.name)' has no type") }
        }
        var def = Littlehorse_TaskDef()
        def.id.name = r.name
        def.inputVars = r.inputVars
        def.createdAt = Google_Protobuf_Timestamp(date: Date())
        if r.hasReturnType { def.returnType = r.returnType }
        if r.hasDescription_p { def.description_p = r.description_p }
        if let existing = await processor.metadata.taskDefs[r.name] {
            if existing.inputVars == def.inputVars && existing.returnType == def.returnType { return existing }
            throw LHError(.alreadyExists, "TaskDef '\(r.name)' already exists with other inputs or return type")
        }
        try core.store.put(taskDef: def)
        await processor.updateMetadata { $0.taskDefs[r.name] = def }
        return def
    }

    func putExternalEventDef(_ r: Littlehorse_PutExternalEventDefRequest) async throws -> Littlehorse_ExternalEventDef {
        try checkName(r.name, "ExternalEventDef")
        if let existing = await processor.metadata.externalEventDefs[r.name] { return existing }
        var def = Littlehorse_ExternalEventDef()
        def.id.name = r.name
        def.createdAt = Google_Protobuf_Timestamp(date: Date())
        def.retentionPolicy = r.retentionPolicy
        if r.hasContentType { def.typeInformation = r.contentType }
        try core.store.put(externalEventDef: def)
        await processor.updateMetadata { $0.externalEventDefs[r.name] = def }
        return def
    }

    func putWfSpec(_ r: Littlehorse_PutWfSpecRequest) async throws -> Littlehorse_WfSpec {
        let metadata = processor.currentMetadata
        var spec: Littlehorse_WfSpec
        do {
            spec = try LHEngine.validate(r, metadata: metadata.lookup)
        } catch let e as LHEngineError {
            throw LHError(e)
        }
        let (id, unchanged) = metadata.version(for: spec)
        if unchanged, let existing = metadata.wfSpec(id) { return existing }
        if r.allowedUpdates == .noUpdates, metadata.wfSpecs[r.name] != nil {
            throw LHError(.failedPrecondition, "WfSpec '\(r.name)' exists and allowed_updates is NO_UPDATES")
        }
        if r.allowedUpdates == .minorRevisionUpdates, let latest = metadata.wfSpecs[r.name]?.last, id.majorVersion != latest.id.majorVersion {
            throw LHError(.failedPrecondition, "WfSpec '\(r.name)': the change needs a new major version but allowed_updates is MINOR_REVISION_UPDATES")
        }
        spec.id = id
        spec.createdAt = Google_Protobuf_Timestamp(date: Date())
        try core.store.put(wfSpec: spec)
        await processor.updateMetadata { $0.wfSpecs[r.name, default: []].append(spec) }
        return spec
    }

    func runWf(_ r: Littlehorse_RunWfRequest) async throws -> Littlehorse_WfRun {
        let (key, work) = try runWfJob(r)
        return try await processor.submit(key: key, work)
    }

    /// The WfRun's id and the job that starts it.
    func runWfJob(_ r: Littlehorse_RunWfRequest) throws -> (String, @Sendable (inout CommandProcessor.Staging) throws -> Littlehorse_WfRun) {
        let metadata = processor.currentMetadata
        guard let spec = metadata.latestWfSpec(r.wfSpecName, major: r.hasMajorVersion ? r.majorVersion : nil, revision: r.hasRevision ? r.revision : nil) else {
            throw LHError(.notFound, "WfSpec '\(r.wfSpecName)' not found")
        }
        let id = r.hasID ? r.id : LHIds.timeOrdered()
        guard !id.isEmpty, !id.contains("/"), id.count <= 128 else {
            throw LHError(.invalidArgument, "WfRun id '\(id)' must be 1 to 128 characters without '/'")
        }
        let context = metadata.context(for: spec)
        return (id, { (s: inout CommandProcessor.Staging) -> Littlehorse_WfRun in
            if try s.state(id) != nil { throw LHError(.alreadyExists, "WfRun '\(id)' already exists") }
            let earlier = try s.store.orphanEvents(of: id) + s.pendingOrphans.filter { $0.id.wfRunID.id == id }
                + s.batch.orphanEvents.filter { $0.id.wfRunID.id == id }
            s.batch.orphanEvents.removeAll { $0.id.wfRunID.id == id }
            do {
                let (state, effects) = try LHEngine.runWf(r, id: id, context: context, now: s.now, earlierEvents: earlier)
                s.save(id, state, effects)
                if !earlier.isEmpty { s.batch.claimedOrphansOf.insert(id) }
                return state.wfRun
            } catch let e as LHEngineError {
                throw LHError(e)
            }
        })
    }

    func putExternalEvent(_ r: Littlehorse_PutExternalEventRequest) async throws -> Littlehorse_ExternalEvent {
        let (key, work) = try putExternalEventJob(r)
        return try await processor.submit(key: key, work)
    }

    /// The WfRun's id and the job that stores the event (and interrupts or
    /// wakes what waits for it).
    func putExternalEventJob(_ r: Littlehorse_PutExternalEventRequest) throws
        -> (String, @Sendable (inout CommandProcessor.Staging) throws -> Littlehorse_ExternalEvent) {
        let wfRunId = r.wfRunID.id
        guard !wfRunId.isEmpty else { throw LHError(.invalidArgument, "wf_run_id is empty") }
        let defName = r.externalEventDefID.name
        guard processor.currentMetadata.externalEventDefs[defName] != nil else {
            throw LHError(.notFound, "ExternalEventDef '\(defName)' not found")
        }
        var event = Littlehorse_ExternalEvent()
        event.id.wfRunID = r.wfRunID
        event.id.externalEventDefID.name = defName
        event.id.guid = r.hasGuid ? r.guid : UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        event.createdAt = Google_Protobuf_Timestamp(date: Date())
        event.content = r.content
        if r.hasThreadRunNumber { event.threadRunNumber = r.threadRunNumber }
        if r.hasNodeRunPosition { event.nodeRunPosition = r.nodeRunPosition }
        let e = event
        return (wfRunId, { (s: inout CommandProcessor.Staging) -> Littlehorse_ExternalEvent in
            if let state = try s.state(wfRunId) {
                if let existing = state.externalEvents.first(where: { $0.id == e.id }) { return existing }
                try CommandProcessor.apply(.putExternalEvent(e), to: wfRunId, in: &s)
                return try s.state(wfRunId)?.externalEvents.last(where: { $0.id == e.id }) ?? e
            }
            let stored = try s.store.orphanEvents(of: wfRunId) + s.pendingOrphans + s.batch.orphanEvents
            if let existing = stored.first(where: { $0.id == e.id }) { return existing }
            s.batch.orphanEvents.append(e)
            return e
        })
    }
}

extension Littlehorse_VariableDef {
    var declaredTypeForServer: Littlehorse_VariableType? {
        if hasTypeDef, case .primitiveType(let t)? = typeDef.definedType { return t }
        if hasType { return type }
        return nil
    }
}
