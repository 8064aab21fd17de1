import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import LHWireProto
import Logging
import Synchronization

/// Applies commands to WfRuns through the engine, one at a time per WfRun and
/// different WfRuns in parallel, and makes them durable in group commits:
/// every job that arrives while a commit is being written joins the next
/// one. A caller is answered only after its job's transaction has committed,
/// and effects leave the process only after that too.
///
/// The pipeline's rules live in ``PipelineState``; running a batch's jobs in
/// ``BatchBuilder``; writing in ``CommitLine``.
actor CommandProcessor {
    /// The committed effects' destination (task queues, timers) and the
    /// workers' room for TaskRuns taken inside jobs (direct hand-over).
    struct Wiring: Sendable {
        var sink: (any EffectSink)?
        var reservations: (any DirectReservations)?
    }

    /// A job's completion and its result, called once the batch is settled.
    typealias Answer = (done: @Sendable (Result<any Sendable, Error>) -> Void, result: Result<any Sendable, Error>)

    /// A unit of work in a group commit.
    struct Job {
        /// The WfRun the job touches: jobs of one WfRun run in order, jobs of
        /// different WfRuns in parallel.
        var key: String
        var work: BatchBuilder.Work
        /// Called once: with the job's result once its transaction is durable
        /// (on the commit thread), or with the error that refused it.
        var done: @Sendable (Result<any Sendable, Error>) -> Void
    }

    private let store: any LHStorage
    /// A store shared by several servers: jobs of WfRuns this server does
    /// not own are refused before they reach a batch (their commit would be
    /// refused, and with it the batch's other jobs).
    private let membership: (any LHClusterMembership)?
    let logger: Logger
    private(set) var metadata: MetadataCache {
        didSet { published.withLock { $0 = metadata } }
    }
    /// The same metadata, readable without a hop to this actor (RunWf and
    /// PutExternalEvent read it on every request).
    private let published: Mutex<MetadataCache>
    nonisolated var currentMetadata: MetadataCache { published.withLock { $0 } }
    private let cache: StateCache
    /// Jobs waiting for the next group commit, filled from any thread; the
    /// flush loop drains it.
    private let intake = DrainQueue<Job>()
    private let statistics = GroupCommitStatistics()
    let metrics: LHMetrics
    private let commitLine: CommitLine
    /// What carries out committed effects and hands tasks over; set at start.
    private var wiring = Wiring()
    private let clock: any LHClock
    /// Most group commits built and not yet finished: with 4, jobs keep
    /// running while a commit sits in fsync.
    private let pipeline = Mutex(PipelineState<CheckedContinuation<Void, Never>>(maxInFlight: 4))
    /// States the cache let go on the commit thread, freed by the next batch
    /// (in its parallel lanes when it has them) instead of on that thread.
    private let graveyard = Mutex<[[WfRunState]]>([])
    private var batchNumber: UInt64 = 0
    /// Told the WfRuns of a group commit that failed (it may have been
    /// written all the same: PostgreSQL's connection lost during the call).
    private let failedCommitHook = Mutex<(@Sendable ([String]) -> Void)?>(nil)

    init(
        store: any LHStorage, metadata: MetadataCache, logger: Logger, cacheCapacity: Int = 10_000,
        clock: any LHClock = SystemClock(), metrics: LHMetrics = LHMetrics()
    ) {
        self.metrics = metrics
        self.store = store
        self.membership = store as? any LHClusterMembership
        self.cache = StateCache(capacity: cacheCapacity)
        self.commitLine = CommitLine(store: store, metrics: metrics)
        self.metadata = metadata
        self.published = Mutex(metadata)
        self.logger = logger
        self.clock = clock
    }

    /// Connects the processor to what carries out its effects and to the
    /// dispatcher's direct hand-over (both made after the processor).
    func attach(sink: any EffectSink, reservations: (any DirectReservations)? = nil) {
        wiring = Wiring(sink: sink, reservations: reservations)
    }

    func updateMetadata(_ body: (inout MetadataCache) -> Void) { body(&metadata) }

    /// What to do with the WfRuns of a failed group commit (a cluster reloads
    /// their partitions: queue rows, timers and orphan events the commit may
    /// have written after all).
    nonisolated func onFailedCommit(_ hook: @escaping @Sendable ([String]) -> Void) {
        failedCommitHook.withLock { $0 = hook }
    }

    /// Runs `work` inside the next group commit and returns when it is durable.
    @discardableResult
    nonisolated func submit<T: Sendable>(key: String, _ work: @escaping @Sendable (inout Staging) throws -> T)
        async throws -> T
    {
        let result = try await withCheckedThrowingContinuation {
            (continuation: CheckedContinuation<any Sendable, Error>) in
            enqueue(key: key, { try work(&$0) }, done: { continuation.resume(with: $0) })
        }
        return result as! T
    }

    /// Runs `work` inside the next group commit and calls `done` with its
    /// result once that is durable (on the commit thread: `done` must be
    /// quick), or with the error that refused it. Callable from any thread
    /// without a task: the server's event loops hand requests over this way.
    nonisolated func enqueue(
        key: String, _ work: @escaping BatchBuilder.Work,
        done: @escaping @Sendable (Result<any Sendable, Error>) -> Void
    ) {
        if let membership, !membership.owns(wfRunId: key) {
            done(
                .failure(
                    LHError(
                        .unavailable,
                        "this server does not own WfRun '\(key)' (its partition is another server's or being taken over); retry"
                    )))
            return
        }
        if intake.append(Job(key: key, work: work, done: done)) { Task { await self.flushLoop() } }
    }

    /// Returns once every job enqueued before it is settled (committed or
    /// refused): a job of its own joins the next group commit, and group
    /// commits settle in order. Before a cluster releases partitions.
    nonisolated func barrier() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let job = Job(key: "\u{0}barrier", work: { _ in () }, done: { _ in continuation.resume() })
            if intake.append(job) { Task { await self.flushLoop() } }
        }
    }

    /// Forgets the cached states of the WfRuns `released` picks (their
    /// partitions went to another server).
    nonisolated func evict(where released: (String) -> Bool) {
        let dropped = cache.evictAll(where: released)
        if !dropped.isEmpty { graveyard.withLock { $0.append(dropped) } }
    }

    /// A committed WfRun's state, for reads.
    func read(_ id: String) throws -> WfRunState? {
        if let s = cache.get(id) { return s }
        return try store.wfRun(id)
    }

    /// Room for one more group commit: waits until the oldest one finishes.
    private func waitForRoom() async {
        while !pipeline.withLock({ $0.hasRoom }) {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                if !pipeline.withLock({ $0.park(c) }) { c.resume() }
            }
        }
    }

    private func flushLoop() async {
        while true {
            await waitForRoom()
            let jobs = intake.takeAll()
            if jobs.isEmpty { return }
            let builder = BatchBuilder(
                now: clock.now(), metadata: metadata, store: store, base: pipeline.withLock { $0.base() },
                cache: cache, reservations: wiring.reservations)
            let outcomes = await builder.run(
                jobs,
                freeing: graveyard.withLock { g in
                    defer { g = [] }
                    return g
                })
            var results = [Result<any Sendable, Error>?](repeating: nil, count: jobs.count)
            for outcome in outcomes { for (i, r) in outcome.results { results[i] = r } }
            batchNumber += 1
            let built = BuiltBatch(number: batchNumber, epoch: builder.base.epoch, stagings: outcomes.map(\.staging))
            hand(built, answers: zip(jobs, results).map { ($0.done, $1!) }, wiring: wiring)
        }
    }

    /// Hands a built group commit to the commit line, unless a commit its
    /// jobs built on failed meanwhile.
    private nonisolated func hand(_ built: BuiltBatch, answers: [Answer], wiring: Wiring) {
        let accepted = pipeline.withLock {
            $0.accept(
                batch: built.number, builtOn: built.epoch, states: built.states, deleted: built.deleted,
                orphans: built.batch.orphanEvents)
        }
        guard accepted else {
            for (done, _) in answers {
                done(.failure(LHError(.unavailable, "storage failed; the command was not applied")))
            }
            for (reservation, _) in built.pushes { wiring.reservations?.release(reservation) }
            return
        }
        let started = Date()
        let entry = CommitLine.Entry(
            batch: built.batch, epoch: built.epoch,
            durable: { self.committed(built, answers: answers, wiring: wiring, started: started) },
            failed: { self.failed(built, answers: answers, wiring: wiring, error: $0) })
        commitLine.append(here: answers.count <= BatchBuilder.inlineJobs, entry)
    }

    /// On the commit thread, once durable: reads see the batch, the workers
    /// get their tasks, the callers their answers, then the effects are
    /// carried out.
    private nonisolated func committed(_ built: BuiltBatch, answers: [Answer], wiring: Wiring, started: Date) {
        let dropped = cache.update(built.states, deleted: built.deleted)
        if !dropped.isEmpty { graveyard.withLock { $0.append(dropped) } }
        let reservations = wiring.reservations
        LHResponder.grouping {
            for (reservation, task) in built.pushes {
                if let task {
                    reservation.push.send(task)
                } else {
                    reservations?.release(reservation)
                }
            }
            for (done, result) in answers { done(result) }
        }
        pipeline.withLock { $0.committed(batch: built.number, states: built.states, deleted: built.deleted) }?.resume()
        if let sink = wiring.sink, !built.effects.isEmpty || !built.deleted.isEmpty {
            sink.carryOut(built.effects, deleted: built.deleted)
        }
        let now = Date()
        for arrived in built.reportArrivals { metrics.taskToNextTask.recordSeconds(now.timeIntervalSince(arrived)) }
        let seconds = now.timeIntervalSince(started)
        metrics.committed(built.tally, jobs: answers.count, seconds: seconds)
        statistics.record(jobs: answers.count, seconds: seconds, logger: logger)
    }

    private nonisolated func failed(_ built: BuiltBatch, answers: [Answer], wiring: Wiring, error: Error) {
        logger.error("group commit failed; the commands are refused", metadata: [LHLog.error: "\(error)"])
        for (done, _) in answers { done(.failure(LHError(.unavailable, "storage failed: \(error)"))) }
        for (reservation, _) in built.pushes { wiring.reservations?.release(reservation) }
        // The store may hold the batch or not (PostgreSQL's connection lost
        // during the call: an ambiguous commit). Its WfRuns are read from
        // the store again, so the next command builds on what is durable.
        let dropped = cache.evict(built.states.map(\.key))
        if !dropped.isEmpty { graveyard.withLock { $0.append(dropped) } }
        pipeline.withLock { $0.failed(builtOn: built.epoch) }?.resume()
        if let hook = failedCommitHook.withLock({ $0 }) {
            var ids = Set(built.states.map(\.key)).union(built.deleted)
            for e in built.batch.orphanEvents { ids.insert(e.id.wfRunID.id) }
            if !ids.isEmpty { hook(Array(ids)) }
        }
    }
}
