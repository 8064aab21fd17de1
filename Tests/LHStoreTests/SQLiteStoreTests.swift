import Foundation
import LHEngine
import LHProto
import Testing

@testable import LHStore

/// The SQLite store's transactions and what it gives back at start-up.
@Suite struct SQLiteStoreTests {
    @Test func batchesOfOneTransactionApplyInOrder() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "lh-store-\(UUID().uuidString.prefix(8))")
        let store = try SQLiteStore(directory: dir)
        let task = QueuedTask(wfRunId: "x", taskGuid: "g", taskDef: "t", attempt: 0)
        var first = LHWriteBatch()
        first.wfRuns["x"] = WfRunState(
            wfRun: .with {
                $0.id.id = "x"; $0.status = .running
            })
        first.wfRuns["y"] = WfRunState(
            wfRun: .with {
                $0.id.id = "y"; $0.status = .running
            })
        first.enqueued = [task]
        var second = LHWriteBatch()
        second.deletedWfRuns = ["x"]
        second.dequeued = [("x", "g")]
        second.wfRuns["y"] = WfRunState(
            wfRun: .with {
                $0.id.id = "y"; $0.status = .completed
            })
        var third = LHWriteBatch()
        third.enqueued = [QueuedTask(wfRunId: "y", taskGuid: "h", taskDef: "t", attempt: 1)]
        try store.commit([first, second, third])
        #expect(try store.wfRun("x") == nil)
        #expect(try store.wfRun("y")?.wfRun.status == .completed)
        #expect(try store.queuedTasks() == [QueuedTask(wfRunId: "y", taskGuid: "h", taskDef: "t", attempt: 1)])
    }

    @Test func attemptTimeoutsOfRunningTaskRunsComeBackWithoutRowsOfTheirOwn() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "lh-store-\(UUID().uuidString.prefix(8))")
        let store = try SQLiteStore(directory: dir)
        let started = Date(timeIntervalSince1970: 1_790_000_000)
        func state(_ id: String, running: Bool) -> WfRunState {
            var s = WfRunState(
                wfRun: .with {
                    $0.id.id = id; $0.status = .running
                })
            s.taskRuns["0-1-t"] = .with { t in
                t.id.wfRunID.id = id
                t.id.taskGuid = "0-1-t"
                t.taskDefID.name = "t"
                t.timeoutSeconds = 15
                t.status = running ? .taskRunning : .taskSuccess
                t.attempts = [
                    .with { $0.status = .taskFailed },
                    .with {
                        $0.status = running ? .taskRunning : .taskSuccess; $0.startTime = .init(date: started)
                    },
                ]
            }
            return s
        }
        var batch = LHWriteBatch()
        batch.wfRuns["r"] = state("r", running: true)
        batch.wfRuns["done"] = state("done", running: false)
        batch.timersSet = [
            StoredTimer(wfRunId: "r", key: .retryBackoff(taskGuid: "x", attempt: 1), due: started),
            // No row: the timeout comes back from the TaskRun alone.
            StoredTimer(
                wfRunId: "r", key: .attemptTimeout(taskGuid: "0-1-t", attempt: 1), due: started.addingTimeInterval(99)),
        ]
        try store.commit(batch)
        let timers = try SQLiteStore(directory: dir).timers()
        #expect(
            Set(timers) == [
                StoredTimer(wfRunId: "r", key: .retryBackoff(taskGuid: "x", attempt: 1), due: started),
                StoredTimer(
                    wfRunId: "r", key: .attemptTimeout(taskGuid: "0-1-t", attempt: 1),
                    due: started.addingTimeInterval(15)),
            ])
    }
}
