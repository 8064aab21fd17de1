import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import LHWireProto
import Logging
import ServiceLifecycle
import Synchronization

/// The server's inside: the store, the metadata cache, the command
/// processor, task queues, timers and the admin service every door calls.
/// A Service: `run()` fires timers until graceful shutdown.
///
/// Who may touch what: only the group commit (`GroupCommit/`) writes the
/// store's batch; the dispatcher and the timers ask it for jobs by name
/// (``TaskStarting``, ``TimerFiring``); it reaches back only through
/// ``DirectReservations`` and ``EffectSink``.
package final class LHCore: Service, Sendable {
    let store: any LHStorage
    let processor: CommandProcessor
    let dispatcher: TaskDispatcher
    let timers: TimerService
    let admin: AdminService
    let claims: RestartClaims
    /// A cluster's ownership rounds (``rebalance()``).
    private let ownership = Mutex(Ownership())

    struct Ownership {
        var loadedOnce = false
        var changed: (@Sendable (Int, Int) -> Void)?
        /// Released here but not in the store (PostgreSQL away): released
        /// again at the next round.
        var unreleased: Set<Int32> = []
        /// Partitions of a failed group commit: loaded again at the next
        /// round (the commit may have been written all the same).
        var reload: Set<Int32> = []
    }
    /// Set when the store is shared by a cluster: where requests go.
    let cluster: ClusterRouting?
    /// Yields once this server loaded its first partitions (at once
    /// without a cluster): the claim grace counts from then.
    private let owning: (stream: AsyncStream<Void>, continuation: AsyncStream<Void>.Continuation)
    let clock: any LHClock
    let logger: Logger
    /// Counted work and levels, served at `/metrics` (``HTTPFront``).
    package let metrics: LHMetrics

    /// Opens (or creates) the store in `dataDirectory` and rebuilds queues
    /// and timers from it.
    /// `claimGrace`: seconds after start-up in which workers may claim the
    /// TaskRun attempts they held when the server stopped (``RestartClaims``).
    package convenience init(
        dataDirectory: URL, sync: SQLiteStore.Sync = .full, claimGrace: Double = LHCore.defaultClaimGrace,
        logger: Logger
    ) async throws {
        try await self.init(
            store: try SQLiteStore(directory: dataDirectory, sync: sync), claimGrace: claimGrace, logger: logger)
    }

    package static let defaultClaimGrace = 10.0

    /// Runs on `store` (another backend than SQLite: lh-server's
    /// `--store postgres://...`), rebuilding queues and timers from it.
    package convenience init(store: any LHStorage, claimGrace: Double, logger: Logger) async throws {
        try await self.init(store: store, clock: SystemClock(), claimGrace: claimGrace, logger: logger)
    }

    /// Runs on `store`, rebuilding queues and timers from it.
    init(
        store: any LHStorage, clock: any LHClock = SystemClock(), claimGrace: Double = LHCore.defaultClaimGrace,
        logger: Logger
    ) async throws {
        self.store = store
        self.logger = logger
        self.clock = clock
        let metadata = try LHError.mapping { try MetadataCache(loadingFrom: store) }
        let metrics = LHMetrics()
        self.metrics = metrics
        processor = CommandProcessor(store: store, metadata: metadata, logger: logger, clock: clock, metrics: metrics)
        dispatcher = TaskDispatcher(starter: processor, logger: logger)
        timers = TimerService(firing: processor, clock: clock, logger: logger)
        claims = RestartClaims([], grace: claimGrace)
        let membership = store as? any LHClusterMembership
        cluster = membership.map { ClusterRouting(membership: $0, logger: logger, metrics: metrics) }
        owning = AsyncStream.makeStream(of: Void.self)
        admin = AdminService(
            processor: processor, store: store, dispatcher: dispatcher, clock: clock, claims: claims, cluster: cluster)
        await processor.attach(sink: EffectRouter(dispatcher: dispatcher, timers: timers), reservations: dispatcher)
        if let membership {
            processor.onFailedCommit { [weak self] ids in
                self?.ownership.withLock { o in for id in ids { o.reload.insert(membership.partition(of: id)) } }
            }
            // What the store claimed when it opened (every partition for
            // the first member of a cluster, else nothing until others
            // release): loaded before the server listens.
            await rebalance()
        } else {
            try await takeOwnership()
        }
    }

    /// Told whenever the partitions this server serves change (served,
    /// total): lh-server prints it.
    package func onOwnershipChange(_ handler: @escaping @Sendable (Int, Int) -> Void) {
        ownership.withLock { $0.changed = handler }
    }

    /// One round of the cluster's ownership protocol: claims up to this
    /// server's fair share and loads what it claimed, releases what is over
    /// its share (after its commits in flight), follows metadata written by
    /// another member.
    func rebalance() async {
        guard let membership = cluster?.membership else { return }
        let retry = ownership.withLock { o in
            defer { o.unreleased = [] }
            return o.unreleased
        }
        if !retry.isEmpty {
            do {
                try await lhOffPool { try membership.release(partitions: retry.sorted()) }
            } catch {
                ownership.withLock { $0.unreleased.formUnion(retry) }
            }
        }
        let reload = ownership.withLock { o in
            defer { o.reload = [] }
            return o.reload.intersection(membership.servedPartitions)
        }
        if !reload.isEmpty { await unload(reload.sorted(), reason: "reloading after a failed group commit") }
        let members = membership.members
        let plan = await lhOffPool { membership.rebalance() }
        let before = membership.servedPartitions.count
        if !plan.toLoad.isEmpty {
            let first = ownership.withLock { o in
                defer { o.loadedOnce = true }
                return !o.loadedOnce
            }
            await gain(plan.toLoad, restartClaims: first && plan.liveMembers == 1, fromDead: plan.fromDeadMembers)
        }
        // After the load: a worker told that the members changed (or that
        // a dead member's partitions are here now) subscribes again here,
        // listing what it holds (claims of a dead member's attempts).
        if membership.members != members || !plan.fromDeadMembers.isEmpty, let list = admin.clusterMembers() {
            dispatcher.broadcast(Lhwire_Envelope(id: 0, .clusterMembers(list)))
        }
        if !plan.toRelease.isEmpty { await giveBack(plan.toRelease) }
        let after = membership.servedPartitions.count
        if after != before { ownership.withLock { $0.changed }?(after, membership.partitionCount) }
        if !membership.ownsMetadata { await refreshMetadata() }
    }

    /// Loads `partitions` (claimed by this server) and serves them: their
    /// queued TaskRuns wait for workers again, their timers fire from their
    /// due times. `restartClaims`: this server starts a cluster alone (its
    /// workers were gone with the old servers too): attempts in workers'
    /// hands wait for their workers' claims, as at a single server's start.
    /// Taken from a member that released them, they are left to their
    /// workers' reports (which reach the owner on any connection). Taken
    /// from a dead member (`fromDead`), their attempts wait for claims for
    /// the grace period: the workers, connected here too, subscribe again
    /// when told the member is gone, listing what they hold; what nobody
    /// claims (its push never left the dead member, or its worker died
    /// too) is retried at the end of the grace instead of after its
    /// attempt timeout.
    private func gain(_ partitions: [Int32], restartClaims: Bool, fromDead: [Int32]) async {
        guard let membership = cluster?.membership else { return }
        let store = self.store
        do {
            let load = try await lhOffPool { try membership.load(partitions: partitions) }
            if restartClaims {
                claims.reset(try await lhOffPool { try RestartClaims.inFlight(in: store, timers: load.timers) })
            } else if !fromDead.isEmpty {
                let dead = Set(fromDead)
                let timers = load.timers.filter { dead.contains(membership.partition(of: $0.wfRunId)) }
                let attempts = try await lhOffPool { try RestartClaims.inFlight(in: store, timers: timers) }
                if !attempts.isEmpty {
                    claims.add(attempts)
                    Task { await self.expireClaims(attempts) }
                }
            }
            if partitions.contains(0) {
                let fresh = try await lhOffPool { try MetadataCache(loadingFrom: store) }
                await processor.updateMetadata { $0 = fresh }
            }
            membership.serve(partitions: partitions)
            for q in load.queued { dispatcher.enqueue(q) }
            for t in load.timers { await timers.schedule(t) }
            logger.notice(
                "partitions loaded and served",
                metadata: [
                    "lh.partitions": "\(partitions.count)", "lh.queued": "\(load.queued.count)",
                    "lh.timers": "\(load.timers.count)", "lh.inWorkersHands": "\(restartClaims ? claims.count : 0)",
                ])
        } catch {
            // PostgreSQL away: claimed but not served; the next round loads them.
            logger.warning(
                "cannot load claimed partitions; trying again", metadata: [LHLog.error: "\(error)"])
            return
        }
        if restartClaims {
            owning.continuation.yield()
            owning.continuation.finish()
        }
    }

    /// Gives `partitions` back: no new command for them is taken, the
    /// group commits in flight finish, their queues, timers, claims and
    /// cached states leave memory, and the store releases them (another
    /// member claims them at its next round). TaskRuns this server handed
    /// out go on; their reports are forwarded to the new owner.
    private func giveBack(_ partitions: [Int32]) async {
        guard let membership = cluster?.membership else { return }
        await unload(partitions, reason: "releasing partitions over this server's share", dropClaims: true)
        do {
            try await lhOffPool { try membership.release(partitions: partitions) }
        } catch {
            // Still ours in PostgreSQL until our lease ends (or the next
            // round's release): nobody else writes them meanwhile.
            logger.warning("cannot release partitions", metadata: [LHLog.error: "\(error)"])
            ownership.withLock { $0.unreleased.formUnion(partitions) }
        }
    }

    /// This server owns its partitions now (at start-up, or a standby that
    /// took over): metadata read again, and what was queued waits again,
    /// timers fire from their due times, attempts that were in workers'
    /// hands wait for their workers to claim them (or for their attempt
    /// timeouts, past the grace).
    package func takeOwnership() async throws {
        let store = self.store
        let fresh = try LHError.mapping { try MetadataCache(loadingFrom: store) }
        await processor.updateMetadata { $0 = fresh }
        let stored = try LHError.mapping { try store.timers() }
        claims.reset(try LHError.mapping { try RestartClaims.inFlight(in: store, timers: stored) })
        let queued = try LHError.mapping { try store.queuedTasks() }
        for q in queued { dispatcher.enqueue(q) }
        for t in stored { await timers.schedule(t) }
        owning.continuation.yield()
        owning.continuation.finish()
        logger.notice(
            "store opened",
            metadata: [
                "lh.store":
                    "\((store as? SQLiteStore)?.path ?? (store as? CustomStringConvertible)?.description ?? "\(type(of: store))")",
                "lh.queued": "\(queued.count)",
                "lh.timers": "\(stored.count)", "lh.inWorkersHands": "\(claims.count)",
            ])
    }

    /// How this server reaches the other members when it forwards commands
    /// (a cluster): plaintext, or TLS trusting `caCertPath` (nil: the
    /// system's trust store), presenting `clientCertificate` (certificate
    /// and key paths) where the members require mutual TLS.
    package func configurePeers(plaintext: Bool, caCertPath: String?, clientCertificate: (String, String)?) {
        cluster?.configurePeers(
            plaintext
                ? .plaintext
                : .tls(
                    .init(
                        caCertPath: caCertPath, clientCertPath: clientCertificate?.0,
                        clientKeyPath: clientCertificate?.1)))
    }

    /// Metadata read again from the store on a server that does not write
    /// it (another member wrote some): served by its reads at once.
    package func refreshMetadata() async {
        let store = self.store
        // Blocking reads: on a thread outside the cooperative pool.
        let read = await lhOffPool { try? MetadataCache(loadingFrom: store) }
        guard let fresh = read else { return }
        if fresh != processor.currentMetadata { await processor.updateMetadata { $0 = fresh } }
    }

    package func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.timers.run() }
                group.addTask {
                    for await _ in self.owning.stream { break }
                    await self.endClaimGrace()
                }
                if let membership = self.cluster?.membership {
                    group.addTask {
                        while !Task.isCancelled {
                            await self.clock.sleep(
                                until: self.clock.now().addingTimeInterval(membership.rebalanceInterval))
                            if Task.isCancelled { break }
                            await self.rebalance()
                        }
                    }
                }
            }
        }
    }

    /// Stops serving `partitions` and forgets what memory holds of them
    /// once the group commits in flight are settled: their queued TaskRuns,
    /// timers, cached states (and restart claims, `dropClaims`). Before a
    /// release; or after a failed group commit, which PostgreSQL may have
    /// written all the same (its queue rows, timers and orphan events are
    /// then only in the store): the next round loads them again
    /// (owned and not served), as after a claim.
    private func unload(_ partitions: [Int32], reason: String, dropClaims: Bool = false) async {
        guard let membership = cluster?.membership else { return }
        logger.notice("\(reason)", metadata: ["lh.partitions": "\(partitions.count)"])
        membership.stopServing(partitions: partitions)
        await processor.barrier()
        let set = Set(partitions)
        let picked: @Sendable (String) -> Bool = { set.contains(membership.partition(of: $0)) }
        dispatcher.removeAll(where: picked)
        await timers.removeAll(where: picked)
        if dropClaims { claims.drop(where: picked) }
        processor.evict(where: picked)
    }

    /// The grace of attempts taken from a dead member: what no worker
    /// claimed is lost then.
    private func expireClaims(_ attempts: [RestartClaims.Attempt]) async {
        logger.notice(
            "TaskRun attempts of a dead member's partitions may be in workers' hands; waiting for their workers to claim them",
            metadata: ["lh.attempts": "\(attempts.count)", "lh.graceSeconds": "\(claims.grace)"])
        await clock.sleep(until: clock.now().addingTimeInterval(claims.grace))
        let lost = claims.expire(attempts)
        guard let membership = cluster?.membership else { return }
        for attempt in lost where membership.owns(wfRunId: attempt.wfRunId) {
            processor.loseAttempt(
                attempt,
                reason:
                    "lost with the server that handed it out: no worker claimed it within \(Self.seconds(claims.grace)) of the takeover (worker '\(attempt.workerId)' held it)"
            )
        }
    }

    /// After the grace period, attempts no worker claimed are lost: retried
    /// now instead of after their attempt timeouts.
    private func endClaimGrace() async {
        guard claims.isOpen else { return }
        logger.notice(
            "TaskRun attempts were in workers' hands when the server stopped; waiting for their workers to claim them",
            metadata: ["lh.attempts": "\(claims.count)", "lh.graceSeconds": "\(claims.grace)"])
        await clock.sleep(until: clock.now().addingTimeInterval(claims.grace))
        if Task.isCancelled { return }
        let lost = claims.expire()
        if !lost.isEmpty {
            logger.notice(
                "attempts not claimed by any worker are retried now",
                metadata: ["lh.attempts": "\(lost.count)", "lh.graceSeconds": "\(claims.grace)"])
        }
        for attempt in lost {
            processor.loseAttempt(
                attempt,
                reason:
                    "lost in a server restart: no worker claimed it within \(Self.seconds(claims.grace)) of start-up (worker '\(attempt.workerId)' held it)"
            )
        }
    }

    static func seconds(_ s: Double) -> String {
        s == s.rounded() ? "\(Int(s)) s" : String(format: "%.1f s", s)
    }
}

extension MetadataCache {
    /// Everything the store holds, WfSpec versions in ascending order.
    init(loadingFrom store: any LHStorage) throws {
        for t in try store.taskDefs() { taskDefs[t.id.name] = t }
        for e in try store.externalEventDefs() { externalEventDefs[e.id.name] = e }
        for s in try store.wfSpecs() { wfSpecs[s.id.name, default: []].append(s) }
        for name in wfSpecs.keys {
            wfSpecs[name]!.sort { ($0.id.majorVersion, $0.id.revision) < ($1.id.majorVersion, $1.id.revision) }
        }
    }
}
