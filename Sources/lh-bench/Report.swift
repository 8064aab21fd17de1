import Foundation
import NIOConcurrencyHelpers

/// A progress bar on stderr: redrawn in place on a terminal, one line every
/// few seconds otherwise (CI logs).
final class Progress: @unchecked Sendable {
    private let label: String
    private let total: Double
    private let unit: String
    private let isTerminal = isatty(STDERR_FILENO) != 0
    private var lastLine = -100.0
    private let lock = NSLock()

    init(_ label: String, total: Double, unit: String) {
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
    }

    func update(_ done: Double, _ note: String = "") {
        lock.lock()
        defer { lock.unlock() }
        let now = monoSeconds()
        if !isTerminal && now - lastLine < 5 { return }
        lastLine = now
        let fraction = min(max(done / total, 0), 1)
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let amount = unit == "s" ? String(format: "%.1f/%.0f s", done, total) : "\(Int(done))/\(Int(total)) \(unit)"
        let text = "\(label) [\(bar)] \(String(format: "%3.0f", fraction * 100))% \(amount) \(note)"
        if isTerminal {
            FileHandle.standardError.write(Data("\r\u{1B}[K\(text)".utf8))
        } else {
            FileHandle.standardError.write(Data("\(text)\n".utf8))
        }
    }

    func done(_ note: String = "") {
        lock.lock()
        lastLine = -100
        lock.unlock()
        update(total, note)
        if isTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

/// Prints a note line on stderr (between progress bars).
func say(_ text: String) {
    FileHandle.standardError.write(Data("\(text)\n".utf8))
}

/// Order statistics of a sample, in milliseconds.
struct Distribution {
    let count: Int
    let p50: Double
    let p90: Double
    let p99: Double
    let max: Double
    let mean: Double

    /// `values` in nanoseconds.
    init(nanos values: [Int64]) {
        let sorted = values.sorted()
        count = sorted.count
        func at(_ q: Double) -> Double {
            guard !sorted.isEmpty else { return .nan }
            let i = Swift.min(sorted.count - 1, Int((q * Double(sorted.count)).rounded(.up)) - 1)
            return Double(sorted[Swift.max(i, 0)]) / 1e6
        }
        p50 = at(0.50)
        p90 = at(0.90)
        p99 = at(0.99)
        max = sorted.last.map { Double($0) / 1e6 } ?? .nan
        mean = sorted.isEmpty ? .nan : Double(sorted.reduce(0, +)) / Double(sorted.count) / 1e6
    }

    var json: [String: Any] {
        [
            "count": count, "p50_ms": round3(p50), "p90_ms": round3(p90), "p99_ms": round3(p99), "max_ms": round3(max),
            "mean_ms": round3(mean),
        ]
    }

    var text: String {
        count == 0
            ? "no samples"
            : String(format: "p50 %.3f  p90 %.3f  p99 %.3f  max %.3f ms  (n=%d)", p50, p90, p99, max, count)
    }
}

func round3(_ x: Double) -> Double { x.isFinite ? (x * 1000).rounded() / 1000 : -1 }

/// A scenario's results: rows for the table and fields for the JSON line.
struct Results {
    let scenario: String
    var rows: [(String, String)] = []
    var fields: [String: Any] = [:]

    init(_ scenario: String) { self.scenario = scenario }

    mutating func add(_ label: String, _ text: String, key: String, _ value: Any) {
        rows.append((label, text))
        fields[key] = value
    }

    mutating func add(_ label: String, _ d: Distribution, key: String) {
        add(label, d.text, key: key, d.json)
    }

    func print(extra: [String: Any]) {
        let width = rows.map(\.0.count).max() ?? 10
        var out = "\n\(scenario)\n" + String(repeating: "-", count: width + 40) + "\n"
        for (label, text) in rows {
            out += label.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + text + "\n"
        }
        Swift.print(out)
        var all = fields
        all["scenario"] = scenario
        for (k, v) in extra { all[k] = v }
        let data = (try? JSONSerialization.data(withJSONObject: all, options: [.sortedKeys])) ?? Data("{}".utf8)
        Swift.print(String(decoding: data, as: UTF8.self))
        fflush(nil)
    }
}

func megabytes(_ bytes: Int64) -> String { String(format: "%.1f MB", Double(bytes) / 1_048_576) }

/// Failures of many concurrent requests: how many, and the first one's text.
final class ErrorTally: Sendable {
    private let box = NIOLockedValueBox<(count: Int, first: String?)>((0, nil))

    func record(_ error: Error) {
        box.withLockedValue {
            if $0.first == nil { $0.first = "\(error)" }; $0.count += 1
        }
    }

    var count: Int { box.withLockedValue { $0.count } }

    /// "0", or "N: the first error".
    var text: String { box.withLockedValue { t in t.first.map { "\(t.count): \($0)" } ?? "0" } }

    /// For setup steps that must all succeed.
    func requireNone(_ what: String) throws {
        let (count, first) = box.withLockedValue { ($0.count, $0.first) }
        if count > 0 { throw BenchError("\(count) \(what) failed: \(first ?? "")") }
    }
}

extension Results {
    mutating func add(_ label: String, errors: ErrorTally) { add(label, errors.text, key: "errors", errors.count) }
}
