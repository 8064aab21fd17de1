import Foundation
import GRDB
import LHSQLitePageCache
import LHStore
import Testing

/// LHSQLitePageCache's wrapper of SQLite's page cache skips a commit's
/// truncate only when it would drop nothing. Many small transactions that
/// split B-tree pages (the renumbering that made every commit walk the
/// whole cache), some of them rolled back after growing the file (the
/// truncates that must drop pages), checked against a model of the rows.
@Suite struct PageCacheTests {
    @Test func theWrapperIsSQLitesPageCache() {
        // Installed as the test process loaded, before any connection.
        #expect(lh_page_cache_installed() == 1)
        #expect(SQLiteStore.pageCacheWrapped)
    }

    @Test func splitsAndRollbacksKeepEveryRowAndTheWalkIsSkipped() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lh-pcache-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let pool = try DatabasePool(path: dir.appendingPathComponent("t.sqlite").path)
        try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA cache_size = -32768")
            try db.execute(sql: "CREATE TABLE rows (k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
            try db.execute(sql: "CREATE INDEX rows_by_v ON rows (v)")
        }
        struct Rollback: Error {}
        var model: [String: Data] = [:]
        var generator = SystemRandomNumberGenerator()
        let (skippedBefore, passedBefore) = Self.counts()
        for round in 0..<1_500 {
            var staged = model
            do {
                try pool.write { db in
                    for _ in 0..<3 {
                        // Random keys and ~half-page values: leaves split all over the tree.
                        let key = String(UInt64.random(in: 0..<UInt64.max, using: &generator), radix: 36)
                        let value = Data((0..<1_500).map { _ in UInt8.random(in: 0...255, using: &generator) })
                        try db.execute(sql: "INSERT INTO rows (k, v) VALUES (?, ?)", arguments: [key, value])
                        staged[key] = value
                    }
                    if round % 5 == 0, let victim = staged.keys.randomElement(using: &generator) {
                        try db.execute(sql: "DELETE FROM rows WHERE k = ?", arguments: [victim])
                        staged[victim] = nil
                    }
                    // Every seventh transaction grows the file and is rolled back.
                    if round % 7 == 3 { throw Rollback() }
                }
                model = staged
            } catch is Rollback {}
        }
        let (skipped, passed) = Self.counts()
        try pool.read { db in
            #expect(try String.fetchOne(db, sql: "PRAGMA integrity_check") == "ok")
            let rows = try Row.fetchAll(db, sql: "SELECT k, v FROM rows")
            var stored: [String: Data] = [:]
            for row in rows { stored[row["k"]] = row["v"] }
            #expect(stored.count == model.count)
            #expect(stored == model, "the rows differ from the model after splits and rollbacks")
        }
        // The wrapper skipped truncates that would have dropped nothing and
        // passed on the ones after rollbacks (other tests run meanwhile, so
        // only lower bounds).
        #expect(skipped - skippedBefore >= 500, "skipped \(skipped - skippedBefore)")
        #expect(passed - passedBefore >= 100, "passed \(passed - passedBefore)")
    }

    static func counts() -> (UInt64, UInt64) {
        var skipped: UInt64 = 0
        var passed: UInt64 = 0
        lh_page_cache_counts(&skipped, &passed)
        return (skipped, passed)
    }
}
