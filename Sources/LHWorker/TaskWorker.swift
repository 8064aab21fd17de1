import Foundation
import LHClient
import LHProto
import LHWire
import LHWireProto
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import SwiftProtobuf

/// What a running task knows about itself.
public final class WorkerContext: Sendable {
    public let wfRunId: String
    public let taskRunId: Littlehorse_TaskRunId
    public let attemptNumber: Int
    public let scheduledTask: Littlehorse_ScheduledTask
    private let logs = NIOLockedValueBox<[String]>([])

    init(_ task: Littlehorse_ScheduledTask) {
        scheduledTask = task
        wfRunId = task.taskRunID.wfRunID.id
        taskRunId = task.taskRunID
        attemptNumber = Int(task.attemptNumber)
    }

    /// The same for every attempt of one TaskRun: `<wfRunId>/<taskGuid>`.
    public var idempotencyKey: String { "\(wfRunId)/\(taskRunId.taskGuid)" }

    /// Adds a line to the log output sent with the report.
    public func log(_ message: String) { logs.withLockedValue { $0.append(message) } }

    var logOutput: String? {
        let lines = logs.withLockedValue { $0 }
        return lines.isEmpty ? nil : lines.joined(separator: "\n")
    }
}

/// Runs one TaskDef's tasks as a worker process: connects, subscribes with
/// its capacity (`LHW_NUM_WORKER_THREADS`), runs each ScheduledTask through
/// the closure and reports the result. A swift-service-lifecycle Service.
///
/// The closure starts on the thread that read the task (the connection's
/// event loop) and runs there until it first suspends, so a task that
/// returns at once costs no thread hand-over. Long synchronous work (CPU
/// bound or blocking I/O) would hold that thread: give it a thread of its
/// own, or `await` something first (`await Task.yield()` moves the rest of
/// the closure to Swift's global executor).
///
/// ```swift
/// let collect = LHTaskWorker(config: config, taskDefName: "collect-underpant", inputs: ["owner"]) {
///     (owner: String) async throws -> String in "Successfully collected underpant from \(owner)"
/// }
/// try await collect.registerTaskDef()
/// try await collect.run()
/// ```
public final class LHTaskWorker: Service, Sendable {
    public typealias Handler =
        @Sendable (WorkerContext, [Littlehorse_VariableValue]) async throws -> Littlehorse_VariableValue?

    public let config: LHConfig
    public let taskDefName: String
    public let inputNames: [String]
    public let inputTypes: [Littlehorse_VariableType]
    /// nil: the task returns nothing.
    public let outputType: Littlehorse_VariableType?
    let handler: Handler
    let logger: Logger
    private let state = NIOLockedValueBox(State())

    struct State {
        /// Reports that could not be sent yet (no server was reachable).
        var unsent: [Kept] = []
        var completed = 0
        /// The subscribed connections (one per server of a cluster): a
        /// report goes on the one that delivered its task, else on any.
        var live: [ObjectIdentifier: LHWireConnection] = [:]
        var stopping = false
        /// The advertised address of the cluster member the main
        /// connection (to `LHC_API_HOST`) reached, and whether the main
        /// connection is subscribed now: while it is down, the other
        /// members' lists are followed instead (a server that joins then is
        /// still connected to).
        var mainAddress: String?
        var mainSubscribed = false
        /// The other members' connection loops, by address.
        var others: [String: Task<Void, Never>] = [:]
        /// The connection of each other member's loop (closed when the
        /// member leaves the cluster).
        var othersConnections: [String: LHWireConnection] = [:]
    }

    struct Kept {
        var report: Littlehorse_ReportTaskRun
        var settled: @Sendable () -> Void
    }

    /// Every task from its start until its report is settled, across
    /// connections.
    let running = RunningTasks()

    /// The erased initialiser the typed overloads call.
    public init(
        config: LHConfig, taskDefName: String, inputs: [String], inputTypes: [Littlehorse_VariableType],
        outputType: Littlehorse_VariableType?, logger: Logger? = nil, handler: @escaping Handler
    ) {
        precondition(
            inputs.count == inputTypes.count,
            "LHTaskWorker '\(taskDefName)': \(inputs.count) input names for \(inputTypes.count) closure parameters")
        self.config = config
        self.taskDefName = taskDefName
        self.inputNames = inputs
        self.inputTypes = inputTypes
        self.outputType = outputType
        self.handler = handler
        self.logger = logger ?? Logger(label: "lh.worker.\(taskDefName)")
    }

    /// Tasks this worker has reported.
    public var completedCount: Int { state.withLockedValue { $0.completed } }

