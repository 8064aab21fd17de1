import Foundation
import GRDB
import LHEngine
import LHProto
import SwiftProtobuf
import Testing

@testable import LHStore

/// The SQLite store updates a WfRun's rows in place and skips the rows a
/// command did not change (not even a statement for them when it knows what
/// is stored): the search indexes must still follow every change.
@Suite struct StoreIndexTests {
    static func state(_ id: String, _ wfStatus: Littlehorse_LHStatus, _ task: Littlehorse_TaskStatus, _ counter: Int64?)
        -> WfRunState
    {
        var state = WfRunState(
            wfRun: .with {
                $0.id.id = id
                $0.wfSpecID.name = "indexed"
                $0.status = wfStatus
                $0.startTime = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: 1_000))
            })
        state.taskRuns["g1"] = .with {
            $0.id.wfRunID.id = id
            $0.id.taskGuid = "g1"
            $0.taskDefID.name = "greet"
            $0.status = task
            $0.scheduledAt = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: 1_001))
        }
        // A second TaskRun that never changes.
        state.taskRuns["g0"] = .with {
            $0.id.wfRunID.id = id
            $0.id.taskGuid = "g0"
            $0.taskDefID.name = "greet"
            $0.status = .taskSuccess
            $0.scheduledAt = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: 1_000))
        }
        state.variables[VariableKey(thread: 0, name: "counter")] = .with {
            $0.id.wfRunID.id = id
            $0.id.name = "counter"
            if let counter { $0.value.int = counter }
        }
        return state
    }

    func taskRuns(_ store: any LHStorage, _ status: Littlehorse_TaskStatus) throws -> [String] {
        try store.searchTaskRuns(
            .with {
                $0.taskDefName = "greet"; $0.status = status
            }
        ).results.map(\.taskGuid).sorted()
    }

    func wfRuns(_ store: any LHStorage, _ status: Littlehorse_LHStatus) throws -> [String] {
        try store.searchWfRuns(
            .with {
                $0.wfSpecName = "indexed"; $0.status = status
            }
        ).results
    }

    func variables(_ store: any LHStorage, _ value: Int64) throws -> [String] {
        try store.searchVariables(
            .with {
                $0.varName = "counter"; $0.value.int = value; $0.wfSpecName = "indexed"
            }
        ).results.map(\.wfRunID.id)
    }

    /// Commits `state` as the processor does: with the state it was made
    /// from as what is stored (`LHWriteBatch.stored`), so that rows which
    /// did not change are not written.
    func commit(_ store: any LHStorage, _ state: WfRunState) throws {
        var batch = LHWriteBatch()
        batch.wfRuns[state.id] = state
        if let stored = try store.wfRun(state.id) { batch.stored[state.id] = stored }
        try store.prepareWrites(of: &batch)
        try store.commit(batch)
    }

    /// WAL frames (pages) the last transactions appended since the WAL was emptied.
    func walPages(_ store: SQLiteStore) throws -> Int {
        let size = (try FileManager.default.attributesOfItem(atPath: store.path + "-wal")[.size] as? Int) ?? 0
        let pageSize = try store.pool.read { db in try Int.fetchOne(db, sql: "PRAGMA page_size") } ?? 4096
        return size <= 32 ? 0 : (size - 32) / (pageSize + 24)
    }

    /// A commit that changes only a WfRun's body writes one page: the
    /// status index (whose key has the status) is not rewritten when the
    /// status stays what is stored.
    @Test func aCommitThatKeepsTheStatusLeavesTheStatusIndexAlone() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lh-idx-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try SQLiteStore(directory: dir)
        for i in 0..<50 { try commit(store, Self.state("w\(i)", .running, .taskScheduled, 1)) }
        try store.pool.writeWithoutTransaction { db in _ = try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        #expect(try walPages(store) == 0)

        var changed = Self.state("w7", .running, .taskScheduled, 1)
        changed.wfRun.endTime = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: 2_000))
        try commit(store, changed)
        #expect(try walPages(store) == 1, "pages written for a body-only change")
        #expect(try store.wfRun("w7")?.wfRun.hasEndTime == true)
        #expect(try wfRuns(store, .running).count == 50)

        // A status that changes still moves the WfRun in the index.
        changed.wfRun.status = .completed
        try commit(store, changed)
        #expect(try wfRuns(store, .running).count == 49)
        #expect(try wfRuns(store, .completed) == ["w7"])
    }

    /// A data directory written before `v3-small-tables-without-rowid` (the
    /// v1 tables, filled by hand as that build wrote them) keeps every row
    /// when a build with it starts, and the rebuilt tables are searched and
    /// written as before.
    @Test func theWithoutRowidMigrationKeepsEveryRowOfAnOlderDataDirectory() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lh-mig-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        do {
            let old = try DatabasePool(path: dir.appendingPathComponent("lh.sqlite").path)
            try SQLiteStore.migrator().migrate(old, upTo: "v2-attempt-timeouts-derived")
            let state = Self.state("w1", .running, .taskScheduled, 5)
            let body: Data = try SQLiteStore.encode(state).serializedBytes()
            try old.write { db in
                try db.execute(
                    sql: "INSERT INTO wf_runs VALUES ('w1', 'indexed', 0, 0, ?, 1000, ?)",
                    arguments: [Littlehorse_LHStatus.running.rawValue, body])
                try db.execute(
                    sql: "INSERT INTO task_runs VALUES ('w1', 'g1', 'greet', ?, 1001), ('w1', 'g0', 'greet', ?, 1000)",
                    arguments: [
                        Littlehorse_TaskStatus.taskScheduled.rawValue, Littlehorse_TaskStatus.taskSuccess.rawValue,
                    ])
                try db.execute(sql: "INSERT INTO variables VALUES ('w1', 0, 'counter', 'indexed', 'i:5')")
                try db.execute(sql: "INSERT INTO task_queue VALUES ('w1', 'g1', 'greet', 0, 1)")
                try db.execute(sql: "INSERT INTO timers VALUES ('w1', 'sleep:0:3', 5000)")
            }
            try old.close()
        }

        let store = try SQLiteStore(directory: dir)
        let tables = try store.pool.read { db in
            try Row.fetchAll(db, sql: "SELECT name, sql FROM sqlite_master WHERE type = 'table'")
                .reduce(into: [String: String]()) { $0[$1["name"]] = $1["sql"] }
        }
        for name in ["task_runs", "variables", "task_queue", "timers"] {
            #expect(tables[name]?.contains("WITHOUT ROWID") == true, "\(name): \(tables[name] ?? "missing")")
        }
        #expect(!tables.keys.contains { $0.hasSuffix("_v3") })
        #expect(try taskRuns(store, .taskScheduled) == ["g1"])
        #expect(try taskRuns(store, .taskSuccess) == ["g0"])
        #expect(try variables(store, 5) == ["w1"])
        #expect(try wfRuns(store, .running) == ["w1"])
        #expect(try store.queuedTasks() == [QueuedTask(wfRunId: "w1", taskGuid: "g1", taskDef: "greet", attempt: 0)])
        #expect(
            try store.timers().contains(
                StoredTimer(
                    wfRunId: "w1", key: .sleep(NodeRunKey(thread: 0, position: 3)),
                    due: Date(timeIntervalSince1970: 5000))))

        // The rebuilt tables take the same writes as before.
        try commit(store, Self.state("w1", .running, .taskRunning, 6))
        #expect(try taskRuns(store, .taskScheduled) == [])
        #expect(try taskRuns(store, .taskRunning) == ["g1"])
        #expect(try variables(store, 5) == [])
        #expect(try variables(store, 6) == ["w1"])
    }

    @Test func theIdFilterNeverForgetsAnIdAndRarelyClaimsOne() {
        var filter = IdFilter(bits: 1 << 20)
        for i in 0..<50_000 { filter.insert("wf-\(i)") }
        #expect((0..<50_000).allSatisfy { filter.mayContain("wf-\($0)") })
        let falsePositives = (0..<50_000).filter { filter.mayContain("other-\($0)") }.count
        // 50,000 ids in 2^20 bits with 4 probes: about 0.5 % expected.
        #expect(falsePositives < 1_000, "false positives: \(falsePositives) of 50000")
    }
}
