import Foundation
import LHEngine
import LHProto
import LHStore
import NIOCore
import PostgresNIO

/// Group commits folded into one `lh_commit` call: the net change per key,
/// in batch order. One statement per table cannot touch a row twice, so a
/// key's sequence of writes collapses to its last (a WfRun's last state, a
/// queue entry's last enqueue or dequeue, a timer's last set or cancel);
/// deletions of whole WfRuns and claims of orphan events run first in the
/// call, so writes after them in batch order stay and writes before them go.
/// Within one batch the order is the SQLite store's: WfRun rows, deletions,
/// dequeues, enqueues, timer cancels, timer sets, orphan claims, orphans.
struct CommitFold {
    struct Key: Hashable {
        var wfRunId: String
        var name: String
    }

    var deleted: Set<String> = []
    var wfRuns: [String: (state: WfRunState, body: Data)] = [:]
    var taskRuns: [Key: Littlehorse_TaskRun] = [:]
    var variables: [Key: (variable: Littlehorse_Variable, spec: String)] = [:]
    /// The last queue operation per key: an enqueue (with its order) or a dequeue.
    var queue: [Key: (task: QueuedTask, order: Int)?] = [:]
    var timers: [Key: Double?] = [:]
    var orphanClaims: Set<String> = []
    var orphans: [Key: (event: Data, order: Int)] = [:]
    private var order = 0

    var isEmpty: Bool {
        deleted.isEmpty && wfRuns.isEmpty && taskRuns.isEmpty && variables.isEmpty && queue.isEmpty && timers.isEmpty
            && orphanClaims.isEmpty && orphans.isEmpty
    }

    /// Every WfRun id this commit writes (their partitions are fenced).
    var touchedIds: Set<String> {
        var ids = deleted.union(wfRuns.keys).union(orphanClaims)
        for k in queue.keys { ids.insert(k.wfRunId) }
        for k in timers.keys { ids.insert(k.wfRunId) }
        for k in orphans.keys { ids.insert(k.wfRunId) }
        return ids
    }

    mutating func add(_ batch: LHWriteBatch) throws {
        for (id, state) in batch.wfRuns {
            let prepared = batch.prepared[id] as? PostgresStore.Prepared
            let body = try prepared?.body ?? StoredForm.body(of: state)
            let changes = prepared?.changes ?? StoredForm.changes(of: id, state, in: batch)
            wfRuns[id] = (state, body)
            for t in changes.taskRuns { taskRuns[Key(wfRunId: id, name: t.id.taskGuid)] = t }
            for v in changes.variables {
                variables[Key(wfRunId: id, name: "\(v.id.threadRunNumber)/\(v.id.name)")] = (
                    v, state.wfRun.wfSpecID.name
                )
            }
        }
        if !batch.deletedWfRuns.isEmpty {
            let gone = batch.deletedWfRuns
            deleted.formUnion(gone)
            for id in gone { wfRuns[id] = nil }
            taskRuns = taskRuns.filter { !gone.contains($0.key.wfRunId) }
            variables = variables.filter { !gone.contains($0.key.wfRunId) }
            queue = queue.filter { !gone.contains($0.key.wfRunId) }
            timers = timers.filter { !gone.contains($0.key.wfRunId) }
            orphans = orphans.filter { !gone.contains($0.key.wfRunId) }
            orphanClaims.subtract(gone)
        }
        for q in batch.dequeued { queue[Key(wfRunId: q.wfRunId, name: q.taskGuid)] = .some(nil) }
        for q in batch.enqueued {
            order += 1
            queue[Key(wfRunId: q.wfRunId, name: q.taskGuid)] = (q, order)
        }
        for t in batch.timersCancelled where t.key.isStoredAsRow {
            timers[Key(wfRunId: t.wfRunId, name: t.key.description)] = .some(nil)
        }
        for t in batch.timersSet where t.key.isStoredAsRow {
            timers[Key(wfRunId: t.wfRunId, name: t.key.description)] = t.due.timeIntervalSince1970
        }
        if !batch.claimedOrphansOf.isEmpty {
            orphanClaims.formUnion(batch.claimedOrphansOf)
            orphans = orphans.filter { !batch.claimedOrphansOf.contains($0.key.wfRunId) }
        }
        for e in batch.orphanEvents {
            order += 1
            orphans[Key(wfRunId: e.id.wfRunID.id, name: e.id.guid)] = (try e.serializedBytes(), order)
        }
    }