    /// The PutTaskDefRequest this worker's closure implies.
    public var putTaskDefRequest: Littlehorse_PutTaskDefRequest {
        var r = Littlehorse_PutTaskDefRequest()
        r.name = taskDefName
        r.inputVars = zip(inputNames, inputTypes).map { name, type in
            .with {
                $0.name = name; $0.typeDef.primitiveType = type
            }
        }
        if let outputType {
            r.returnType = .with { $0.returnType = .with { $0.primitiveType = outputType } }
        } else {
            r.returnType = .init()
        }
        return r
    }

    /// Registers the TaskDef (idempotent when it exists with the same shape).
    @discardableResult
    public func registerTaskDef() async throws -> Littlehorse_TaskDef {
        let client = try await LittleHorseClient.connect(config, logger: logger)
        defer { Task { await client.close() } }
        return try await client.putTaskDef(putTaskDefRequest)
    }

    /// Serves until cancelled or graceful shutdown; reconnects with backoff
    /// when the server goes away. In a cluster (the subscription's answer
    /// lists the servers), a connection to every other server too: each
    /// hands out the TaskRuns of its own partitions.
    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            defer { self.running.cancelAll() }
            await self.connectionLoop(address: nil)
            // Stopping: the other members' loops end (each waits for the
            // tasks to settle before closing its connection).
            let others = self.state.withLockedValue { s in
                defer { s.others = [:] }
                return Array(s.others.values)
            }
            for task in others { task.cancel() }
            for task in others { await task.value }
        }
    }

    /// One server's connection, again and again until cancelled (or, for
    /// another member of a cluster, until it leaves the cluster). `address`
    /// nil: the main one, to the first of `LHC_API_HOST` that answers.
    private func connectionLoop(address: String?) async {
        var backoff = 0.1
        var failures = 0
        while !Task.isCancelled {
            if let address, state.withLockedValue({ $0.others[address] == nil }) { return }
            var subscribed = false
            do {
                try await self.serveOneConnection(address: address, subscribed: &subscribed)
                backoff = 0.1
            } catch is CancellationError {
                return
            } catch {
                if Task.isCancelled { return }
                if subscribed {
                    backoff = 0.1
                    failures = 0
                }
                failures += 1
                // NOT_FOUND: the subscription names a TaskDef the server does
                // not know (registerTaskDef not called, or another process
                // registers it later). Before subscribing: the server is not
                // there yet, or the settings (address, CA file) are wrong,
                // which the error names; a file made later is picked up.
                let missing = (error as? LHError)?.code == .notFound
                var metadata: Logger.Metadata = [
                    LHLog.taskDef: "\(self.taskDefName)", "lh.error": "\(error)", "lh.retryIn": "\(backoff)s",
                ]
                if let address { metadata["lh.server"] = "\(address)" }
                // Another member that is gone: said once, then quietly
                // until the cluster's list drops it.
                let level: Logger.Level = address != nil && failures > 1 ? .debug : .warning
                self.logger.log(
                    level: level,
                    missing
                        ? "the server has no TaskDef of this name; register it (registerTaskDef). Trying again"
                        : subscribed
                            ? "connection to the server lost; reconnecting"
                            : "cannot connect to the server; trying again",
                    metadata: metadata)
            }
            try? await Task.sleep(for: .milliseconds(Int(backoff * 1000)))
            // A cluster's server comes back or takes over quickly: retry sooner.
            backoff = min(backoff * 2, address != nil || self.config.endpoints.count > 1 ? 1 : 5)
        }
    }

    /// The servers of the cluster, as the main connection's server lists
    /// them: a connection loop for each member but that one; loops of
    /// members no longer listed end. While the main connection is down
    /// (its server killed, `LHC_API_HOST` naming only it), the lists of the
    /// other members' servers (`from`: the list's sender) are followed, so
    /// a server that joins meanwhile gets this worker too; the main
    /// server's address is never a loop of its own.
    private func follow(_ members: Lhwire_ClusterMembers, from address: String?) {
        let (start, stop) = state.withLockedValue { s -> ([String], [LHWireConnection]) in
            if s.stopping { return ([], []) }
            if address == nil {
                s.mainAddress = members.members.first(where: \.thisServer)?.address ?? s.mainAddress
            } else if s.mainSubscribed || s.others[address!] == nil {
                return ([], [])
            }
            let wanted = Set(
                members.members.filter {
                    !$0.address.isEmpty && (address == nil ? !$0.thisServer : $0.address != s.mainAddress)
                }.map(\.address))
            var start: [String] = []
            var stop: [LHWireConnection] = []
            for gone in s.others.keys where !wanted.contains(gone) {
                s.others[gone] = nil
                if let c = s.othersConnections.removeValue(forKey: gone) { stop.append(c) }
            }
            for address in wanted where s.others[address] == nil {
                start.append(address)
                // Reserved now; the task is set just below.
                s.others[address] = Task {}
            }
            return (start, stop)
        }
        for address in start {
            let task = Task { await self.connectionLoop(address: address) }
            state.withLockedValue { s in
                if s.others[address] != nil { s.others[address] = task } else { task.cancel() }
            }
            logger.info("connecting to another server of the cluster", metadata: ["lh.server": "\(address)"])
        }
        for connection in stop { Task { await connection.close() } }
    }

    private func serveOneConnection(address: String?, subscribed: inout Bool) async throws {
        // Each pushed task starts from the event loop that read it, in a task
        // of its own; its report's answer is handled back on the event loop.
        // No stream, no loop task and no waiting task in between: at
        // moderate load every thread wake-up of a task's path is CPU and
        // latency. Tasks outlive their connection: one still running when
        // the server goes away goes on, and reports on another connection.
        // With several servers listed (a cluster), the first that answers.
        var target = config
        if let address { target.apiHost = address }
        let delivering = ConnectionBox()
        let isMain = address == nil
        let connection = try await target.connectToFirstReachable(role: .worker) { configuration in
            try await LHWireConnection.connect(configuration, logger: logger) { envelope in
                switch envelope.kind {
                case .scheduledTask(let task):
                    var held = Lhwire_HeldTask()
                    held.taskRunID = task.taskRunID
                    held.attemptNumber = task.attemptNumber
                    self.running.start(held: held) { settled in
                        let report = await self.execute(task)
                        self.deliver(report, via: delivering.connection, settled: settled)
                    }
                case .clusterMembers(let members):
                    // The members changed: a member that died may have handed
                    // out what this worker holds; its partitions' new owners
                    // learn it from a subscription listing it.
                    self.follow(members, from: address)
                    if let connection = delivering.connection { self.subscribeAgain(on: connection) }
                default:
                    break
                }
            }
        }
        delivering.connection = connection
        let id = ObjectIdentifier(connection)
        defer {
            state.withLockedValue { s in
                s.live[id] = nil
                if isMain { s.mainSubscribed = false }
                if let address, s.othersConnections[address] === connection { s.othersConnections[address] = nil }
            }
            Task { await connection.close() }
        }
        if let address {
            let wanted = state.withLockedValue { s in
                if s.others[address] != nil { s.othersConnections[address] = connection }
                return s.others[address] != nil
            }
            if !wanted { return }
        }
        // The subscription lists what this worker still holds from before
        // (running, or finished with its report not answered), so that the
        // server neither retries those nor gives this worker more than its
        // capacity. Reports wait until the subscription is answered: one
        // answered before would leave its TaskRun counted as held.
        var subscribe = Lhwire_Subscribe()
        subscribe.taskDefID.name = taskDefName
        subscribe.taskWorkerID = config.taskWorkerId
        subscribe.capacity = UInt32(config.numWorkerThreads)
        subscribe.held = running.held()
        let answer = try await connection.request(.subscribe(subscribe))
        subscribed = true
        // From now on finished tasks may report on this connection; results
        // kept while no server was reachable go first.
        let unsent = state.withLockedValue { s in
            s.live[id] = connection
            defer { s.unsent = [] }
            return s.unsent
        }
        for kept in unsent { report(kept.report, on: connection, settled: kept.settled) }
        if isMain { state.withLockedValue { $0.mainSubscribed = true } }
        if case .clusterMembers(let members) = answer { follow(members, from: address) }
        logger.info(
            "subscribed",
            metadata: [
                LHLog.taskDef: "\(taskDefName)", "lh.capacity": "\(config.numWorkerThreads)",
                "lh.held": "\(subscribe.held.count)",
                "lh.server": "\(address ?? "\(connection.channel.remoteAddress.map { "\($0)" } ?? "?")")",
            ])
        await Self.closedOrCancelled(connection)
        guard Task.isCancelled else { throw LHError(.unavailable, "connection closed") }
        // Shutting down: the running tasks are told so, and each ends with
        // its report answered or refused (or dropped, if no connection is
        // left) before the worker stops.
        state.withLockedValue { $0.stopping = true }
        running.cancelAll()
        let dropped = state.withLockedValue { s in
            s.live.values.contains { $0.channel.isActive } ? [] : s.unsent
        }
        for kept in dropped { kept.settled() }
        await running.settled()
    }

    /// Sends the subscription again on a subscribed connection, listing what
    /// this worker holds now.
    private func subscribeAgain(on connection: LHWireConnection) {
        guard state.withLockedValue({ $0.live[ObjectIdentifier(connection)] != nil && !$0.stopping }) else { return }
        var subscribe = Lhwire_Subscribe()
        subscribe.taskDefID.name = taskDefName
        subscribe.taskWorkerID = config.taskWorkerId
        subscribe.capacity = UInt32(config.numWorkerThreads)
        subscribe.held = running.held()
        connection.request(.subscribe(subscribe)) { result in
            if case .failure(let error) = result {
                self.logger.debug("subscribing again failed", metadata: ["lh.error": "\(error)"])
            }
        }
    }

    /// Returns when the connection closed or the calling task was cancelled
    /// (a promise completed by whichever comes first; later ones are no-ops).
    private static func closedOrCancelled(_ connection: LHWireConnection) async {
        let ended = connection.channel.eventLoop.makePromise(of: Void.self)
        connection.closeFuture.cascade(to: ended)
        await withTaskCancellationHandler {
            try? await ended.futureResult.get()
        } onCancel: {
            ended.succeed(())
        }
    }

    /// A finished task's report: sent on the connection that delivered the
    /// task, else on another subscribed one (a server that does not own the
    /// TaskRun forwards it), or kept until there is one. Stopping with no
    /// connection, it is dropped: the server retries the attempt.
    private func deliver(
        _ report: Littlehorse_ReportTaskRun, via preferred: LHWireConnection? = nil,
        settled: @escaping @Sendable () -> Void
    ) {
        enum Next {
            case send(LHWireConnection)
            case kept, drop
        }
        let next = state.withLockedValue { s -> Next in
            if let c = preferred, c.channel.isActive, s.live[ObjectIdentifier(c)] != nil { return .send(c) }
            if let c = s.live.values.first(where: { $0.channel.isActive }) { return .send(c) }
            if s.stopping { return .drop }
            s.unsent.append(Kept(report: report, settled: settled))
            return .kept
        }
        switch next {
        case .send(let connection): self.report(report, on: connection, settled: settled)
        case .kept: break
        case .drop:
            logger.warning(
                "stopping without a connection: report dropped; the server retries the attempt",
                metadata: [LHLog.taskRunId: "\(report.taskRunID.wfRunID.id)/\(report.taskRunID.taskGuid)"])
            settled()
        }
    }

    /// Sends a report; its answer is handled on the event loop. Reports are
    /// idempotent on the server (one for an attempt that is no longer
    /// running changes nothing), so one that fails while the connection
    /// stays up (the server's storage failed, or no answer in time) is sent
    /// again on it after a pause; one whose connection is gone is delivered
    /// again (on another connection).
    private func report(
        _ report: Littlehorse_ReportTaskRun, on connection: LHWireConnection,
        retryIn delay: TimeAmount = .milliseconds(100), settled: @escaping @Sendable () -> Void
    ) {
        connection.request(.reportTask(report)) { result in
            switch result {
            case .success:
                self.state.withLockedValue { $0.completed += 1 }
            case .failure(let e as LHError)
            where e.code == .notFound || e.code == .invalidArgument || e.code == .failedPrecondition:
                // The TaskRun is gone (its WfRun deleted), or its attempt is
                // another worker's: nothing to retry.
                self.logger.warning("report refused", metadata: ["lh.error": "\(e)"])
            case .failure(let error) where connection.channel.isActive && !self.running.isCancelled:
                self.logger.warning(
                    "report failed; sending it again",
                    metadata: [
                        LHLog.taskRunId: "\(report.taskRunID.wfRunID.id)/\(report.taskRunID.taskGuid)",
                        "lh.error": "\(error)", "lh.retryIn": "\(delay.nanoseconds / 1_000_000)ms",
                    ])
                connection.channel.eventLoop.scheduleTask(in: delay) {
                    self.report(report, on: connection, retryIn: min(delay * 2, .seconds(5)), settled: settled)
                }
                return
            case .failure where !connection.channel.isActive:
                self.deliver(report, settled: settled)
                return
            case .failure(let error):
                self.logger.warning(
                    "stopping: report failed and dropped; the server retries the attempt",
                    metadata: ["lh.error": "\(error)"])
            }
            settled()
        }
    }

    /// Runs one ScheduledTask and makes its report.
    func execute(_ task: Littlehorse_ScheduledTask) async -> Littlehorse_ReportTaskRun {
        let context = WorkerContext(task)
        var report = Littlehorse_ReportTaskRun()
        report.taskRunID = task.taskRunID
        report.attemptNumber = task.attemptNumber
        let values = task.variables.map(\.value)
        do {
            guard values.count == inputTypes.count else {
                throw InputError(
                    message:
                        "TaskDef '\(taskDefName)' takes \(inputTypes.count) input(s), the TaskRun has \(values.count)")
            }
            let output = try await handler(context, values)
            report.status = .taskSuccess
            if let output { report.output = output }
        } catch let e as InputError {
            report.status = .taskInputVarSubError
            report.error = .with {
                $0.type = .varSubError; $0.message = e.message
            }
        } catch let e as OutputError {
            report.status = .taskOutputSerdeError
            report.error = .with {
                $0.type = .taskError; $0.message = e.message
            }
        } catch let e as LHTaskException {
            report.status = .taskException
            report.exception = .with { x in
                x.name = e.name
                x.message = e.message
                if let c = e.content { x.content = c }
            }
        } catch {
            report.status = .taskFailed
            report.error = .with {
                $0.type = .taskFailure; $0.message = "\(error)"
            }
        }
        report.time = Google_Protobuf_Timestamp(date: Date())
        if let log = context.logOutput { report.logOutput = .with { $0.str = log } }
        return report
    }

    struct InputError: Error { var message: String }
    struct OutputError: Error { var message: String }

    static func input<T: LHTaskValue>(_ values: [Littlehorse_VariableValue], _ i: Int, _ names: [String], as: T.Type)
        throws -> T
    {
        do {
            return try T(lhValue: values[i])
        } catch {
            throw InputError(message: "input '\(names[i])': \(error)")
        }
    }

    static func output<R: LHTaskValue>(_ value: R) throws -> Littlehorse_VariableValue {
        do {
            return try value.lhValue()
        } catch {
            throw OutputError(message: "output of type \(R.self) does not convert: \(error)")
        }
    }
}

