import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import Logging
import SwiftProtobuf
import Synchronization

/// Applies commands to WfRuns through the engine, one at a time per WfRun and
/// different WfRuns in parallel, and makes them durable in group commits:
/// every command that arrives while a commit is being written joins the next
/// one. A caller is answered only
/// after its command's transaction has committed, and effects leave the
/// process only after that too.
actor CommandProcessor {
    private let store: any LHStore
    private let logger: Logger
    private(set) var metadata: MetadataCache {
        didSet { published.withLock { $0 = metadata } }
    }
    /// The same metadata, readable without a hop to this actor (RunWf and
    /// PutExternalEvent read it on every request).
    private let published: Mutex<MetadataCache>
    nonisolated var currentMetadata: MetadataCache { published.withLock { $0 } }
    private let cache: StateCache
    /// Jobs waiting for the next group commit, and whether the flush loop
    /// runs; filled from any thread (the event loops' direct requests too).
    private let intake = Mutex<(jobs: [Job], flushing: Bool)>(([], false))
    /// Group commits and jobs since the last statistics line (LHS_LOG_LEVEL=debug).
    private var statistics = (commits: 0, jobs: 0, commitSeconds: 0.0, since: Date())
    /// Set by the server once its dispatcher and timers exist.
    private var sink: (any EffectSink)?
    /// Takes workers' room for TaskRuns inside the jobs (direct hand-over).
    private var dispatcher: TaskDispatcher?
    private let clock: @Sendable () -> Date

    struct Job {
        /// The WfRun the job touches: jobs of one WfRun run in order, jobs of
        /// different WfRuns in parallel.
        var key: String
        var work: @Sendable (inout Staging) throws -> any Sendable
        /// Called once: with the job's result once its transaction is durable
        /// (on the commit thread), or with the error that refused it.
        var done: @Sendable (Result<any Sendable, Error>) -> Void
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
        /// Orphan events of the group commit still being written.
        var pendingOrphans: [Littlehorse_ExternalEvent] = []

        mutating func state(_ id: String) throws -> WfRunState? {
            if deleted.contains(id) { return nil }
            if let s = states[id] { return s }
            guard let s = try loadState(id) else { return nil }
            states[id] = s
            return s
        }

        /// TaskRun attempts made TASK_RUNNING in this staging, for the
        /// workers whose room they took; sent once the commit is durable.
        var deliveries: [Delivery] = []
        let dispatcher: TaskDispatcher?

        mutating func save(_ id: String, _ state: WfRunState, _ effects: [LHEffect]) {
            var state = state
            var effects = effects
            if dispatcher != nil { handOverDirectly(id, &state, &effects) }
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

    /// Seconds spent inside store.commit (statistics).
    static let writeSeconds = Mutex(0.0)
    private let commitLine: CommitLine

    /// Group commits waiting to be written, in batch order. Transactions
    /// (with their fsync) are written on a thread of their own, never
    /// blocking one of the few threads Swift concurrency runs jobs on; the
    /// group commits that arrived while one was written go together into the
    /// next transaction (one fsync for all: at moderate load commits no
    /// longer wait behind each other's fsyncs).
    final class CommitLine: Sendable {
        struct Entry: Sendable {
            var batch: LHWriteBatch
            var epoch: UInt64
            var outcome: CommitOutcome
            /// Runs on the commit thread once the batch is durable, before
            /// `outcome` completes.
            var durable: @Sendable () -> Void
        }

        private static let queue = DispatchQueue(label: "lh.store.commit", qos: .userInitiated)
        private let store: any LHStore
        private let waiting = Mutex<(entries: [Entry], draining: Bool)>(([], false))
        /// The epoch whose commit failed: later batches of that epoch were
        /// built on it and are refused.
        private let failedEpoch = Mutex<UInt64?>(nil)

        init(store: any LHStore) { self.store = store }

        func append(_ entry: Entry) {
            let start = waiting.withLock { w -> Bool in
                w.entries.append(entry)
                guard !w.draining else { return false }
                w.draining = true
                return true
            }
            if start { Self.queue.async { self.drain() } }
        }

        private func drain() {
            while true {
                let entries = waiting.withLock { w -> [Entry] in
                    if w.entries.isEmpty { w.draining = false }
                    defer { w.entries = [] }
                    return w.entries
                }
                if entries.isEmpty { return }
                var live: [Entry] = []
                for e in entries {
                    if failedEpoch.withLock({ $0 == e.epoch }) {
                        e.outcome.complete(.failure(StoreError("an earlier group commit failed; this one was built on it")))
                    } else {
                        live.append(e)
                    }
                }
                guard let last = live.last else { continue }
                do {
                    let t0 = Date()
                    try store.commit(live.map(\.batch))
                    CommandProcessor.writeSeconds.withLock { $0 += Date().timeIntervalSince(t0) }
                } catch {
                    failedEpoch.withLock { $0 = last.epoch }
                    for e in live { e.outcome.complete(.failure(error)) }
                    continue
                }
                for e in live {
                    e.durable()
                    e.outcome.complete(.success(()))
                }
            }
        }
    }

    /// The outcome of one group commit's transaction, awaited by `finish`.
    final class CommitOutcome: Sendable {
        private let state = Mutex<(result: Result<Void, Error>?, waiters: [CheckedContinuation<Void, Error>])>((nil, []))

        func complete(_ result: Result<Void, Error>) {
            let waiters = state.withLock { s in
                s.result = result
                defer { s.waiters = [] }
                return s.waiters
            }
            for w in waiters { w.resume(with: result) }
        }

        var value: Void {
            get async throws {
                try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
                    let done = state.withLock { s -> Result<Void, Error>? in
                        if let r = s.result { return r }
                        s.waiters.append(c)
                        return nil
                    }
                    if let done { c.resume(with: done) }
                }
            }
        }
    }

    /// A TaskRun attempt handed to a worker in the transaction that made it ready.
    struct Delivery: Sendable {
        var reservation: TaskDispatcher.Reservation
        var wfRunId: String
        var taskGuid: String
        var attempt: Int32
    }

    init(store: any LHStore, metadata: MetadataCache, logger: Logger, cacheCapacity: Int = 10_000,
         clock: @escaping @Sendable () -> Date = { Date() }) {
        self.store = store
        self.cache = StateCache(capacity: cacheCapacity)
        self.commitLine = CommitLine(store: store)
        self.metadata = metadata
        self.published = Mutex(metadata)
        self.logger = logger
        self.clock = clock
    }

    func setSink(_ sink: any EffectSink, dispatcher: TaskDispatcher? = nil) {
        self.sink = sink
        self.dispatcher = dispatcher
    }

    func updateMetadata(_ body: (inout MetadataCache) -> Void) { body(&metadata) }

    /// Runs `work` inside the next group commit and returns when it is durable.
    @discardableResult
    nonisolated func submit<T: Sendable>(key: String, _ work: @escaping @Sendable (inout Staging) throws -> T) async throws -> T {
        let result = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<any Sendable, Error>) in
            enqueue(key: key, { try work(&$0) }, done: { continuation.resume(with: $0) })
        }
        return result as! T
    }

    /// Runs `work` inside the next group commit and calls `done` with its
    /// result once that is durable (on the commit thread: `done` must be
    /// quick), or with the error that refused it. Callable from any thread
    /// without a task: the server's event loops hand requests over this way.
    nonisolated func enqueue(key: String, _ work: @escaping @Sendable (inout Staging) throws -> any Sendable,
                             done: @escaping @Sendable (Result<any Sendable, Error>) -> Void) {
        let start = intake.withLock { i -> Bool in
            i.jobs.append(Job(key: key, work: work, done: done))
            guard !i.flushing else { return false }
            i.flushing = true
            return true
        }
        if start { Task { await self.flushLoop() } }
    }

    /// The jobs that arrived since the last call; none (and the loop marked
    /// stopped, in the same lock) when there are none.
    private func takePending() -> [Job] {
        intake.withLock { i in
            if i.jobs.isEmpty { i.flushing = false }
            defer { i.jobs = [] }
            return i.jobs
        }
    }

    /// A group commit whose transaction is being written. The next batch's
    /// jobs run meanwhile, on top of its states (the overlay); its callers
    /// are answered as soon as it is durable.
    private struct InFlight: Sendable {
        var number: UInt64
        var epoch: UInt64
        var commit: CommitOutcome
        var jobs: [Job]
        var states: [(key: String, value: WfRunState)]
        var effects: [(String, LHEffect)]
        var deleted: Set<String>
        var deliveries: [Delivery]
        var started: Date
    }

    /// States of group commits still being written, newest first: what the
    /// next batch's jobs build on (nil: deleted). Reads (`read`) never see them.
    private var overlay: [String: (state: WfRunState?, batch: UInt64)] = [:]
    private var overlayOrphans: [(event: Littlehorse_ExternalEvent, batch: UInt64)] = []
    private var batchNumber: UInt64 = 0
    /// Changes when a commit fails: batches built on what it held are refused.
    private var epoch: UInt64 = 0
    private var lastCompletion: Task<Void, Never>?
    /// The completions of the group commits not yet finished, by batch number.
    private var completions: [UInt64: Task<Void, Never>] = [:]
    private var inFlight = 0
    /// Child tasks that run a batch's jobs: one per core.
    static let lanes = max(2, ProcessInfo.processInfo.activeProcessorCount)
    /// Most group commits built and not yet finished. With 2 the CPU idled
    /// ~15 % at saturation (batches waited while a commit sat in fsync);
    /// 4 keeps jobs running meanwhile (lh-bench throughput +8 %).
    private let maxInFlight = 4

    private func flushLoop() async {
        while true {
            // Room for one more: wait for the oldest group commit, not all of them.
            while inFlight >= maxInFlight, let oldest = completions.min(by: { $0.key < $1.key }) {
                await oldest.value.value
            }
            let jobs = takePending()
            if jobs.isEmpty { return }
            let startEpoch = epoch
            let store = self.store
            let cache = self.cache
            let now = clock()
            let metadata = self.metadata
            let overlay = self.overlay
            let dispatcher = self.dispatcher
            let pendingOrphans = self.overlayOrphans.map(\.event)
            let loader: @Sendable (String) throws -> WfRunState? = { id in
                if let entry = overlay[id] { return entry.state }
                if let s = cache.get(id) { return s }
                return try store.wfRun(id)
            }
            // One child task per WfRun: its jobs in order, on its own staging.
            let groups = Dictionary(grouping: jobs.indices, by: { jobs[$0].key })
            var results = [Result<any Sendable, Error>?](repeating: nil, count: jobs.count)
            var stagings: [Staging] = []
            // One WfRun's jobs in order, on its own staging.
            let runGroup: @Sendable ([(Int, @Sendable (inout Staging) throws -> any Sendable)]) -> (Staging, [(Int, Result<any Sendable, Error>)]) = { works in
                let fresh = {
                    var staging = Staging(states: [:], now: now, metadata: metadata, store: store, loadState: loader, dispatcher: dispatcher)
                    staging.pendingOrphans = pendingOrphans
                    return staging
                }
                var staging = fresh()
                var out: [(Int, Result<any Sendable, Error>)] = []
                out.reserveCapacity(works.count)
                for (i, work) in works {
                    // A job that fails leaves no trace: its changes are undone.
                    // The first job's "before" is a fresh staging: no copy needed.
                    let before: Staging? = out.isEmpty ? nil : staging
                    do {
                        out.append((i, .success(try work(&staging))))
                    } catch {
                        for d in staging.deliveries.dropFirst(before?.deliveries.count ?? 0) { dispatcher?.release(d.reservation) }
                        staging = before ?? fresh()
                        out.append((i, .failure(error)))
                    }
                }
                // The stored forms are made here, in parallel, not in the serial commit.
                try? store.encodeBodies(of: &staging.batch)
                return (staging, out)
            }
            if groups.count == 1, let indices = groups.values.first {
                // A lone WfRun (light load): no child task, no thread hop.
                let (staging, out) = runGroup(indices.map { ($0, jobs[$0].work) })
                stagings.append(staging)
                for (i, r) in out { results[i] = r }
            } else {
                // One child task per core, each taking its share of the WfRuns
                // (a task per WfRun cost more in task creation than it gained).
                let all = groups.values.map { indices in indices.map { ($0, jobs[$0].work) } }
                let lanes = min(all.count, Self.lanes)
                await withTaskGroup(of: [(Staging, [(Int, Result<any Sendable, Error>)])].self) { group in
                    for lane in 0..<lanes {
                        group.addTask {
                            stride(from: lane, to: all.count, by: lanes).map { runGroup(all[$0]) }
                        }
                    }
                    for await done in group {
                        for (staging, out) in done {
                            stagings.append(staging)
                            for (i, r) in out { results[i] = r }
                        }
                    }
                }
            }
            guard epoch == startEpoch else {
                // A commit these jobs built on failed meanwhile.
                for job in jobs { job.done(.failure(LHError(.unavailable, "storage failed; the command was not applied"))) }
                for d in stagings.flatMap(\.deliveries) { dispatcher?.release(d.reservation) }
                continue
            }
            var batch = LHWriteBatch()
            var effects: [(String, LHEffect)] = []
            var deleted = Set<String>()
            var states: [(key: String, value: WfRunState)] = []
            var deliveries: [Delivery] = []
            for st in stagings {
                deliveries += st.deliveries
                batch.merge(st.batch)
                effects += st.effects
                deleted.formUnion(st.deleted)
                states += st.states.map { ($0.key, $0.value) }
            }
            batchNumber += 1
            let number = batchNumber
            // What the workers get, made now from the batch's final states and
            // sent from the commit thread the moment the transaction is durable.
            var finalStates: [String: WfRunState] = [:]
            if !deliveries.isEmpty { for (id, state) in states { finalStates[id] = state } }
            let pushes: [(TaskDispatcher.Reservation, Littlehorse_ScheduledTask?)] = deliveries.map { d in
                let task = finalStates[d.wfRunId]?.scheduledTask(taskGuid: d.taskGuid, attempt: d.attempt)
                return (d.reservation, task?.taskRunID.taskGuid == d.taskGuid ? task : nil)
            }
            // Transactions are written in order on the commit thread, each
            // only if the ones before it of its epoch were; group commits that
            // queue up behind one being written share the next transaction.
            let commit = CommitOutcome()
            let answers = zip(jobs, results).map { ($0.done, $1!) }
            let committedStates = states
            let committedDeletions = deleted
            commitLine.append(.init(batch: batch, epoch: startEpoch, outcome: commit) {
                // Durable: reads see it from now on; the workers get their
                // tasks and the callers their answers from this thread.
                cache.update(committedStates, deleted: committedDeletions)
                for (reservation, task) in pushes {
                    if let task {
                        reservation.push.yield(Lhwire_Envelope(id: 0, .scheduledTask(task)))
                    } else {
                        dispatcher?.release(reservation)
                    }
                }
                for (done, result) in answers { done(result) }
            })
            for (id, state) in states { self.overlay[id] = (state, number) }
            for id in deleted { self.overlay[id] = (nil, number) }
            for e in batch.orphanEvents { self.overlayOrphans.append((e, number)) }
            inFlight += 1
            let record = InFlight(number: number, epoch: startEpoch, commit: commit, jobs: jobs,
                                  states: states, effects: effects, deleted: deleted, deliveries: deliveries, started: Date())
            let previousCompletion = lastCompletion
            lastCompletion = Task {
                await previousCompletion?.value
                await self.finish(record)
            }
            completions[number] = lastCompletion
        }
    }

    /// Waits for a group commit (whose callers the commit thread answered);
    /// then carries out its effects, or refuses its commands when it failed.
    private func finish(_ f: InFlight) async {
        defer {
            inFlight -= 1
            completions[f.number] = nil
        }
        do {
            try await f.commit.value
        } catch {
            logger.error("group commit failed; the commands are refused", metadata: [LHLog.error: "\(error)"])
            for job in f.jobs { job.done(.failure(LHError(.unavailable, "storage failed: \(error)"))) }
            for d in f.deliveries { dispatcher?.release(d.reservation) }
            if f.epoch == epoch {
                // Later batches built on these states; start over from what is stored.
                epoch += 1
                overlay = [:]
                overlayOrphans = []
            }
            return
        }
        // The cache was updated and the callers answered on the commit thread.
        recordStatistics(jobs: f.jobs.count, seconds: Date().timeIntervalSince(f.started))
        for (id, _) in f.states where overlay[id]?.batch == f.number { overlay[id] = nil }
        for id in f.deleted where overlay[id]?.batch == f.number { overlay[id] = nil }
        overlayOrphans.removeAll { $0.batch <= f.number }
        if let sink, !f.effects.isEmpty || !f.deleted.isEmpty {
            await sink.carryOut(f.effects, deleted: f.deleted)
        }
    }

    private func recordStatistics(jobs: Int, seconds: Double) {
        statistics.commits += 1
        statistics.jobs += jobs
        statistics.commitSeconds += seconds
        if statistics.since.timeIntervalSinceNow < -5 {
            let elapsed = -statistics.since.timeIntervalSinceNow
            logger.debug("group commits", metadata: [
                "lh.commitsPerSecond": "\(Int(Double(statistics.commits) / elapsed))",
                "lh.jobsPerCommit": "\(String(format: "%.1f", Double(statistics.jobs) / Double(max(statistics.commits, 1))))",
                "lh.commitBusy": "\(String(format: "%.0f%%", statistics.commitSeconds / elapsed * 100))",
                "lh.writeMs": "\(String(format: "%.2f", CommandProcessor.writeSeconds.withLock { w in defer { w = 0 }; return w } / Double(max(statistics.commits, 1)) * 1000))",
            ])
            statistics = (0, 0, 0, Date())
        }
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
/// concurrently while a group commit runs; only the commit thread writes
/// it, right after each transaction is durable, in commit order.
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

extension CommandProcessor.Staging {
    /// Attempts this command made ready go straight to a worker with room:
    /// TASK_RUNNING in this same transaction (one command less, one commit
    /// less before the worker sees it). The others are queued as usual.
    mutating func handOverDirectly(_ id: String, _ state: inout WfRunState, _ effects: inout [LHEffect]) {
        guard let dispatcher, effects.contains(where: { if case .dispatchTask = $0 { true } else { false } }),
              let spec = metadata.wfSpec(state.wfRun.wfSpecID)
        else { return }
        let context = metadata.context(for: spec)
        var out: [LHEffect] = []
        for effect in effects {
            guard case .dispatchTask(let guid, let def, let attempt) = effect,
                  let r = dispatcher.reserveDirect(taskDef: def, wfRunId: id, guid: guid)
            else {
                out.append(effect)
                continue
            }
            var started = state
            do {
                out += try LHEngine.apply(.taskStarted(taskGuid: guid, attempt: attempt, workerId: r.workerId), to: &started, context: context, now: now)
                state = started
                deliveries.append(CommandProcessor.Delivery(reservation: r, wfRunId: id, taskGuid: guid, attempt: attempt))
            } catch {
                dispatcher.release(r)
                out.append(effect)
            }
        }
        effects = out
    }
}
