import Foundation
import LHEngine
import LHProto

/// What every backend stores of a WfRun: its whole state as one body
/// (`lhstore.StoredWfRun`), plus index rows for its TaskRuns and variables.
/// Shared by the SQLite and PostgreSQL stores so that both store and search
/// the same things.
public enum StoredForm {
    /// The body of a WfRun's row.
    public static func body(of state: WfRunState) throws -> Data {
        try LHFastEncoding.serializedData(SQLiteStore.encode(state))
    }

    /// The state a body holds.
    public static func state(fromBody body: Data) throws -> WfRunState {
        SQLiteStore.decode(try Lhstore_StoredWfRun(serializedBytes: body))
    }

    /// A searchable key for a variable's value (nil for values that are not
    /// searched: JSON and bytes).
    public static func valueKey(_ value: Littlehorse_VariableValue) -> String? { SQLiteStore.valueKey(value) }

    /// The rows of one WfRun that a commit writes: those that changed since
    /// what is stored (`batch.stored`), all of them for a WfRun not stored.
    public struct Changes: Sendable {
        public var statusChanged = true
        public var taskRuns: [Littlehorse_TaskRun] = []
        public var variables: [Littlehorse_Variable] = []
    }

    public static func changes(of id: String, _ state: WfRunState, in batch: LHWriteBatch) -> Changes {
        var out = Changes()
        let stored = batch.deletedWfRuns.contains(id) ? nil : batch.stored[id]
        if let stored, stored.wfRun.status == state.wfRun.status { out.statusChanged = false }
        for t in state.taskRuns.values {
            if let old = stored?.taskRuns[t.id.taskGuid], old.status == t.status, old.scheduledAt == t.scheduledAt {
                continue
            }
            out.taskRuns.append(t)
        }
        for (key, v) in state.variables {
            if let old = stored?.variables[key], old.value == v.value { continue }
            out.variables.append(v)
        }
        return out
    }

    /// The timeouts of the TaskRun attempts that are TASK_RUNNING (they have
    /// no rows: they follow from each attempt's start and the TaskRun's
    /// timeout), from the (WfRun id, TaskRun guid) pairs a store's index
    /// lists as running and a reader of WfRuns.
    public static func attemptTimeouts(
        running: [(wfRunId: String, guid: String)], wfRun: (String) throws -> WfRunState?
    ) throws -> [StoredTimer] {
        var states: [String: WfRunState] = [:]
        var timers: [StoredTimer] = []
        for (wfRunId, guid) in running {
            if states[wfRunId] == nil { states[wfRunId] = try wfRun(wfRunId) }
            guard let taskRun = states[wfRunId]?.taskRuns[guid], taskRun.status == .taskRunning,
                let attempt = taskRun.attempts.last, attempt.status == .taskRunning
            else { continue }
            let due = attempt.startTime.date.addingTimeInterval(Double(taskRun.timeoutSeconds))
            timers.append(
                StoredTimer(
                    wfRunId: wfRunId, key: .attemptTimeout(taskGuid: guid, attempt: Int32(taskRun.attempts.count - 1)),
                    due: due))
        }
        return timers
    }

    /// Search bookmarks are the offset of the next page, as text.
    public static func offset(_ bookmark: Data?) -> Int {
        bookmark.flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 0
    }

    /// A page of `limit` results out of `rows` (fetched with one more than
    /// the limit to know whether another page follows).
    public static func page<T>(_ rows: [T], limit: Int, offset: Int) -> LHPage<T> {
        if rows.count > limit {
            return LHPage(results: Array(rows.prefix(limit)), bookmark: Data("\(offset + limit)".utf8))
        }
        return LHPage(results: rows, bookmark: nil)
    }
}
