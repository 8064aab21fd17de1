import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import Logging
import SwiftProtobuf

/// Applies commands to WfRuns through the engine, one at a time per WfRun and
/// different WfRuns in parallel, and makes them durable in group commits:
/// every command that arrives while a commit is being written joins the next
/// one. A caller is answered only
/// after its command's transaction has committed, and effects leave the
/// process only after that too.
actor CommandProcessor {
    private let store: any LHStore
    private let logger: Logger
    private(set) var metadata: MetadataCache
    private let cache: StateCache
    private var pending: [Job] = []
    private var flushing = false
    /// Set by the server once its dispatcher and timers exist.
    private var sink: (any EffectSink)?
    private let clock: @Sendable () -> Date

    struct Job {
        /// The WfRun the job touches: jobs of one WfRun run in order, jobs of
        /// different WfRuns in parallel.
        var key: String
        var work: @Sendable (inout Staging) throws -> any Sendable
        var continuation: CheckedContinuation<any Sendable, Error>
    }

    /// Changes of one WfRun's jobs in a group commit, before they are durable.
    struct Staging: Sendable {
        var states: [String: WfRunState]
        var batch = LHWriteBatch()
        var effects: [(String, LHEffect)] = []
        var deleted: Set<String> = []
        let now: Date
        let metadata: MetadataCache
        let store: any LHStore
        let loadState: @Sendable (String) throws -> WfRunState?

        mutating func state(_ id: String) throws -> WfRunState? {
            if deleted.contains(id) { return nil }
            if let s = states[id] { return s }
            guard let s = try loadState(id) else { return nil }
            states[id] = s
            return s
        }

        mutating func save(_ id: String, _ state: WfRunState, _ effects: [LHEffect]) {
            states[id] = state
            batch.wfRuns[id] = state
            for effect in effects {
                self.effects.append((id, effect))
                switch effect {
                case .dispatchTask(let guid, let def, let attempt):
                    batch.enqueued.append(QueuedTask(wfRunId: id, taskGuid: guid, taskDef: def, attempt: attempt))
                case .withdrawTask(let guid, _):
                    batch.dequeued.append((id, guid))
                case .scheduleTimer(let at, let key):
                    batch.timersSet.append(StoredTimer(wfRunId: id, key: key, due: at))
                case .cancelTimer(let key):
                    batch.timersCancelled.append((id, key))
                case .wfRunTerminated:
                    break
                }
            }
        }
    }

    init(store: any LHStore, metadata: MetadataCache, logger: Logger, cacheCapacity: Int = 10_000,
         clock: @escaping @Sendable () -> Date = { Date() }) {
        self.store = store
        self.cache = StateCache(capacity: cacheCapacity)
        self.metadata = metadata
        self.logger = logger
        self.clock = clock
    }

    func setSink(_ sink: any EffectSink) { self.sink = sink }

    func updateMetadata(_ body: (inout MetadataCache) -> Void) { body(&metadata) }

    /// Runs `work` inside the next group commit and returns when it is durable.
    @discardableResult
    func submit<T: Sendable>(key: String, _ work: @escaping @Sendable (inout Staging) throws -> T) async throws -> T {
        let result = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<any Sendable, Error>) in
            pending.append(Job(key: key, work: { try work(&$0) }, continuation: continuation))
            if !flushing {
                flushing = true
                Task { await self.flushLoop() }
            }
        }
        return result as! T
    }

    private func flushLoop() async {
        while !pending.isEmpty {
            let jobs = pending
            pending = []
            let store = self.store
            let cache = self.cache
            let now = clock()
            let metadata = self.metadata
            let loader: @Sendable (String) throws -> WfRunState? = { id in
                if let s = cache.get(id) { return s }
                return try store.wfRun(id)
            }
            // One child task per WfRun: its jobs in order, on its own staging.
            let groups = Dictionary(grouping: jobs.indices, by: { jobs[$0].key })
            var results = [Result<any Sendable, Error>?](repeating: nil, count: jobs.count)
            var stagings: [Staging] = []
            await withTaskGroup(of: (Staging, [(Int, Result<any Sendable, Error>)]).self) { group in
                for indices in groups.values {
                    let works = indices.map { ($0, jobs[$0].work) }
                    group.addTask {
                        var staging = Staging(states: [:], now: now, metadata: metadata, store: store, loadState: loader)
                        var out: [(Int, Result<any Sendable, Error>)] = []
                        for (i, work) in works {
                            // A job that fails leaves no trace: its changes are undone.
                            let before = staging
                            do {
                                out.append((i, .success(try work(&staging))))
                            } catch {
                                staging = before
                                out.append((i, .failure(error)))
                            }
                        }
                        // The stored forms are made here, in parallel, not in the serial commit.
                        try? store.encodeBodies(of: &staging.batch)
                        return (staging, out)
                    }
                }
                for await (staging, out) in group {
                    stagings.append(staging)
                    for (i, r) in out { results[i] = r }
                }
            }
            var batch = LHWriteBatch()
            var effects: [(String, LHEffect)] = []
            var deleted = Set<String>()
            for st in stagings {
                batch.merge(st.batch)
                effects += st.effects
                deleted.formUnion(st.deleted)
            }
            let toCommit = batch
            do {
                try await Task.detached { try store.commit(toCommit) }.value
            } catch {
                logger.error("group commit failed; the commands are refused", metadata: [LHLog.error: "\(error)"])
                for job in jobs { job.continuation.resume(throwing: LHError(.unavailable, "storage failed: \(error)")) }
                continue
            }
            cache.update(stagings.lazy.flatMap { $0.states }, deleted: deleted)
            for (job, result) in zip(jobs, results) { job.continuation.resume(with: result!) }
            if let sink, !effects.isEmpty || !deleted.isEmpty {
                await sink.carryOut(effects, deleted: deleted)
            }
        }
        flushing = false
    }

    /// A committed WfRun's state, for reads.
    func read(_ id: String) throws -> WfRunState? {
        if let s = cache.get(id) { return s }
        return try store.wfRun(id)
    }

    /// Applies one engine command to a WfRun inside a job.
    static func apply(_ command: LHCommand, to id: String, in staging: inout Staging) throws {
        guard var state = try staging.state(id) else { throw LHError(.notFound, "WfRun '\(id)' not found") }
        guard let spec = staging.metadata.wfSpec(state.wfRun.wfSpecID) else {
            throw LHError(.internal, "WfSpec \(state.wfRun.wfSpecID.name) v\(state.wfRun.wfSpecID.majorVersion).\(state.wfRun.wfSpecID.revision) of WfRun '\(id)' is missing")
        }
        do {
            let effects = try LHEngine.apply(command, to: &state, context: staging.metadata.context(for: spec), now: staging.now)
            staging.save(id, state, effects)
        } catch let e as LHEngineError {
            throw LHError(e)
        }
    }
}

