import Foundation
import LHClient
import LHProto
import Logging
import NIOConcurrencyHelpers
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
        let _ = 0
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
/// ```swift
/// let collect = LHTaskWorker(config: config, taskDefName: "collect-underpant", inputs: ["owner"]) {
///     (owner: String) async throws -> String in "Successfully collected underpant from \(owner)"
/// }
/// try await collect.registerTaskDef()
/// try await collect.run()
/// ```
public final class LHTaskWorker: Service, Sendable {
    public typealias Handler = @Sendable (WorkerContext, [Littlehorse_VariableValue]) async throws -> Littlehorse_VariableValue?

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
        /// Reports that could not be sent yet (the server was away).
        var unsent: [Littlehorse_ReportTaskRun] = []
        var completed = 0
    }

    /// The erased initialiser the typed overloads call.
    public init(config: LHConfig, taskDefName: String, inputs: [String], inputTypes: [Littlehorse_VariableType],
                outputType: Littlehorse_VariableType?, logger: Logger? = nil, handler: @escaping Handler) {
        precondition(inputs.count == inputTypes.count, "LHTaskWorker '\(taskDefName)': \(inputs.count) input names for \(inputTypes.count) closure parameters")
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
        r.inputVars = zip(inputNames, inputTypes).map { name, type in .with { $0.name = name; $0.typeDef.primitiveType = type } }
        if let outputType { r.returnType = .with { $0.returnType = .with { $0.primitiveType = outputType } } } else { r.returnType = .init() }
        return r
    }

    /// Registers the TaskDef (idempotent when it exists with the same shape).
    @discardableResult
    public func registerTaskDef() async throws -> Littlehorse_TaskDef {
        let client = try await LHClient.connect(config, logger: logger)
        defer { Task { await client.close() } }
        return try await client.putTaskDef(putTaskDefRequest)
    }

    /// Serves until cancelled or graceful shutdown; reconnects with backoff
    /// when the server goes away.
    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            var backoff = 0.1
            while !Task.isCancelled {
                do {
                    try await self.serveOneConnection()
                    backoff = 0.1
                } catch is CancellationError {
                    return
                } catch {
                    if Task.isCancelled { return }
                    self.logger.warning("connection to the server lost; reconnecting", metadata: ["lh.error": "\(error)", "lh.retryIn": "\(backoff)s"])
                }
                try? await Task.sleep(for: .milliseconds(Int(backoff * 1000)))
                backoff = min(backoff * 2, 5)
            }
        }
    }

    private func serveOneConnection() async throws {
        let (tasks, incoming) = AsyncStream<Littlehorse_ScheduledTask>.makeStream()
        let connection = try await LHWireConnection.connect(config.connectionConfiguration(role: .worker), logger: logger) { envelope in
            if case .scheduledTask(let t) = envelope.kind { incoming.yield(t) }
        }
        connection.closeFuture.whenComplete { _ in incoming.finish() }
        defer { Task { await connection.close() } }
        // Results that finished while the server was away go first.
        let unsent = state.withLockedValue { s in defer { s.unsent = [] }; return s.unsent }
        for report in unsent { try await send(report, on: connection) }
        var subscribe = Lhwire_Subscribe()
        subscribe.taskDefID.name = taskDefName
        subscribe.taskWorkerID = config.taskWorkerId
        subscribe.capacity = UInt32(config.numWorkerThreads)
        _ = try await connection.request(.subscribe(subscribe))
        logger.info("subscribed", metadata: [LHLog.taskDef: "\(taskDefName)", "lh.capacity": "\(config.numWorkerThreads)"])
        try await withThrowingDiscardingTaskGroup { group in
            for await task in tasks {
                group.addTask {
                    let report = await self.execute(task)
                    do {
                        try await self.send(report, on: connection)
                    } catch {
                        self.state.withLockedValue { $0.unsent.append(report) }
                    }
                }
            }
        }
        if !Task.isCancelled { throw LHError(.unavailable, "connection closed") }
    }

    private func send(_ report: Littlehorse_ReportTaskRun, on connection: LHWireConnection) async throws {
        do {
            _ = try await connection.request(.reportTask(report))
            state.withLockedValue { $0.completed += 1 }
        } catch let e as LHError where e.code == .notFound || e.code == .invalidArgument {
            // The TaskRun is gone (its WfRun deleted): nothing to retry.
            logger.warning("report refused", metadata: ["lh.error": "\(e)"])
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
                throw InputError(message: "TaskDef '\(taskDefName)' takes \(inputTypes.count) input(s), the TaskRun has \(values.count)")
            }
            let output = try await handler(context, values)
            report.status = .taskSuccess
            if let output { report.output = output }
        } catch let e as InputError {
            report.status = .taskInputVarSubError
            report.error = .with { $0.type = .varSubError; $0.message = e.message }
        } catch let e as OutputError {
            report.status = .taskOutputSerdeError
            report.error = .with { $0.type = .taskError; $0.message = e.message }
        } catch let e as LHTaskException {
            report.status = .taskException
            report.exception = .with { x in
                x.name = e.name
                x.message = e.message
                if let c = e.content { x.content = c }
            }
        } catch {
            report.status = .taskFailed
            report.error = .with { $0.type = .taskFailure; $0.message = "\(error)" }
        }
        report.time = Google_Protobuf_Timestamp(date: Date())
        if let log = context.logOutput { report.logOutput = .with { $0.str = log } }
        return report
    }

    struct InputError: Error { var message: String }
    struct OutputError: Error { var message: String }

    static func input<T: LHTaskValue>(_ values: [Littlehorse_VariableValue], _ i: Int, _ names: [String], as: T.Type) throws -> T {
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