    /// The `lh_commit` call.
    func query(member: String, partitions: [(Int32, Int64)], partitionOf: (String) -> Int32) throws -> PostgresQuery {
        var b = PostgresBindings(capacity: 42)
        b.append(member)
        b.append(partitions.map(\.0))
        b.append(partitions.map(\.1))
        b.append(Array(deleted))

        let runs = Array(wfRuns)
        b.append(runs.map(\.key))
        b.append(runs.map { partitionOf($0.key) })
        b.append(runs.map { $0.value.state.wfRun.wfSpecID.name })
        b.append(runs.map { $0.value.state.wfRun.wfSpecID.majorVersion })
        b.append(runs.map { $0.value.state.wfRun.wfSpecID.revision })
        b.append(runs.map { Int32($0.value.state.wfRun.status.rawValue) })
        b.append(runs.map { $0.value.state.wfRun.startTime.date.timeIntervalSince1970 })
        b.append(runs.map { ByteBuffer(bytes: $0.value.body) })

        let tasks = Array(taskRuns)
        b.append(tasks.map(\.key.wfRunId))
        b.append(tasks.map(\.key.name))
        b.append(tasks.map { partitionOf($0.key.wfRunId) })
        b.append(tasks.map { $0.value.taskDefID.name })
        b.append(tasks.map { Int32($0.value.status.rawValue) })
        b.append(tasks.map { $0.value.scheduledAt.date.timeIntervalSince1970 })

        let vars = Array(variables)
        b.append(vars.map(\.key.wfRunId))
        b.append(vars.map { $0.value.variable.id.threadRunNumber })
        b.append(vars.map { $0.value.variable.id.name })
        b.append(vars.map(\.value.spec))
        // '' stands for no searchable value (NULL): every key has a prefix.
        b.append(vars.map { StoredForm.valueKey($0.value.variable.value) ?? "" })

        let dequeues = queue.filter { $0.value == nil }.map(\.key)
        b.append(dequeues.map(\.wfRunId))
        b.append(dequeues.map(\.name))
        let enqueues = queue.compactMap { $0.value }.sorted { $0.order < $1.order }.map(\.task)
        b.append(enqueues.map(\.wfRunId))
        b.append(enqueues.map(\.taskGuid))
        b.append(enqueues.map { partitionOf($0.wfRunId) })
        b.append(enqueues.map(\.taskDef))
        b.append(enqueues.map(\.attempt))

        let cancels = timers.filter { $0.value == nil }.map(\.key)
        b.append(cancels.map(\.wfRunId))
        b.append(cancels.map(\.name))
        let sets = timers.compactMap { key, due in due.map { (key, $0) } }
        b.append(sets.map(\.0.wfRunId))
        b.append(sets.map(\.0.name))
        b.append(sets.map { partitionOf($0.0.wfRunId) })
        b.append(sets.map(\.1))

        b.append(Array(orphanClaims))
        let events = orphans.sorted { $0.value.order < $1.value.order }
        b.append(events.map(\.key.wfRunId))
        b.append(events.map(\.key.name))
        b.append(events.map { partitionOf($0.key.wfRunId) })
        b.append(events.map { ByteBuffer(bytes: $0.value.event) })

        let types = [
            "text", "int[]", "bigint[]", "text[]",
            "text[]", "int[]", "text[]", "int[]", "int[]", "int[]", "float8[]", "bytea[]",
            "text[]", "text[]", "int[]", "text[]", "int[]", "float8[]",
            "text[]", "int[]", "text[]", "text[]", "text[]",
            "text[]", "text[]",
            "text[]", "text[]", "int[]", "text[]", "int[]",
            "text[]", "text[]",
            "text[]", "text[]", "int[]", "float8[]",
            "text[]",
            "text[]", "text[]", "int[]", "bytea[]",
        ]
        precondition(types.count == b.count, "lh_commit: \(types.count) types for \(b.count) parameters")
        let args = types.enumerated().map { "$\($0.offset + 1)::\($0.element)" }.joined(separator: ", ")
        return PostgresQuery(unsafeSQL: "SELECT lh_commit(\(args))", binds: b)
    }
}
