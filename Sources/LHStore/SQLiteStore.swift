import Foundation
import GRDB
import LHEngine
import LHProto
import LHSQLitePageCache
import SwiftProtobuf
import Synchronization

/// The embedded store: SQLite through GRDB in `<data-dir>/lh.sqlite`, WAL
/// mode, `synchronous=FULL` unless asked otherwise.
public final class SQLiteStore: LHStorage, Sendable {
    public enum Sync: String, Sendable {
        /// Survives power loss.
        case full = "FULL"
        /// Survives a process crash; may lose the last commits on power loss.
        case normal = "NORMAL"
    }

    /// The format this build writes; a data directory of a newer format is
    /// refused rather than touched.
    public static let formatVersion = 1

    let pool: DatabasePool
    public let path: String
    /// WfRun ids that have orphan events: RunWf looks them up only for these.
    private let orphanIds = Mutex<Set<String>>([])
    /// Every stored WfRun id (and some more): a lookup of an id not in it reads nothing.
    private let wfRunIds = Mutex(IdFilter())

    /// SQLite's page cache with LHSQLitePageCache's wrapper, which spares a
    /// commit the walk of the writer's whole page cache that B-tree
    /// balancing otherwise causes on most commits (page_cache.c). Installed
    /// before the process's first connection; false if SQLite was in use
    /// before (the default page cache then serves, unchanged).
    public static let pageCacheWrapped: Bool = lh_page_cache_install() == 0

