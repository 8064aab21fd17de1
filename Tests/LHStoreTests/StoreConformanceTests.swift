import Foundation
import LHEngine
import LHPostgresStore
import LHProto
import SwiftProtobuf
import Testing

@testable import LHStore

/// The store protocol's behaviour, the same on both backends: the embedded
/// SQLite store and the PostgreSQL store (a database of its own per test).
@Suite struct StoreConformanceTests {
    enum Backend: String, CaseIterable, CustomStringConvertible {
        case sqlite, postgres
        var description: String { rawValue }
    }

    /// A store of one backend and a way to open it again (as after a restart).
    final class Opened {
        let reopen: () async throws -> any LHStorage
        private(set) var store: any LHStorage
        init(_ open: @escaping () async throws -> any LHStorage) async throws {
            reopen = open
            store = try await open()
        }
        func restart() async throws -> any LHStorage {
            (store as? PostgresStore)?.close()
            store = try await reopen()
            return store
        }
        deinit { (store as? PostgresStore)?.close() }
    }

    /// nil (after printing SKIPPED) when the backend is not available.
    static func open(_ backend: Backend, _ test: String = #function) async throws -> Opened? {
        switch backend {
        case .sqlite:
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
                "lh-store-\(UUID().uuidString.prefix(8))")
            return try await Opened { try SQLiteStore(directory: dir) }
        case .postgres:
            if PostgresFixture.skipped(test) { return nil }
            let url = try await PostgresFixture.freshDatabase()
            return try await Opened { try await PostgresFixture.open(url) }
        }
    }

    @Test(arguments: Backend.allCases) func batchesOfOneTransactionApplyInOrder(_ backend: Backend) async throws {
        guard let opened = try await Self.open(backend) else { return }
        let store = opened.store
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

    /// Queue entries, timers and orphan events written and unwritten across
    /// the batches of one commit end as the last batch left them, the queue
    /// in the order of the enqueues; a WfRun deleted and made again in one
    /// commit keeps only what came after its deletion.
    @Test(arguments: Backend.allCases) func keysWrittenSeveralTimesInOneCommitEndAsTheLastBatchLeftThem(
        _ backend: Backend
    ) async throws {
        guard let opened = try await Self.open(backend) else { return }
        let store = opened.store
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        func run(_ id: String, _ status: Littlehorse_LHStatus) -> WfRunState {
            WfRunState(
                wfRun: .with {
                    $0.id.id = id; $0.status = status
                })
        }
        func event(_ wf: String, _ guid: String) -> Littlehorse_ExternalEvent {
            .with {
                $0.id.wfRunID.id = wf; $0.id.guid = guid; $0.id.externalEventDefID.name = "go"
            }
        }
        var a = LHWriteBatch()
        a.wfRuns["q"] = run("q", .running)
        a.enqueued = [
            QueuedTask(wfRunId: "q", taskGuid: "a", taskDef: "t", attempt: 0),
            QueuedTask(wfRunId: "q", taskGuid: "b", taskDef: "t", attempt: 0),
        ]
        a.timersSet = [
            StoredTimer(wfRunId: "q", key: .sleep(NodeRunKey(thread: 0, position: 1)), due: t0),
            StoredTimer(wfRunId: "q", key: .sleep(NodeRunKey(thread: 0, position: 2)), due: t0),
        ]
        a.orphanEvents = [event("later", "e1"), event("later", "e2"), event("never", "e3")]
        a.wfRuns["gone"] = run("gone", .running)
        a.enqueued.append(QueuedTask(wfRunId: "gone", taskGuid: "old", taskDef: "t", attempt: 0))
        var b = LHWriteBatch()
        b.dequeued = [("q", "a")]
        b.enqueued = [QueuedTask(wfRunId: "q", taskGuid: "a", taskDef: "t", attempt: 1)]
        b.timersCancelled = [(wfRunId: "q", key: .sleep(NodeRunKey(thread: 0, position: 1)))]
        b.timersSet = [
            StoredTimer(wfRunId: "q", key: .sleep(NodeRunKey(thread: 0, position: 2)), due: t0.addingTimeInterval(5))
        ]
        b.claimedOrphansOf = ["later"]
        b.deletedWfRuns = ["gone"]
        var c = LHWriteBatch()
        c.orphanEvents = [event("later", "e4")]
        c.wfRuns["gone"] = run("gone", .completed)
        c.enqueued = [QueuedTask(wfRunId: "gone", taskGuid: "new", taskDef: "t", attempt: 0)]
        try store.commit([a, b, c])

        for restart in [false, true] {
            let store = restart ? try await opened.restart() : store
            #expect(
                try store.queuedTasks() == [
                    QueuedTask(wfRunId: "q", taskGuid: "b", taskDef: "t", attempt: 0),
                    QueuedTask(wfRunId: "q", taskGuid: "a", taskDef: "t", attempt: 1),
                    QueuedTask(wfRunId: "gone", taskGuid: "new", taskDef: "t", attempt: 0),
                ])
            #expect(
                Set(try store.timers()) == [
                    StoredTimer(
                        wfRunId: "q", key: .sleep(NodeRunKey(thread: 0, position: 2)), due: t0.addingTimeInterval(5))
                ])
            #expect(try store.orphanEvents(of: "later").map(\.id.guid) == ["e4"])
            #expect(try store.orphanEvents(of: "never").map(\.id.guid) == ["e3"])
            #expect(try store.wfRun("gone")?.wfRun.status == .completed)
        }
    }

    @Test(arguments: Backend.allCases) func attemptTimeoutsOfRunningTaskRunsComeBackWithoutRowsOfTheirOwn(
        _ backend: Backend
    ) async throws {
        guard let opened = try await Self.open(backend) else { return }
        let store = opened.store
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
        let timers = try await opened.restart().timers()
        #expect(
            Set(timers) == [
                StoredTimer(wfRunId: "r", key: .retryBackoff(taskGuid: "x", attempt: 1), due: started),
                StoredTimer(
                    wfRunId: "r", key: .attemptTimeout(taskGuid: "0-1-t", attempt: 1),
                    due: started.addingTimeInterval(15)),
            ])
    }

    /// The store updates a WfRun's rows in place and skips the rows a
    /// command did not change: the search indexes must still follow every change.
    @Test(arguments: Backend.allCases) func searchesFollowEveryChangeOfARewrittenWfRun(_ backend: Backend) async throws
    {
        guard let opened = try await Self.open(backend) else { return }
        let store = opened.store
        let t = StoreIndexTests()
        let state = StoreIndexTests.state

        try t.commit(store, state("w1", .running, .taskScheduled, 1))
        #expect(try t.taskRuns(store, .taskScheduled) == ["g1"])
        #expect(try t.taskRuns(store, .taskSuccess) == ["g0"])
        #expect(try t.wfRuns(store, .running) == ["w1"])
        #expect(try t.variables(store, 1) == ["w1"])

        // The same WfRun again: TaskRun g1 and the variable change, g0 does not.
        try t.commit(store, state("w1", .running, .taskRunning, 2))
        #expect(try t.taskRuns(store, .taskScheduled) == [])
        #expect(try t.taskRuns(store, .taskRunning) == ["g1"])
        #expect(try t.taskRuns(store, .taskSuccess) == ["g0"])
        #expect(try t.variables(store, 1) == [])
        #expect(try t.variables(store, 2) == ["w1"])
        #expect(try t.wfRuns(store, .running) == ["w1"])
        #expect(try store.wfRun("w1")?.variable("counter")?.int == 2)

        // Unchanged rows stay; the WfRun's status and body follow.
        try t.commit(store, state("w1", .completed, .taskRunning, 2))
        #expect(try t.wfRuns(store, .running) == [])
        #expect(try t.wfRuns(store, .completed) == ["w1"])
        #expect(try t.taskRuns(store, .taskRunning) == ["g1"])
        #expect(try t.variables(store, 2) == ["w1"])
        #expect(try store.wfRun("w1")?.wfRun.status == .completed)

        // A variable that loses its value leaves the value index.
        try t.commit(store, state("w1", .completed, .taskSuccess, nil))
        #expect(try t.variables(store, 2) == [])
        #expect(try t.taskRuns(store, .taskSuccess) == ["g0", "g1"])
        #expect(try store.wfRunCounts() == [.completed: 1])
        #expect(try store.recentWfRuns(wfSpecName: "indexed", status: .completed, since: nil, limit: 5) == ["w1"])

        // All of it as read back after a restart.
        let reopened = try await opened.restart()
        #expect(try t.taskRuns(reopened, .taskSuccess) == ["g0", "g1"])
        #expect(try t.wfRuns(reopened, .completed) == ["w1"])
        // Ids are found after a restart (the id filter is rebuilt from the table), unknown ids are not.
        #expect(try reopened.wfRun("w1")?.wfRun.status == .completed)
        #expect(try reopened.wfRun("w2") == nil)
        try t.commit(reopened, state("w2", .running, .taskScheduled, 7))
        #expect(try reopened.wfRun("w2")?.variable("counter")?.int == 7)
    }

    @Test(arguments: Backend.allCases) func metadataComesBackAfterARestart(_ backend: Backend) async throws {
        guard let opened = try await Self.open(backend) else { return }
        let store = opened.store
        try store.put(taskDef: .with { $0.id.name = "greet" })
        try store.put(externalEventDef: .with { $0.id.name = "go" })
        for revision in Int32(0)..<3 {
            try store.put(
                wfSpec: .with {
                    $0.id.name = "spec"; $0.id.revision = revision
                })
        }
        let reopened = try await opened.restart()
        #expect(try reopened.taskDefs().map(\.id.name) == ["greet"])
        #expect(try reopened.externalEventDefs().map(\.id.name) == ["go"])
        #expect(try reopened.wfSpecs().map(\.id.revision).sorted() == [0, 1, 2])
    }
}
