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
    let logger: Logger
    /// Counted work and levels, served at `/metrics` (``HTTPFront``).
    package let metrics: LHMetrics

    /// Opens (or creates) the store in `dataDirectory` and rebuilds queues
    /// and timers from it.
    package convenience init(dataDirectory: URL, sync: SQLiteStore.Sync = .full, logger: Logger) async throws {
        try await self.init(store: try SQLiteStore(directory: dataDirectory, sync: sync), logger: logger)
    }

    /// Runs on `store`, rebuilding queues and timers from it.
    init(store: any LHStorage, clock: any LHClock = SystemClock(), logger: Logger) async throws {
        self.store = store
        self.logger = logger
        let metadata = try LHError.mapping { try MetadataCache(loadingFrom: store) }
        metrics = LHMetrics()
        processor = CommandProcessor(store: store, metadata: metadata, logger: logger, clock: clock, metrics: metrics)
        dispatcher = TaskDispatcher(starter: processor, logger: logger)
        timers = TimerService(firing: processor, clock: clock, logger: logger)
        admin = AdminService(processor: processor, store: store, dispatcher: dispatcher, clock: clock)
        await processor.attach(sink: EffectRouter(dispatcher: dispatcher, timers: timers), reservations: dispatcher)
        // Recovery: what was queued waits again; timers (attempt timeouts of
        // TaskRuns whose worker is gone among them) fire from their due times.
        let queued = try store.queuedTasks()
        for q in queued { dispatcher.enqueue(q) }
        let stored = try store.timers()
        for t in stored { await timers.schedule(t) }
        logger.notice(
            "store opened",
            metadata: [
                "lh.store": "\((store as? SQLiteStore)?.path ?? "\(type(of: store))")", "lh.queued": "\(queued.count)",
                "lh.timers": "\(stored.count)",
            ])
    }

    package func run() async throws {
        await cancelWhenGracefulShutdown {
            await self.timers.run()
        }
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