    public init(directory: URL, sync: Sync = .full) throws {
        _ = Self.pageCacheWrapped
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("lh.sqlite").path
        var config = Configuration()
        config.busyMode = .timeout(10)
        do {
            pool = try DatabasePool(path: path, configuration: config)
            try pool.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA synchronous = \(sync.rawValue)")
                // The writer's page cache (SQLite's default is 2 MB): commits touch
                // index pages all over growing tables; 32 MB keeps them in memory.
                try db.execute(sql: "PRAGMA cache_size = -32768")
            }
        } catch {
            throw StoreError(.unreadable, "cannot open the data directory's database \(path): \(error)")
        }
        try Self.migrate(pool, path: path)
        let ids = try pool.read { db in try String.fetchAll(db, sql: "SELECT DISTINCT wf_run_id FROM orphan_events") }
        orphanIds.withLock { $0 = Set(ids) }
        try pool.read { db in
            let rows = try String.fetchCursor(db, sql: "SELECT id FROM wf_runs")
            try wfRunIds.withLock { filter in
                while let id = try rows.next() { filter.insert(id) }
            }
        }
    }

    static func migrator() -> DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1-initial") { db in
            try db.execute(
                sql: """
                    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                    CREATE TABLE task_defs (name TEXT PRIMARY KEY, body BLOB NOT NULL);
                    CREATE TABLE external_event_defs (name TEXT PRIMARY KEY, body BLOB NOT NULL);
                    CREATE TABLE wf_specs (name TEXT NOT NULL, major INTEGER NOT NULL, revision INTEGER NOT NULL, body BLOB NOT NULL,
                        PRIMARY KEY (name, major, revision));
                    CREATE TABLE wf_runs (id TEXT PRIMARY KEY, wf_spec_name TEXT NOT NULL, major INTEGER NOT NULL, revision INTEGER NOT NULL,
                        status INTEGER NOT NULL, start_time REAL NOT NULL, body BLOB NOT NULL);
                    CREATE INDEX wf_runs_by_spec ON wf_runs (wf_spec_name, status, start_time, id);
                    CREATE TABLE task_runs (wf_run_id TEXT NOT NULL, guid TEXT NOT NULL, task_def TEXT NOT NULL, status INTEGER NOT NULL,
                        scheduled_at REAL NOT NULL, PRIMARY KEY (wf_run_id, guid));
                    CREATE INDEX task_runs_by_def ON task_runs (task_def, status, scheduled_at);
                    CREATE TABLE variables (wf_run_id TEXT NOT NULL, thread INTEGER NOT NULL, name TEXT NOT NULL, wf_spec_name TEXT NOT NULL,
                        value_key TEXT, PRIMARY KEY (wf_run_id, thread, name));
                    CREATE INDEX variables_by_value ON variables (name, value_key, wf_spec_name);
                    CREATE TABLE orphan_events (wf_run_id TEXT NOT NULL, guid TEXT NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL,
                        PRIMARY KEY (wf_run_id, guid));
                    CREATE TABLE task_queue (wf_run_id TEXT NOT NULL, guid TEXT NOT NULL, task_def TEXT NOT NULL, attempt INTEGER NOT NULL,
                        seq INTEGER NOT NULL, PRIMARY KEY (wf_run_id, guid));
                    CREATE INDEX task_queue_by_seq ON task_queue (seq);
                    CREATE TABLE timers (wf_run_id TEXT NOT NULL, key TEXT NOT NULL, due REAL NOT NULL, PRIMARY KEY (wf_run_id, key));
                    CREATE INDEX timers_by_due ON timers (due);
                    """)
            try db.execute(sql: "INSERT INTO meta (key, value) VALUES ('format', ?)", arguments: ["\(formatVersion)"])
        }
        // Attempt timeouts are derived from the TaskRuns (`timers()`), no
        // longer rows; a build before this would not find them, so it is
        // refused this directory (unknown migration) rather than lose them.
        m.registerMigration("v2-attempt-timeouts-derived") { db in
            try db.execute(sql: "DELETE FROM timers WHERE key LIKE 'attempt-timeout:%'")
        }
        // The small-row tables keyed by (WfRun, ...) become `WITHOUT ROWID`:
        // a row is then one entry of one B-tree (its primary key's) instead
        // of a table row plus an entry of the key's automatic index, so a
        // TaskRun's insert or status change writes one B-tree fewer. The
        // rows are copied once, at the first start of a build with this.
        m.registerMigration("v3-small-tables-without-rowid") { db in
            for table in Self.withoutRowidTables {
                try db.execute(
                    sql: """
                        CREATE TABLE \(table.name)_v3 (\(table.columns)) WITHOUT ROWID;
                        INSERT INTO \(table.name)_v3 SELECT * FROM \(table.name);
                        DROP TABLE \(table.name);
                        ALTER TABLE \(table.name)_v3 RENAME TO \(table.name);
                        \(table.indexes)
                        """)
            }
        }
        return m
    }

    /// The tables `v3-small-tables-without-rowid` rebuilds: columns (in the
    /// order of v1, which `SELECT *` copies) and secondary indexes.
    static let withoutRowidTables: [(name: String, columns: String, indexes: String)] = [
        (
            "task_runs",
            "wf_run_id TEXT NOT NULL, guid TEXT NOT NULL, task_def TEXT NOT NULL, status INTEGER NOT NULL, scheduled_at REAL NOT NULL, PRIMARY KEY (wf_run_id, guid)",
            "CREATE INDEX task_runs_by_def ON task_runs (task_def, status, scheduled_at);"
        ),
        (
            "variables",
            "wf_run_id TEXT NOT NULL, thread INTEGER NOT NULL, name TEXT NOT NULL, wf_spec_name TEXT NOT NULL, value_key TEXT, PRIMARY KEY (wf_run_id, thread, name)",
            "CREATE INDEX variables_by_value ON variables (name, value_key, wf_spec_name);"
        ),
        (
            "task_queue",
            "wf_run_id TEXT NOT NULL, guid TEXT NOT NULL, task_def TEXT NOT NULL, attempt INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (wf_run_id, guid)",
            "CREATE INDEX task_queue_by_seq ON task_queue (seq);"
        ),
        (
            "timers",
            "wf_run_id TEXT NOT NULL, key TEXT NOT NULL, due REAL NOT NULL, PRIMARY KEY (wf_run_id, key)",
            "CREATE INDEX timers_by_due ON timers (due);"
        ),
    ]

    static func migrate(_ pool: DatabasePool, path: String) throws {
        let migrator = migrator()
        do {
            let superseded = try pool.read { db -> Bool in
                let applied = try migrator.appliedIdentifiers(db)
                return !applied.isSubset(of: Set(migrator.migrations))
            }
            if superseded {
                throw StoreError(
                    .newerFormat,
                    "the database \(path) was written by a newer lh-server (unknown migrations); refusing to start so as not to damage it"
                )
            }
            try migrator.migrate(pool)
            let format = try pool.read { db in
                try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'format'")
            }
            guard format == "\(formatVersion)" else {
                throw StoreError(
                    .newerFormat,
                    "the database \(path) has format \(format ?? "none"), this lh-server reads format \(formatVersion); refusing to start"
                )
            }
            // A quick integrity check so that a damaged file is refused, not used.
            let check = try pool.read { db in try String.fetchOne(db, sql: "PRAGMA quick_check") }
            guard check == "ok" else {
                throw StoreError(
                    .damaged, "the database \(path) is damaged (quick_check: \(check ?? "?")); refusing to start")
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(
                .unreadable,
                "the database \(path) cannot be read (\(error)); refusing to start rather than overwrite it")
        }
    }

    // MARK: - Metadata

    public func taskDefs() throws -> [Littlehorse_TaskDef] {
        try pool.read { db in
            try Data.fetchAll(db, sql: "SELECT body FROM task_defs").map {
                try Littlehorse_TaskDef(serializedBytes: $0)
            }
        }
    }

    public func externalEventDefs() throws -> [Littlehorse_ExternalEventDef] {
        try pool.read { db in
            try Data.fetchAll(db, sql: "SELECT body FROM external_event_defs").map {
                try Littlehorse_ExternalEventDef(serializedBytes: $0)
            }
        }
    }

    public func wfSpecs() throws -> [Littlehorse_WfSpec] {
        try pool.read { db in
            try Data.fetchAll(db, sql: "SELECT body FROM wf_specs").map { try Littlehorse_WfSpec(serializedBytes: $0) }
        }
    }

    public func put(taskDef: Littlehorse_TaskDef) throws {
        let body: Data = try taskDef.serializedBytes()
        try pool.write { db in
            try db.execute(
                sql: "INSERT OR REPLACE INTO task_defs (name, body) VALUES (?, ?)", arguments: [taskDef.id.name, body])
        }
    }

    public func put(externalEventDef: Littlehorse_ExternalEventDef) throws {
        let body: Data = try externalEventDef.serializedBytes()
        try pool.write { db in
            try db.execute(
                sql: "INSERT OR REPLACE INTO external_event_defs (name, body) VALUES (?, ?)",
                arguments: [externalEventDef.id.name, body])
        }
    }

    public func put(wfSpec: Littlehorse_WfSpec) throws {
        let body: Data = try wfSpec.serializedBytes()
        try pool.write { db in
            try db.execute(
                sql: "INSERT OR REPLACE INTO wf_specs (name, major, revision, body) VALUES (?, ?, ?, ?)",
                arguments: [wfSpec.id.name, wfSpec.id.majorVersion, wfSpec.id.revision, body])
        }
    }

    // MARK: - WfRuns

    public func wfRun(_ id: String) throws -> WfRunState? {
        guard wfRunIds.withLock({ $0.mayContain(id) }) else { return nil }
        guard
            let body = try pool.read({ db in
                try Data.fetchOne(db.cachedStatement(sql: "SELECT body FROM wf_runs WHERE id = ?"), arguments: [id])
            })
        else { return nil }
        return Self.decode(try Lhstore_StoredWfRun(serializedBytes: body))
    }

    public func orphanEvents(of wfRunId: String) throws -> [Littlehorse_ExternalEvent] {
        guard orphanIds.withLock({ $0.contains(wfRunId) }) else { return [] }
        return try pool.read { db in
            try Data.fetchAll(
                db, sql: "SELECT body FROM orphan_events WHERE wf_run_id = ? ORDER BY seq", arguments: [wfRunId]
            )
            .map { try Littlehorse_ExternalEvent(serializedBytes: $0) }
        }
    }

    static func encode(_ state: WfRunState) -> Lhstore_StoredWfRun {
        var s = Lhstore_StoredWfRun()
        s.wfRun = state.wfRun
        s.nodeRuns = state.nodeRuns.sorted { $0.key < $1.key }.map(\.value)
        s.variables = state.variables.sorted { $0.key < $1.key }.map(\.value)
        s.taskRuns = state.taskRuns.sorted { $0.key < $1.key }.map(\.value)
        s.externalEvents = state.externalEvents
        return s
    }

    static func decode(_ s: Lhstore_StoredWfRun) -> WfRunState {
        var state = WfRunState(wfRun: s.wfRun)
        for n in s.nodeRuns { state.nodeRuns[NodeRunKey(thread: n.id.threadRunNumber, position: n.id.position)] = n }
        for v in s.variables { state.variables[VariableKey(thread: v.id.threadRunNumber, name: v.id.name)] = v }
        for t in s.taskRuns { state.taskRuns[t.id.taskGuid] = t }
        state.externalEvents = s.externalEvents
        return state
    }

    /// A searchable key for a variable's value (NULL for values that are not
    /// searched: JSON and bytes).
    static func valueKey(_ v: Littlehorse_VariableValue) -> String? {
        switch v.value {
        case .str(let s): "s:\(s)"
        case .int(let i): "i:\(i)"
        case .double(let d): "d:\(d)"
        case .bool(let b): "b:\(b)"
        case .wfRunID(let id): "w:\(id.id)"
        default: nil
        }
    }

    /// What one WfRun's commit writes, made ahead in a lane: its stored
    /// form and the arguments of its row statements (building GRDB's
    /// arguments on the commit thread was ~5 % of that serial thread).
    struct PreparedWfRun: Sendable {
        var wfRun: StatementArguments
        /// Whether the row's status differs from the stored one (or there is
        /// no stored row): only then is `wf_runs_by_spec` touched. An upsert
        /// that sets the status to the value it has still rewrites that
        /// index's page (two WAL pages per WfRun instead of one).
        var statusChanged = true
        /// TaskRun and variable rows that changed since `stored`.
        var taskRuns: [StatementArguments] = []
        var variables: [StatementArguments] = []
    }

    public func prepareWrites(of batch: inout LHWriteBatch) throws {
        for (id, state) in batch.wfRuns where batch.prepared[id] == nil {
            batch.prepared[id] = try Self.prepare(id, state, in: batch)
        }
    }

    static func prepare(_ id: String, _ state: WfRunState, in batch: LHWriteBatch) throws -> PreparedWfRun {
        let w = state.wfRun
        let body = try StoredForm.body(of: state)
        var out = PreparedWfRun(wfRun: [
            id, w.wfSpecID.name, w.wfSpecID.majorVersion, w.wfSpecID.revision, w.status.rawValue,
            w.startTime.date.timeIntervalSince1970, body,
        ])
        // Rows of a WfRun that is stored are written only where they changed.
        let changes = StoredForm.changes(of: id, state, in: batch)
        out.statusChanged = changes.statusChanged
        out.taskRuns = changes.taskRuns.map { t in
            [id, t.id.taskGuid, t.taskDefID.name, t.status.rawValue, t.scheduledAt.date.timeIntervalSince1970]
        }
        out.variables = changes.variables.map { v in
            [id, v.id.threadRunNumber, v.id.name, w.wfSpecID.name, Self.valueKey(v.value)]
        }
        return out
    }

    public func commit(_ batches: [LHWriteBatch]) throws {
        let batches = batches.filter { !$0.isEmpty }
        guard !batches.isEmpty else { return }
        let prepared = try batches.map { batch in
            (
                batch,
                try batch.wfRuns.map { id, state -> PreparedWfRun in
                    try batch.prepared[id] as? PreparedWfRun ?? Self.prepare(id, state, in: batch)
                },
                try batch.orphanEvents.map { e -> (Littlehorse_ExternalEvent, Data) in (e, try e.serializedBytes()) }
            )
        }
        // Before the transaction: once it is durable, a lookup must find these.
        wfRunIds.withLock { filter in
            for batch in batches { for id in batch.wfRuns.keys { filter.insert(id) } }
        }
        // One transaction (one fsync) for all of them, each applied in order.
        try pool.write { db in
            for (batch, encoded, orphanBodies) in prepared {
                try Self.apply(batch, encoded: encoded, orphanBodies: orphanBodies, in: db)
            }
        }
        for batch in batches
        where !batch.orphanEvents.isEmpty || !batch.claimedOrphansOf.isEmpty || !batch.deletedWfRuns.isEmpty {
            orphanIds.withLock { ids in
                ids.subtract(batch.claimedOrphansOf)
                ids.subtract(batch.deletedWfRuns)
                for e in batch.orphanEvents { ids.insert(e.id.wfRunID.id) }
            }
        }
    }

    /// The WfRun row's upserts: both insert a WfRun that has no row; the
    /// second leaves a status that is not new alone, so that its
    /// `wf_runs_by_spec` entry (and page) stays untouched.
    static let upsertWfRun = {
        let insert =
            "INSERT INTO wf_runs (id, wf_spec_name, major, revision, status, start_time, body) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
        return (
            settingStatus: "\(insert) status = excluded.status, body = excluded.body",
            keepingStatus: "\(insert) body = excluded.body"
        )
    }()

    private static func apply(
        _ batch: LHWriteBatch, encoded: [PreparedWfRun], orphanBodies: [(Littlehorse_ExternalEvent, Data)],
        in db: Database
    ) throws {
        for p in encoded {
            try db.cachedStatement(
                sql: p.statusChanged ? Self.upsertWfRun.settingStatus : Self.upsertWfRun.keepingStatus
            )
            .execute(arguments: p.wfRun)
            for arguments in p.taskRuns {
                try db.cachedStatement(
                    sql: """
                        INSERT INTO task_runs (wf_run_id, guid, task_def, status, scheduled_at) VALUES (?, ?, ?, ?, ?)
                        ON CONFLICT (wf_run_id, guid) DO UPDATE SET status = excluded.status, scheduled_at = excluded.scheduled_at
                        WHERE status != excluded.status OR scheduled_at != excluded.scheduled_at
                        """
                ).execute(arguments: arguments)
            }
            for arguments in p.variables {
                try db.cachedStatement(
                    sql: """
                        INSERT INTO variables (wf_run_id, thread, name, wf_spec_name, value_key) VALUES (?, ?, ?, ?, ?)
                        ON CONFLICT (wf_run_id, thread, name) DO UPDATE SET value_key = excluded.value_key
                        WHERE value_key IS NOT excluded.value_key
                        """
                ).execute(arguments: arguments)
            }
        }
        for id in batch.deletedWfRuns {
            for table in [
                "wf_runs WHERE id", "task_runs WHERE wf_run_id", "variables WHERE wf_run_id",
                "task_queue WHERE wf_run_id", "timers WHERE wf_run_id", "orphan_events WHERE wf_run_id",
            ] {
                try db.cachedStatement(sql: "DELETE FROM \(table) = ?").execute(arguments: [id])
            }
        }
        for q in batch.dequeued {
            try db.cachedStatement(sql: "DELETE FROM task_queue WHERE wf_run_id = ? AND guid = ?").execute(arguments: [
                q.wfRunId, q.taskGuid,
            ])
        }
        for q in batch.enqueued {
            try db.cachedStatement(
                sql:
                    "INSERT OR REPLACE INTO task_queue (wf_run_id, guid, task_def, attempt, seq) VALUES (?, ?, ?, ?, (SELECT IFNULL(MAX(seq), 0) + 1 FROM task_queue))"
            ).execute(
                arguments: [q.wfRunId, q.taskGuid, q.taskDef, q.attempt])
        }
        // Attempt timeouts get no rows: `timers()` derives them from the
        // TASK_RUNNING TaskRuns (a row per TaskRun written at its start and
        // deleted at its report cost more than everything else it stores).
        for t in batch.timersCancelled where t.key.isStoredAsRow {
            try db.cachedStatement(sql: "DELETE FROM timers WHERE wf_run_id = ? AND key = ?").execute(arguments: [
                t.wfRunId, t.key.description,
            ])
        }
        for t in batch.timersSet where t.key.isStoredAsRow {
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO timers (wf_run_id, key, due) VALUES (?, ?, ?)").execute(
                arguments: [t.wfRunId, t.key.description, t.due.timeIntervalSince1970])
        }
        for id in batch.claimedOrphansOf {
            try db.cachedStatement(sql: "DELETE FROM orphan_events WHERE wf_run_id = ?").execute(arguments: [id])
        }
        for (e, body) in orphanBodies {
            try db.cachedStatement(
                sql:
                    "INSERT OR REPLACE INTO orphan_events (wf_run_id, guid, seq, body) VALUES (?, ?, (SELECT IFNULL(MAX(seq), 0) + 1 FROM orphan_events), ?)"
            ).execute(
                arguments: [e.id.wfRunID.id, e.id.guid, body])
        }
    }

    public func queuedTasks() throws -> [QueuedTask] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT wf_run_id, guid, task_def, attempt FROM task_queue ORDER BY seq").map {
                QueuedTask(
                    wfRunId: $0["wf_run_id"], taskGuid: $0["guid"], taskDef: $0["task_def"], attempt: $0["attempt"])
            }
        }
    }

    /// The stored timers, and the timeout of every TaskRun attempt that is
    /// TASK_RUNNING: those are not stored as rows (see `isStoredAsRow`), they
    /// follow from the attempt's start time and the TaskRun's timeout.
    public func timers() throws -> [StoredTimer] {
        var timers = try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT wf_run_id, key, due FROM timers ORDER BY due").compactMap {
                row -> StoredTimer? in
                guard let key = LHTimerKey(row["key"] as String) else { return nil }
                return StoredTimer(wfRunId: row["wf_run_id"], key: key, due: Date(timeIntervalSince1970: row["due"]))
            }
        }
        let running = try pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT wf_run_id, guid FROM task_runs WHERE status = ?",
                arguments: [Littlehorse_TaskStatus.taskRunning.rawValue]
            ).map { (wfRunId: $0["wf_run_id"] as String, guid: $0["guid"] as String) }
        }
        timers += try StoredForm.attemptTimeouts(running: running, wfRun: wfRun)
        return timers
    }

    // MARK: - Search

    static func offset(_ bookmark: Data?) -> Int { StoredForm.offset(bookmark) }

    static func page<T>(_ rows: [T], limit: Int, offset: Int) -> LHPage<T> {
        StoredForm.page(rows, limit: limit, offset: offset)
    }

    public func searchWfRuns(_ r: Littlehorse_SearchWfRunRequest) throws -> LHPage<String> {
        let limit = r.hasLimit && r.limit > 0 ? Int(r.limit) : 100
        let offset = Self.offset(r.hasBookmark ? r.bookmark : nil)
        var sql = "SELECT id FROM wf_runs WHERE wf_spec_name = ?"
        var args: [any DatabaseValueConvertible] = [r.wfSpecName]
        if r.hasWfSpecMajorVersion { sql += " AND major = ?"; args.append(r.wfSpecMajorVersion) }
        if r.hasWfSpecRevision { sql += " AND revision = ?"; args.append(r.wfSpecRevision) }
        if r.hasStatus { sql += " AND status = ?"; args.append(r.status.rawValue) }
        if r.hasEarliestStart { sql += " AND start_time >= ?"; args.append(r.earliestStart.date.timeIntervalSince1970) }
        if r.hasLatestStart { sql += " AND start_time <= ?"; args.append(r.latestStart.date.timeIntervalSince1970) }
        sql += " ORDER BY start_time, id LIMIT ? OFFSET ?"
        args.append(limit + 1)
        args.append(offset)
        let rows = try pool.read { db in try String.fetchAll(db, sql: sql, arguments: StatementArguments(args)) }
        return Self.page(rows, limit: limit, offset: offset)
    }

    public func recentWfRuns(wfSpecName: String?, status: Littlehorse_LHStatus?, since: Date?, limit: Int) throws
        -> [String]
    {
        var conditions: [String] = []
        var args: [any DatabaseValueConvertible] = []
        if let wfSpecName { conditions.append("wf_spec_name = ?"); args.append(wfSpecName) }
        if let status { conditions.append("status = ?"); args.append(status.rawValue) }
        if let since { conditions.append("start_time >= ?"); args.append(since.timeIntervalSince1970) }
        var sql = "SELECT id FROM wf_runs"
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        sql += " ORDER BY start_time DESC, id DESC LIMIT ?"
        args.append(max(1, limit))
        return try pool.read { db in try String.fetchAll(db, sql: sql, arguments: StatementArguments(args)) }
    }

    public func wfRunCounts() throws -> [Littlehorse_LHStatus: Int] {
        let rows = try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT status, count(*) FROM wf_runs GROUP BY status")
        }
        var counts: [Littlehorse_LHStatus: Int] = [:]
        for row in rows {
            let status = Littlehorse_LHStatus(rawValue: row[0] as Int) ?? .UNRECOGNIZED(row[0])
            counts[status, default: 0] += row[1] as Int
        }
        return counts
    }

    public func searchTaskRuns(_ r: Littlehorse_SearchTaskRunRequest) throws -> LHPage<Littlehorse_TaskRunId> {
        let limit = r.hasLimit && r.limit > 0 ? Int(r.limit) : 100
        let offset = Self.offset(r.hasBookmark ? r.bookmark : nil)
        var sql = "SELECT wf_run_id, guid FROM task_runs WHERE task_def = ?"
        var args: [any DatabaseValueConvertible] = [r.taskDefName]
        if r.hasStatus { sql += " AND status = ?"; args.append(r.status.rawValue) }
        if r.hasEarliestStart {
            sql += " AND scheduled_at >= ?"; args.append(r.earliestStart.date.timeIntervalSince1970)
        }
        if r.hasLatestStart { sql += " AND scheduled_at <= ?"; args.append(r.latestStart.date.timeIntervalSince1970) }
        sql += " ORDER BY scheduled_at, wf_run_id, guid LIMIT ? OFFSET ?"
        args.append(limit + 1)
        args.append(offset)
        let rows = try pool.read { db in try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args)) }
        let ids = rows.map { row in
            Littlehorse_TaskRunId.with {
                $0.wfRunID.id = row["wf_run_id"]; $0.taskGuid = row["guid"]
            }
        }
        return Self.page(ids, limit: limit, offset: offset)
    }

    public func searchVariables(_ r: Littlehorse_SearchVariableRequest) throws -> LHPage<Littlehorse_VariableId> {
        let limit = r.hasLimit && r.limit > 0 ? Int(r.limit) : 100
        let offset = Self.offset(r.hasBookmark ? r.bookmark : nil)
        guard let key = Self.valueKey(r.value) else {
            throw StoreError(.invalidArgument, "variables are searched by a STR, INT, DOUBLE, BOOL or WF_RUN_ID value")
        }
        var sql = "SELECT wf_run_id, thread, name FROM variables WHERE name = ? AND value_key = ?"
        var args: [any DatabaseValueConvertible] = [r.varName, key]
        if !r.wfSpecName.isEmpty { sql += " AND wf_spec_name = ?"; args.append(r.wfSpecName) }
        sql += " ORDER BY wf_run_id, thread LIMIT ? OFFSET ?"
        args.append(limit + 1)
        args.append(offset)
        let rows = try pool.read { db in try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args)) }
        let ids = rows.map { row in
            Littlehorse_VariableId.with {
                $0.wfRunID.id = row["wf_run_id"]; $0.threadRunNumber = row["thread"]; $0.name = row["name"]
            }
        }
        return Self.page(ids, limit: limit, offset: offset)
    }
}

/// A storage problem: the data directory cannot be used as it is.
extension LHTimerKey {
    /// Whether the timer has a row of its own; attempt timeouts follow from
    /// the TaskRuns instead (migration v2 removed the rows older builds wrote).
    public var isStoredAsRow: Bool {
        if case .attemptTimeout = self { return false }
        return true
    }
}
