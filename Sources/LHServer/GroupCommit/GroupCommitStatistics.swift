import Foundation
import Logging
import Synchronization

/// Group commits per second, jobs per commit and the write time, logged
/// every 5 s at debug level.
final class GroupCommitStatistics: Sendable {
    private let counts = Mutex((commits: 0, jobs: 0, commitSeconds: 0.0, since: Date()))

    func record(jobs: Int, seconds: Double, logger: Logger) {
        guard logger.logLevel <= .debug else { return }
        let line = counts.withLock { c -> (commits: Int, jobs: Int, commitSeconds: Double, elapsed: Double)? in
            c.commits += 1
            c.jobs += jobs
            c.commitSeconds += seconds
            let elapsed = -c.since.timeIntervalSinceNow
            guard elapsed > 5 else { return nil }
            defer { c = (0, 0, 0, Date()) }
            return (c.commits, c.jobs, c.commitSeconds, elapsed)
        }
        guard let line else { return }
        let commits = Double(max(line.commits, 1))
        let writeSeconds = CommitLine.writeSeconds.withLock { w in
            defer { w = 0 }
            return w
        }
        logger.debug(
            "group commits",
            metadata: [
                "lh.commitsPerSecond": "\(Int(Double(line.commits) / line.elapsed))",
                "lh.jobsPerCommit": "\(String(format: "%.1f", Double(line.jobs) / commits))",
                "lh.commitBusy": "\(String(format: "%.0f%%", line.commitSeconds / line.elapsed * 100))",
                "lh.writeMs": "\(String(format: "%.2f", writeSeconds / commits * 1000))",
            ])
    }
}