/// Carries out committed effects (task queues, timers).
protocol EffectSink: Sendable {
    func carryOut(_ effects: [(String, LHEffect)], deleted: Set<String>) async
}

/// The most recently touched WfRuns' committed states, at most `capacity`
/// of them; the rest are read back from the store when needed. Jobs read it
/// concurrently while a group commit runs; only the processor writes it,
/// between commits.
final class StateCache: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [String: (state: WfRunState, touch: UInt64)] = [:]
    /// Touches in order; an entry is evicted when its oldest touch is its last one.
    private var touches: [(id: String, touch: UInt64)] = []
    private var head = 0
    private var clock: UInt64 = 0
    let capacity: Int

    init(capacity: Int) { self.capacity = max(capacity, 1) }

    var count: Int { lock.withLock { entries.count } }

    func get(_ id: String) -> WfRunState? { lock.withLock { entries[id]?.state } }

    func update<S: Sequence<(key: String, value: WfRunState)>>(_ states: S, deleted: Set<String>) {
        lock.withLock {
            for (id, state) in states {
                clock += 1
                entries[id] = (state, clock)
                touches.append((id, clock))
            }
            for id in deleted { entries[id] = nil }
            while entries.count > capacity, head < touches.count {
                let (id, touch) = touches[head]
                head += 1
                if entries[id]?.touch == touch { entries[id] = nil }
            }
            if head >= 4096 && head * 2 >= touches.count {
                touches.removeFirst(head)
                head = 0
            }
            // Touches of entries already gone pile up when the cache is not full.
            if touches.count - head > capacity * 4 {
                touches = touches[head...].filter { entries[$0.id]?.touch == $0.touch }
                head = 0
            }
        }
    }
}
