import LHStore

/// A FIFO of queued attempts: O(1) at both ends.
struct TaskQueue {
    private var items: [QueuedTask] = []
    private var head = 0

    var isEmpty: Bool { head == items.count }
    var count: Int { items.count - head }

    mutating func append(_ task: QueuedTask) { items.append(task) }

    func peekFirst() -> QueuedTask? { head < items.count ? items[head] : nil }

    mutating func popFirst() -> QueuedTask? {
        guard head < items.count else { return nil }
        let task = items[head]
        head += 1
        if head >= 1024 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return task
    }

    mutating func removeAll(where predicate: (QueuedTask) -> Bool) {
        items = items[head...].filter { !predicate($0) }
        head = 0
    }
}
