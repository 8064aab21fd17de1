import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import Logging
import ServiceLifecycle

/// The server's inside: the store, the metadata cache, the command
/// processor, task queues and timers. A Service: `run()` fires timers until
/// graceful shutdown.
public final class LHCore: Service, Sendable {
    let store: any LHStore
    let processor: CommandProcessor
    let dispatcher: TaskDispatcher
    let timers: TimerService
    let logger: Logger

    /// Opens (or creates) the store in `dataDirectory` and rebuilds queues
    /// and timers from it.
    public init(dataDirectory: URL, sync: SQLiteStore.Sync = .full, logger: Logger) async throws {
        let store = try SQLiteStore(directory: dataDirectory, sync: sync)
        self.store = store
        self.logger = logger
        var metadata = MetadataCache()
        for t in try store.taskDefs() { metadata.taskDefs[t.id.name] = t }
        for e in try store.externalEventDefs() { metadata.externalEventDefs[e.id.name] = e }
        for s in try store.wfSpecs() { metadata.wfSpecs[s.id.name, default: []].append(s) }
        for name in metadata.wfSpecs.keys {
            metadata.wfSpecs[name]!.sort { ($0.id.majorVersion, $0.id.revision) < ($1.id.majorVersion, $1.id.revision) }
        }
        processor = CommandProcessor(store: store, metadata: metadata, logger: logger)
        dispatcher = TaskDispatcher(processor: processor, logger: logger)
        timers = TimerService(processor: processor, logger: logger)
        await processor.setSink(EffectRouter(dispatcher: dispatcher, timers: timers), dispatcher: dispatcher)
        // Recovery: what was queued waits again; timers (attempt timeouts of
        // TaskRuns whose worker is gone among them) fire from their due times.
        let queued = try store.queuedTasks()
        for q in queued { dispatcher.enqueue(q) }
        let stored = try store.timers()
        for t in stored { await timers.schedule(t) }
        logger.notice("store opened", metadata: ["lh.store": "\(store.path)", "lh.queued": "\(queued.count)", "lh.timers": "\(stored.count)"])
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await self.timers.run()
        }
    }
}
