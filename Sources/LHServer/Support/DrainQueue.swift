import Synchronization

/// Items handed over from any thread to one drainer at a time, in order.
/// `append` says whether the caller must start the drainer (none was
/// running); the drainer calls `takeAll` until it returns nothing, which in
/// the same lock marks it stopped, so no item is ever left without one.
final class DrainQueue<Item: Sendable>: Sendable {
    private let state = Mutex<(items: [Item], draining: Bool)>(([], false))

    init() {}

    /// Adds `item`; true when the caller must start draining.
    func append(_ item: Item) -> Bool {
        state.withLock { s in
            s.items.append(item)
            guard !s.draining else { return false }
            s.draining = true
            return true
        }
    }

    /// Everything appended since the last call; empty (and the drainer
    /// marked stopped) when there is nothing.
    func takeAll() -> [Item] {
        state.withLock { s in
            if s.items.isEmpty { s.draining = false }
            defer { s.items = [] }
            return s.items
        }
    }
}
