import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import Logging
import ServiceLifecycle

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
    /// Set when the store is shared by a cluster: where requests go.
    let cluster: ClusterRouting?
    /// Yields once this server owns its partitions (at once without a
    /// cluster; when it took over, for a standby).
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
        metrics = LHMetrics()
        processor = CommandProcessor(store: store, metadata: metadata, logger: logger, clock: clock, metrics: metrics)
        dispatcher = TaskDispatcher(starter: processor, logger: logger)
        timers = TimerService(firing: processor, clock: clock, logger: logger)
        claims = RestartClaims([], grace: claimGrace)
        let membership = store as? any LHClusterMembership
        cluster = membership.map { ClusterRouting(membership: $0, logger: logger) }
        owning = AsyncStream.makeStream(of: Void.self)
        admin = AdminService(
            processor: processor, store: store, dispatcher: dispatcher, clock: clock, claims: claims, cluster: cluster)
        await processor.attach(sink: EffectRouter(dispatcher: dispatcher, timers: timers), reservations: dispatcher)
        if membership?.ownsMetadata ?? true {
            try await takeOwnership()
        } else {
            logger.notice(
                "store opened as a standby: reads are served here, commands go to the owner",
                metadata: ["lh.store": "\((store as? CustomStringConvertible)?.description ?? "\(type(of: store))")"])
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
        cluster?.markReady()
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

    /// A standby's metadata read again from the store (another server
    /// wrote some): served by its reads at once.
    package func refreshMetadata() async {
        let store = self.store
        // Blocking reads: on a thread outside the cooperative pool.
        let read = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: try? MetadataCache(loadingFrom: store)) }
        }
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
            }
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