/// The connection a task came on, set once it is connected (tasks come
/// only after the subscription, so they always see it set).
final class ConnectionBox: Sendable {
    private let box = NIOLockedValueBox<LHWireConnection?>(nil)
    var connection: LHWireConnection? {
        get { box.withLockedValue { $0 } }
        set { box.withLockedValue { $0 = newValue } }
    }
}

/// A worker's tasks, each from its start until its report is settled
/// (answered, refused, or dropped when stopping): cancellable together,
/// listed when the worker subscribes again, and waited for before it stops.
final class RunningTasks: Sendable {
    private struct State {
        /// Started and not settled, with the attempt each holds.
        var live: [Int: Lhwire_HeldTask] = [:]
        /// The live ones' tasks, for cancelling.
        var tasks: [Int: Task<Void, Never>] = [:]
        var next = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
        var cancelled = false
    }
    private let state = NIOLockedValueBox(State())

    /// Runs `body` in a task of its own, started at once on the calling
    /// thread (`Task.immediate`): a task pushed by the server runs on the
    /// connection's event loop until it first suspends, and its report is
    /// written from there, with no thread woken in between. `body` calls
    /// `settled` once, when what it started is over (possibly after the
    /// task itself returned).
    func start(
        held: Lhwire_HeldTask = .init(),
        _ body: @escaping @Sendable (_ settled: @escaping @Sendable () -> Void) async -> Void
    ) {
        let id = state.withLockedValue { s in
            defer { s.next += 1 }
            s.live[s.next] = held
            return s.next
        }
        // Not under the lock: the body may settle before `immediate` returns.
        let task = Task.immediate { await body { self.finish(id) } }
        state.withLockedValue { s in
            guard s.live[id] != nil else { return }
            s.tasks[id] = task
            if s.cancelled { task.cancel() }
        }
    }

    private func finish(_ id: Int) {
        let waiters = state.withLockedValue { s -> [CheckedContinuation<Void, Never>] in
            s.live[id] = nil
            s.tasks[id] = nil
            guard s.live.isEmpty else { return [] }
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    /// The attempts of the tasks not settled yet (running, or reported
    /// without an answer), in start order.
    func held() -> [Lhwire_HeldTask] {
        state.withLockedValue { s in s.live.sorted { $0.key < $1.key }.map(\.value) }
            .filter { !$0.taskRunID.taskGuid.isEmpty }
    }

    /// Whether ``cancelAll()`` was called (the worker is stopping).
    var isCancelled: Bool { state.withLockedValue { $0.cancelled } }

    func cancelAll() {
        let tasks = state.withLockedValue { s in
            s.cancelled = true
            return Array(s.tasks.values)
        }
        for t in tasks { t.cancel() }
    }

    /// Returns once no task is running or waiting for its report's answer.
    func settled() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLockedValue { s -> Bool in
                if s.live.isEmpty { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}
