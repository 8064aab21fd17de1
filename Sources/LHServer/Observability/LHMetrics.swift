import CoreMetrics
import Foundation
import LHProto
import Prometheus
import Synchronization

/// The server's metrics: swift-metrics handles made by a Prometheus factory
/// on a registry of this server's own (two servers in one test process do
/// not mix their counts). What happens on the hot path is counted in a
/// ``Tally`` per group commit and added here once the commit is durable, so
/// counts are of committed work only; levels (queues, workers, timers,
/// WfRuns by status) are read when `/metrics` is scraped.
/// docs/metrics.md lists every metric and what it counts.
package final class LHMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory

    // Group commits.
    let groupCommits: CoreMetrics.Counter
    let jobsPerCommit: Recorder
    let storeCommitTime: CoreMetrics.Timer
    let groupCommitTime: CoreMetrics.Timer
    // Commands applied, by engine command.
    let commands: [Tally.Command: CoreMetrics.Counter]
    // TaskRuns.
    let tasksScheduled: CoreMetrics.Counter
    let attemptsStarted: CoreMetrics.Counter
    let attemptsCompleted: CoreMetrics.Counter
    let attemptsFailed: CoreMetrics.Counter
    let attemptsTimedOut: CoreMetrics.Counter
    let attemptsRetried: CoreMetrics.Counter
    let scheduleToStart: CoreMetrics.Timer
    let taskToNextTask: CoreMetrics.Timer
    // WfRuns, threads, events.
    let wfRunsStarted: CoreMetrics.Counter
    let wfRunsEnded: [Littlehorse_LHStatus: CoreMetrics.Counter]
    let externalEvents: CoreMetrics.Counter
    let interrupts: CoreMetrics.Counter
    let interruptHandlers: CoreMetrics.Counter
    let failureHandlers: CoreMetrics.Counter
    let threadsHalting: CoreMetrics.Counter
    let threadsHalted: CoreMetrics.Counter
    // Connections.
    let connectionsOpen: Meter
    let connectionsOpened: CoreMetrics.Counter
    let connectionsRefused: CoreMetrics.Counter
    let frameErrors: CoreMetrics.Counter
    let tlsErrors: CoreMetrics.Counter
    // A cluster's forwarding.
    let forwardTime: CoreMetrics.Timer

    /// Requests by kind and result code, made on first use.
    private let requestCounters = Mutex<[RequestKey: CoreMetrics.Counter]>([:])

    struct RequestKey: Hashable {
        var kind: String
        var code: String
    }

    package init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        let fast: [Duration] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .seconds(1),
        ]
        let slow: [Duration] = [
            .milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(500), .seconds(1),
            .seconds(5), .seconds(30), .seconds(60), .seconds(300),
        ]
        factory.durationHistogramBuckets = [
            "lh_store_commit_seconds": fast, "lh_group_commit_seconds": fast, "lh_task_to_next_task_seconds": fast,
            "lh_task_schedule_to_start_seconds": slow, "lh_dashboard_render_seconds": fast,
            "lh_cluster_forward_seconds": fast,
        ]
        factory.valueHistogramBuckets = ["lh_group_commit_jobs": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]]
        self.factory = factory
        func counter(_ name: String, _ dimensions: [(String, String)] = []) -> CoreMetrics.Counter {
            CoreMetrics.Counter(label: name, dimensions: dimensions, factory: factory)
        }
        func timer(_ name: String) -> CoreMetrics.Timer { CoreMetrics.Timer(label: name, factory: factory) }
        groupCommits = counter("lh_group_commits_total")
        jobsPerCommit = Recorder(label: "lh_group_commit_jobs", aggregate: true, factory: factory)
        storeCommitTime = timer("lh_store_commit_seconds")
        groupCommitTime = timer("lh_group_commit_seconds")
        var commands: [Tally.Command: CoreMetrics.Counter] = [:]
        for c in Tally.Command.allCases {
            commands[c] = counter("lh_commands_applied_total", [("command", c.rawValue)])
        }
        self.commands = commands
        tasksScheduled = counter("lh_task_runs_scheduled_total")
        attemptsStarted = counter("lh_task_attempts_dispatched_total")
        attemptsCompleted = counter("lh_task_attempts_completed_total")
        attemptsFailed = counter("lh_task_attempts_failed_total")
        attemptsTimedOut = counter("lh_task_attempts_timed_out_total")
        attemptsRetried = counter("lh_task_attempts_retried_total")
        scheduleToStart = timer("lh_task_schedule_to_start_seconds")
        taskToNextTask = timer("lh_task_to_next_task_seconds")
        wfRunsStarted = counter("lh_wf_runs_started_total")
        var ended: [Littlehorse_LHStatus: CoreMetrics.Counter] = [:]
        for s in [Littlehorse_LHStatus.completed, .error, .exception] {
            ended[s] = counter("lh_wf_runs_ended_total", [("status", s.protoName)])
        }
        wfRunsEnded = ended
        externalEvents = counter("lh_external_events_total")
        interrupts = counter("lh_interrupts_total")
        interruptHandlers = counter("lh_handler_threads_started_total", [("type", "INTERRUPT")])
        failureHandlers = counter("lh_handler_threads_started_total", [("type", "FAILURE_HANDLER")])
        threadsHalting = counter("lh_thread_runs_halting_total")
        threadsHalted = counter("lh_thread_runs_halted_total")
        connectionsOpen = Meter(label: "lh_connections_open", factory: factory)
        connectionsOpened = counter("lh_connections_opened_total")
        connectionsRefused = counter("lh_connections_refused_total")
        frameErrors = counter("lh_frame_errors_total")
        tlsErrors = counter("lh_tls_errors_total")
        forwardTime = timer("lh_cluster_forward_seconds")
    }

    /// One request answered: `kind` is LittleHorse's RPC name (RunWf,
    /// ReportTask, ...), `code` OK or the error's code.
    package func request(_ kind: String, code: String) {
        let key = RequestKey(kind: kind, code: code)
        let counter = requestCounters.withLock { counters in
            if let c = counters[key] { return c }
            let c = CoreMetrics.Counter(
                label: "lh_requests_total", dimensions: [("kind", kind), ("code", code)], factory: factory)
            counters[key] = c
            return c
        }
        counter.increment()
    }

    /// One request of our protocol answered with `result`.
    func request<T>(_ kind: String, _ result: Result<T, any Error>) {
        switch result {
        case .success: request(kind, code: "OK")
        case .failure(let error): request(kind, code: Self.code(of: error))
        }
    }

    /// The result code a failure is counted under: its LHError code, else INTERNAL.
    static func code(of error: any Error) -> String {
        (error as? LHError).map { "\($0.code)" } ?? "INTERNAL"
    }

    /// A group commit is durable: what its jobs did.
    func committed(_ tally: Tally, jobs: Int, seconds: Double) {
        groupCommits.increment()
        jobsPerCommit.record(jobs)
        groupCommitTime.recordSeconds(seconds)
        tally.record(into: self)
    }

    /// Requests forwarded to another member, by result code, made on first use.
    private let forwardCounters = Mutex<[String: CoreMetrics.Counter]>([:])

    /// A request forwarded to the owner of its partition was answered
    /// (`code` OK or the error's) after `seconds`, the forward included.
    func forwarded(code: String, seconds: Double) {
        let counter = forwardCounters.withLock { counters in
            if let c = counters[code] { return c }
            let c = CoreMetrics.Counter(
                label: "lh_cluster_forwarded_requests_total", dimensions: [("code", code)], factory: factory)
            counters[code] = c
            return c
        }
        counter.increment()
        forwardTime.recordSeconds(seconds)
    }

    /// A dashboard page was rendered in `seconds` (server side).
    func dashboardRendered(_ page: String, seconds: Double) {
        CoreMetrics.Timer(label: "lh_dashboard_render_seconds", dimensions: [("page", page)], factory: factory)
            .recordSeconds(seconds)
    }

    /// Levels read at scrape time, set as gauges.
    func setLevel(_ name: String, _ dimensions: [(String, String)] = [], _ value: Int) {
        Gauge(label: name, dimensions: dimensions, factory: factory).record(value)
    }

    /// The Prometheus text format of everything.
    func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16_384)
        registry.emit(into: &buffer)
        return buffer
    }
}
