import Foundation

/// A binary min-heap of timer entries by due time.
struct TimerHeap {
    struct Entry {
        var due: Date
        var id: String
    }

    private var items: [Entry] = []
    var count: Int { items.count }

    func peek() -> Entry? { items.first }

    mutating func push(_ e: Entry) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i].due < items[parent].due else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    @discardableResult
    mutating func pop() -> Entry? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var m = i
            if l < items.count && items[l].due < items[m].due { m = l }
            if r < items.count && items[r].due < items[m].due { m = r }
            if m == i { break }
            items.swapAt(i, m)
            i = m
        }
        return top
    }
}
