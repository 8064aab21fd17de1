import Foundation

/// The PostgreSQL a benchmark's server stores in (`--store postgres`): one of
/// its own, started by the repository's scripts/postgres.sh (fsync on, as
/// shipped), or an existing one (`--store postgres://...`). Its CPU and the
/// WAL it writes are part of the figures.
final class BenchDatabase: @unchecked Sendable {
    let url: String
    /// The data directory of a PostgreSQL started here (nil for an existing one).
    let directory: URL?

    private init(url: String, directory: URL?) {
        self.url = url
        self.directory = directory
    }

    /// `store`: "postgres" (start one in `workDir`) or a postgres:// URL.
    static func open(_ store: String, workDir: URL) throws -> BenchDatabase {
        if store.hasPrefix("postgres://") || store.hasPrefix("postgresql://") {
            return BenchDatabase(url: store, directory: nil)
        }
        let script = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
            .appendingPathComponent("scripts/postgres.sh")
        guard FileManager.default.isExecutableFile(atPath: script.path) else {
            throw BenchError(
                "--store postgres starts PostgreSQL with scripts/postgres.sh: run lh-bench from the repository's root, or give --store postgres://USER@HOST:PORT/DATABASE"
            )
        }
        let dir = workDir.appendingPathComponent("pg")
        say("starting PostgreSQL (scripts/postgres.sh) in \(dir.path)")
        let out = try runScript(script.path, ["start", dir.path])
        guard let url = out.split(separator: "\n").last.map(String.init), url.hasPrefix("postgres://") else {
            throw BenchError("scripts/postgres.sh did not start PostgreSQL: \(out)")
        }
        return BenchDatabase(url: url, directory: dir)
    }

    func stop() {
        guard let directory else { return }
        let script = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
            .appendingPathComponent("scripts/postgres.sh")
        _ = try? runScript(script.path, ["stop", directory.path])
    }

    /// CPU seconds of the PostgreSQL started here: the postmaster, its live
    /// backends and those that ended (reaped into the postmaster's children's time).
    var cpuSeconds: Double {
        guard let directory,
            let pidText = try? String(
                contentsOfFile: directory.appendingPathComponent("data/postmaster.pid").path, encoding: .utf8),
            let first = pidText.split(separator: "\n").first, let postmaster = Int32(first)
        else { return 0 }
        var total = cpuSeconds(pid: postmaster, withReapedChildren: true)
        let procs = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in procs {
            guard let pid = Int32(entry), pid != postmaster, parent(of: pid) == postmaster else { continue }
            total += cpuSeconds(pid: pid, withReapedChildren: false)
        }
        return total
    }

    private func parent(of pid: Int32) -> Int32? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        let rest = text[text.index(after: close)...].split(separator: " ")
        return rest.count > 1 ? Int32(rest[1]) : nil
    }

    private func cpuSeconds(pid: Int32, withReapedChildren: Bool) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return 0 }
        let rest = text[text.index(after: close)...].split(separator: " ")
        guard rest.count > 15 else { return 0 }
        let fields = withReapedChildren ? [11, 12, 13, 14] : [11, 12]
        let ticks = fields.compactMap { Double(rest[$0]) }.reduce(0, +)
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Waits until `members` live members own every partition between
    /// them (each its share: the later ones took theirs from the first).
    func waitForShares(members: Int, timeout: Double = 60) async throws {
        let deadline = monoSeconds() + timeout
        while true {
            let out = try? runScript(
                "/usr/bin/psql",
                [
                    url, "-XAtc",
                    """
                    SELECT count(DISTINCT l.owner) || ' ' || count(*) FILTER (WHERE m.id IS NULL)
                    FROM lh_partitions l LEFT JOIN lh_members m ON m.id = l.owner AND m.state = 'live'
                    """,
                ])
            let fields = (out ?? "").split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
            if fields.count == 2 && fields[0] == members && fields[1] == 0 { return }
            if monoSeconds() > deadline {
                throw BenchError("the \(members) servers did not share the partitions within \(Int(timeout)) s")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// The partitions the live member at `address` owns, through psql.
    func partitions(ownedBy address: String) -> Set<Int> {
        let out = try? runScript(
            "/usr/bin/psql",
            [
                url, "-XAtc",
                "SELECT l.p FROM lh_partitions l JOIN lh_members m ON m.id = l.owner WHERE m.address = '\(address)' AND m.state = 'live'",
            ])
        return Set((out ?? "").split(whereSeparator: \.isWhitespace).compactMap { Int($0) })
    }

    /// The partition of each of these WfRuns (ids without quotes), through psql.
    func partitions(ofIds ids: [String]) -> [String: Int] {
        let list = ids.map { "'\($0)'" }.joined(separator: ",")
        let out = try? runScript(
            "/usr/bin/psql", [url, "-XAtF", " ", "-c", "SELECT id, partition FROM wf_runs WHERE id IN (\(list))"])
        var map: [String: Int] = [:]
        for line in (out ?? "").split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 2, let p = Int(f[1]) { map[String(f[0])] = p }
        }
        return map
    }

    /// Bytes of WAL written so far (`pg_current_wal_lsn()`), through psql.
    var walBytes: Double {
        guard
            let out = try? runScript(
                "/usr/bin/psql", [url, "-XAtc", "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"])
        else { return 0 }
        return Double(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }
}

/// Runs a command to its end; its stdout, or an error with its stderr.
/// Output goes through files, not pipes: a daemon the command starts
/// (PostgreSQL) inherits the descriptors and would hold a pipe open forever.
func runScript(_ path: String, _ arguments: [String]) throws -> String {
    let dir = FileManager.default.temporaryDirectory
    let outURL = dir.appendingPathComponent("lh-bench-out-\(UUID().uuidString.prefix(8))")
    let errURL = dir.appendingPathComponent("lh-bench-err-\(UUID().uuidString.prefix(8))")
    FileManager.default.createFile(atPath: outURL.path, contents: nil)
    FileManager.default.createFile(atPath: errURL.path, contents: nil)
    defer {
        try? FileManager.default.removeItem(at: outURL)
        try? FileManager.default.removeItem(at: errURL)
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    process.standardOutput = try FileHandle(forWritingTo: outURL)
    process.standardError = try FileHandle(forWritingTo: errURL)
    try process.run()
    process.waitUntilExit()
    let out = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
    guard process.terminationStatus == 0 else {
        let errors = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
        throw BenchError("\(path) \(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(errors)")
    }
    return out
}
