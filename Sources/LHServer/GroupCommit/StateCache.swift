import Foundation
import LHEngine

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

    /// Forgets these WfRuns (their next read comes from the store); returns
    /// the states let go.
    func evictAll(where picked: (String) -> Bool) -> [WfRunState] {
        lock.withLock {
            let ids = entries.keys.filter(picked)
            return ids.compactMap { entries.removeValue(forKey: $0)?.state }
        }
    }

    func evict<S: Sequence<String>>(_ ids: S) -> [WfRunState] {
        lock.withLock { ids.compactMap { entries.removeValue(forKey: $0)?.state } }
    }
}
