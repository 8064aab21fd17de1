import Foundation
import LHStore
import Synchronization

/// Group commits waiting to be written, in batch order. Transactions (with
/// their fsync) are written on a thread of their own, so that the batch
/// builder goes on building meanwhile; the group commits that arrive while
/// one is written go together into the next transaction (one fsync for
/// all). A small group commit that finds no transaction being written is
/// written on the caller's thread instead (no thread to wake); what arrives
/// meanwhile waits and shares the next one.
final class CommitLine: Sendable {
    struct Entry: Sendable {
        var batch: LHWriteBatch
        var epoch: UInt64
        /// Run on the commit thread once the batch is durable, or when its
        /// transaction failed or was refused.
        var durable: @Sendable () -> Void
        var failed: @Sendable (Error) -> Void
    }

    private static let queue = DispatchQueue(label: "lh.store.commit", qos: .userInitiated)
    /// Seconds spent inside store.commit (statistics).
    static let writeSeconds = Mutex(0.0)
    private let store: any LHStorage
    private let metrics: LHMetrics
    private let waiting = DrainQueue<Entry>()
    /// The epoch whose commit failed: later batches of that epoch were
    /// built on it and are refused.
    private let failedEpoch = Mutex<UInt64?>(nil)

    init(store: any LHStorage, metrics: LHMetrics) {
        self.store = store
        self.metrics = metrics
    }

    /// `here`: when no transaction is being written, write this one on the
    /// calling thread.
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
                    e.failed(StoreError(.refused, "an earlier group commit failed; this one was built on it"))
                } else {
                    live.append(e)
                }
            }
            guard let last = live.last else { continue }
            do {
                let t0 = Date()
                try store.commit(live.map(\.batch))
                let seconds = Date().timeIntervalSince(t0)
                Self.writeSeconds.withLock { $0 += seconds }
                metrics.storeCommitTime.recordSeconds(seconds)
            } catch {
                failedEpoch.withLock { $0 = last.epoch }
                for e in live { e.failed(error) }
                continue
            }
            for e in live { e.durable() }
        }
    }
}
