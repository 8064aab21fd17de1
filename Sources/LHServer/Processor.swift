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
    /// Jobs waiting for the next group commit, filled from any thread (the
    /// event loops' direct requests too); the flush loop drains it.
    private let intake = DrainQueue<Job>()
    /// Group commits and jobs since the last statistics line (--log-level debug).
    private let statistics = Statistics()
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
            batch.stored[id] = s
            return s
        }

        /// TaskRun attempts made TASK_RUNNING in this staging, for the
        /// workers whose room they took; sent once the commit is durable.
        var deliveries: [Delivery] = []
        let dispatcher: TaskDispatcher?
        /// The connection of the worker whose report the current job carries:
        /// attempts the job makes ready go to that worker first.
        var reportingWorker: ObjectIdentifier?

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
    /// (with their fsync) are written on a thread of their own, so that the
    /// batch builder goes on building meanwhile; the group commits that
    /// arrived while one was written go together into the next transaction
    /// (one fsync for all: at moderate load commits no longer wait behind
    /// each other's fsyncs). The exception is a small group commit that
    /// finds no transaction being written (moderate load): the builder
    /// writes it itself, on one of Swift concurrency's threads for the
    /// fsync's fraction of a millisecond, instead of waking the commit
    /// thread; what arrives meanwhile waits and shares the next one.
    final class CommitLine: Sendable {
        struct Entry: Sendable {
            var batch: LHWriteBatch
            var epoch: UInt64
            /// Run on the commit thread once the batch is durable, or when
            /// its transaction failed or was refused.
            var durable: @Sendable () -> Void
            var failed: @Sendable (Error) -> Void
        }

        private static let queue = DispatchQueue(label: "lh.store.commit", qos: .userInitiated)
        private let store: any LHStore
        private let waiting = DrainQueue<Entry>()
        /// The epoch whose commit failed: later batches of that epoch were
        /// built on it and are refused.
        private let failedEpoch = Mutex<UInt64?>(nil)

        init(store: any LHStore) { self.store = store }

        /// `here`: when no transaction is being written, write this one on
        /// the calling thread (a small batch at moderate load: no thread to
        /// wake, and what arrives meanwhile waits to share the next one).
        func append(here: Bool = false, _ entry: Entry) {
            guard waiting.append(entry) else { return }
            if here { drain() } else { Self.queue.async { self.drain() } }
        }

        private func drain() {
            while true {
                let entries = waiting.takeAll()
                if entries.isEmpty { return }
                var live: [Entry] = []
                for e in entries {
                    if failedEpoch.withLock({ $0 == e.epoch }) {
                        e.failed(StoreError("an earlier group commit failed; this one was built on it"))
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
                    for e in live { e.failed(error) }
                    continue
                }
                for e in live { e.durable() }
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
        if intake.append(Job(key: key, work: work, done: done)) { Task { await self.flushLoop() } }
    }

    /// What the batch builder and the commit thread share: the states of
    /// group commits still being written (what the next batch's jobs build
    /// on; nil: deleted; reads never see them), the epoch, which changes
    /// when a commit fails (batches built on what it held are refused), and
    /// how many group commits are built and not finished.
    private struct Pipeline {
        var overlay: [String: (state: WfRunState?, batch: UInt64)] = [:]
        var overlayOrphans: [(event: Littlehorse_ExternalEvent, batch: UInt64)] = []
        var epoch: UInt64 = 0
        var inFlight = 0
        /// The batch builder, waiting for room.
        var waiter: CheckedContinuation<Void, Never>?

        mutating func finished() -> CheckedContinuation<Void, Never>? {
            inFlight -= 1
            defer { waiter = nil }
            return waiter
        }
    }
    private let pipeline = Mutex(Pipeline())
    /// States the cache let go on the commit thread, freed by the next batch
    /// (in its parallel lanes when it has them) instead of on that thread.
    private let graveyard = Mutex<[[WfRunState]]>([])
    private var batchNumber: UInt64 = 0
    /// Batches of at most this many jobs run on the processor's own thread.
    static let inlineJobs = 6
    /// Child tasks that run a batch's jobs: one per core.
    static let lanes = max(2, ProcessInfo.processInfo.activeProcessorCount)
    /// Most group commits built and not yet finished. With 2 the CPU idled
    /// ~15 % at saturation (batches waited while a commit sat in fsync);
    /// 4 keeps jobs running meanwhile (lh-bench throughput +8 %).
    private let maxInFlight = 4

    /// Room for one more group commit: waits until the oldest one finishes.
    private func waitForRoom() async {
        let limit = maxInFlight
        while pipeline.withLock({ $0.inFlight >= limit }) {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let room = pipeline.withLock { p -> Bool in
                    if p.inFlight < limit { return true }
                    p.waiter = c
                    return false
                }
                if room { c.resume() }
            }
        }
    }

    private func flushLoop() async {
        while true {
            await waitForRoom()
            let jobs = intake.takeAll()
            if jobs.isEmpty { return }
            var dead = graveyard.withLock { g in
                defer { g = [] }
                return g
            }
            let (startEpoch, overlay, pendingOrphans) = pipeline.withLock { ($0.epoch, $0.overlay, $0.overlayOrphans.map(\.event)) }
            let store = self.store
            let cache = self.cache
            let now = clock()
            let metadata = self.metadata
            let dispatcher = self.dispatcher
            let sink = self.sink
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
                try? store.prepareWrites(of: &staging.batch)
                return (staging, out)
            }
            if jobs.count <= Self.inlineJobs {
                // A few jobs (light and moderate load): run right here, no
                // child task and no thread to wake for them.
                dead = []
                for indices in groups.values {
                    let (staging, out) = runGroup(indices.map { ($0, jobs[$0].work) })
                    stagings.append(staging)
                    for (i, r) in out { results[i] = r }
                }
            } else {
                // One child task per core, each taking its share of the WfRuns
                // (a task per WfRun cost more in task creation than it gained).
                let all = groups.values.map { indices in indices.map { ($0, jobs[$0].work) } }
                let lanes = min(all.count, Self.lanes)
                // Each lane frees its share of the let-go states, in parallel.
                var shares = [[[WfRunState]]](repeating: [], count: lanes)
                for (i, states) in dead.enumerated() { shares[i % lanes].append(states) }
                dead = []
                await withTaskGroup(of: [(Staging, [(Int, Result<any Sendable, Error>)])].self) { group in
                    for lane in 0..<lanes {
                        let graves = Graves(shares[lane])
                        shares[lane] = []
                        group.addTask {
                            graves.free()
                            return stride(from: lane, to: all.count, by: lanes).map { runGroup(all[$0]) }
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
            hand(number: number, epoch: startEpoch, jobs: jobs, results: results.map { $0! }, batch: batch, states: states,
                 deleted: deleted, effects: effects, deliveries: deliveries, pushes: pushes, dispatcher: dispatcher, sink: sink)
        }
    }

    /// Hands a built group commit to the commit thread: its states become
    /// what later batches build on, unless a commit these jobs built on
    /// failed meanwhile.
    private nonisolated func hand(number: UInt64, epoch startEpoch: UInt64, jobs: [Job], results: [Result<any Sendable, Error>],
                                  batch: LHWriteBatch, states: [(key: String, value: WfRunState)], deleted: Set<String>,
                                  effects: [(String, LHEffect)], deliveries: [Delivery],
                                  pushes: [(TaskDispatcher.Reservation, Littlehorse_ScheduledTask?)],
                                  dispatcher: TaskDispatcher?, sink: (any EffectSink)?) {
        let cache = self.cache
        // The batch's states become what later batches build on, unless
        // a commit these jobs built on failed meanwhile.
        let accepted = pipeline.withLock { p -> Bool in
            guard p.epoch == startEpoch else { return false }
            for (id, state) in states { p.overlay[id] = (state, number) }
            for id in deleted { p.overlay[id] = (nil, number) }
            for e in batch.orphanEvents { p.overlayOrphans.append((e, number)) }
            p.inFlight += 1
            return true
        }
        guard accepted else {
            for job in jobs { job.done(.failure(LHError(.unavailable, "storage failed; the command was not applied"))) }
            for d in deliveries { dispatcher?.release(d.reservation) }
            return
        }
        // Transactions are written in order on the commit thread, each
        // only if the ones before it of its epoch were; group commits that
        // queue up behind one being written share the next transaction.
        // Everything after the commit happens on that thread too: no task
        // and no hop back to this actor per group commit.
        let answers = zip(jobs, results).map { ($0.done, $1) }
        let (committedStates, committedDeletions, committedEffects) = (states, deleted, effects)
        let started = Date()
        let logger = self.logger
        let statistics = self.statistics
        commitLine.append(here: jobs.count <= Self.inlineJobs, .init(batch: batch, epoch: startEpoch, durable: {
            // Durable: reads see it from now on; the workers get their
            // tasks and the callers their answers.
            let dropped = cache.update(committedStates, deleted: committedDeletions)
            if !dropped.isEmpty { self.graveyard.withLock { $0.append(dropped) } }
            LHResponder.grouping {
                for (reservation, task) in pushes {
                    if let task {
                        reservation.push.yield(Lhwire_Envelope(id: 0, .scheduledTask(task)))
                    } else {
                        dispatcher?.release(reservation)
                    }
                }
                for (done, result) in answers { done(result) }
            }
            let waiter = self.pipeline.withLock { p in
                for (id, _) in committedStates where p.overlay[id]?.batch == number { p.overlay[id] = nil }
                for id in committedDeletions where p.overlay[id]?.batch == number { p.overlay[id] = nil }
                p.overlayOrphans.removeAll { $0.batch <= number }
                return p.finished()
            }
            waiter?.resume()
            if let sink, !committedEffects.isEmpty || !committedDeletions.isEmpty { sink.carryOut(committedEffects, deleted: committedDeletions) }
            statistics.record(jobs: answers.count, seconds: Date().timeIntervalSince(started), logger: logger)
        }, failed: { error in
            logger.error("group commit failed; the commands are refused", metadata: [LHLog.error: "\(error)"])
            for (done, _) in answers { done(.failure(LHError(.unavailable, "storage failed: \(error)"))) }
            for (reservation, _) in pushes { dispatcher?.release(reservation) }
            let waiter = self.pipeline.withLock { p in
                if p.epoch == startEpoch {
                    // Later batches built on these states; start over from what is stored.
                    p.epoch += 1
                    p.overlay = [:]
                    p.overlayOrphans = []
                }
                return p.finished()
            }
            waiter?.resume()
        }))
    }

    /// Group commits per second, jobs per commit and the write time, logged
    /// every 5 s at debug level.
    final class Statistics: Sendable {
        private let counts = Mutex((commits: 0, jobs: 0, commitSeconds: 0.0, since: Date()))

        func record(jobs: Int, seconds: Double, logger: Logger) {
            guard logger.logLevel <= .debug else { return }
            let line = counts.withLock { c -> (commits: Int, jobs: Int, commitSeconds: Double, elapsed: Double)? in
                c.commits += 1
                c.jobs += jobs
                c.commitSeconds += seconds
                let elapsed = -c.since.timeIntervalSinceNow
                guard elapsed > 5 else { return nil }
                defer { c = (0, 0, 0, Date()) }
                return (c.commits, c.jobs, c.commitSeconds, elapsed)
            }
            guard let line else { return }
            logger.debug("group commits", metadata: [
                "lh.commitsPerSecond": "\(Int(Double(line.commits) / line.elapsed))",
                "lh.jobsPerCommit": "\(String(format: "%.1f", Double(line.jobs) / Double(max(line.commits, 1))))",
                "lh.commitBusy": "\(String(format: "%.0f%%", line.commitSeconds / line.elapsed * 100))",
                "lh.writeMs": "\(String(format: "%.2f", CommandProcessor.writeSeconds.withLock { w in defer { w = 0 }; return w } / Double(max(line.commits, 1)) * 1000))",
            ])
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
    /// Called on the commit thread, in commit order: must not block.
    func carryOut(_ effects: [(String, LHEffect)], deleted: Set<String>)
}

/// States to free, owned by the one lane that frees them.
final class Graves: @unchecked Sendable {
    private var states: [[WfRunState]]
    init(_ states: [[WfRunState]]) { self.states = states }
    func free() { states = [] }
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

    /// Stores the committed states; returns the ones it let go (replaced,
    /// deleted or evicted), for the caller to free where it costs least:
    /// a WfRun state is a tree of many heap objects, and freeing them on
    /// the serial commit thread was ~10 % of that thread at saturation.
    @discardableResult
    func update<S: Sequence<(key: String, value: WfRunState)>>(_ states: S, deleted: Set<String>) -> [WfRunState] {
        lock.withLock {
            var dropped: [WfRunState] = []
            for (id, state) in states {
                clock += 1
                if let old = entries.updateValue((state, clock), forKey: id) { dropped.append(old.state) }
                touches.append((id, clock))
            }
            for id in deleted { if let old = entries.removeValue(forKey: id) { dropped.append(old.state) } }
            while entries.count > capacity, head < touches.count {
                let (id, touch) = touches[head]
                head += 1
                if entries[id]?.touch == touch, let old = entries.removeValue(forKey: id) { dropped.append(old.state) }
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
            return dropped
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
                  let r = dispatcher.reserveDirect(taskDef: def, wfRunId: id, guid: guid, prefer: reportingWorker)
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
