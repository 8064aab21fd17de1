import ArgumentParser
import Foundation
import LHClient
import LHWorker
import NIOConcurrencyHelpers

/// `lh-bench worker`: the bench's task worker process, written with the
/// worker SDK as a user would. Prints "ready", then "count N" (tasks
/// reported) every 50 ms; when stdin closes it prints its latency samples
/// ("samples ..." lines of pairs: when it was taken, task-to-next-task; both
/// nanoseconds), "end", and exits.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Runs the bench's task workers (started by the scenarios).",
        shouldDisplay: false
    )

    @Option(help: "Comma-separated TaskDefs to serve: bench-one, bench-step, bench-hold.")
    var tasks: String

    @Option(help: "How long bench-hold keeps each task, in milliseconds.")
    var holdMs: Int = 200

    func run() async throws {
        let config = try LHConfig.fromEnvironment()
        let samples = NIOLockedValueBox<[Int64]>([])
        samples.withLockedValue { $0.reserveCapacity(1 << 16) }
        let hold = holdMs
        var workers: [LHTaskWorker] = []
        for name in tasks.split(separator: ",").map(String.init) {
            switch name {
            case BenchTask.one:
                workers.append(
                    LHTaskWorker(config: config, taskDefName: name, inputs: ["i"]) { (i: Int) async throws -> Int in
                        i + 1
                    })
            case BenchTask.step:
                // Input: when the previous task of the chain was reported (0 for the first).
                workers.append(
                    LHTaskWorker(config: config, taskDefName: name, inputs: ["previous-report-nanos"]) {
                        (previous: Int) async throws -> Int in
                        let now = wallNanos()
                        if previous > 0 {
                            samples.withLockedValue {
                                $0.append(now); $0.append(now - Int64(previous))
                            }
                        }
                        return Int(wallNanos())
                    })
            case BenchTask.hold:
                workers.append(
                    LHTaskWorker(config: config, taskDefName: name, inputs: ["i"]) { (i: Int) async throws -> Int in
                        try await Task.sleep(for: .milliseconds(hold))
                        return Int(wallNanos())
                    })
            default:
                throw ValidationError("unknown bench task '\(name)'")
            }
        }
        for worker in workers { try await worker.registerTaskDef() }
        emit("ready")
        let all = workers
        Thread.detachNewThread {
            var byte: UInt8 = 0
            while read(STDIN_FILENO, &byte, 1) > 0 {}
            let values = samples.withLockedValue { $0 }
            emit("count \(all.reduce(0) { $0 + $1.completedCount })")
            var i = 0
            while i < values.count {
                // Lines under PIPE_BUF (4096 bytes), so that each write(2) is atomic.
                let chunk = values[i..<min(i + 100, values.count)]
                emit("samples " + chunk.map(String.init).joined(separator: " "))
                i += 100
            }
            emit("end")
            Foundation.exit(0)
        }
        try await withThrowingDiscardingTaskGroup { group in
            for worker in workers { group.addTask { try await worker.run() } }
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: .milliseconds(50))
                    emit("count \(all.reduce(0) { $0 + $1.completedCount })")
                }
            }
        }
    }
}

/// One whole line per write(2), so lines from different threads never mix.
func emit(_ line: String) {
    var data = Data(line.utf8)
    data.append(UInt8(ascii: "\n"))
    data.withUnsafeBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            let n = write(STDOUT_FILENO, buffer.baseAddress! + offset, buffer.count - offset)
            if n <= 0 { return }
            offset += n
        }
    }
}

enum BenchTask {
    static let one = "bench-one"
    static let step = "bench-step"
    static let hold = "bench-hold"
}
