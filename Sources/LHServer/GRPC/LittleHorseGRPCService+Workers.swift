import GRPCCore
import GRPCProtobuf
import LHProto
import SwiftProtobuf

/// The worker RPCs as LittleHorse's SDKs use them: GetTaskDef (registered
/// with the metadata), RegisterTaskWorker every minute, one PollTask stream
/// per host, and ReportTask, which may come on any connection.
extension LittleHorseGRPCService {
    func registerWorkers<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let (admin, advertise) = (self.admin, self.advertise)
        unary(&router, "RegisterTaskWorker") { (r: Littlehorse_RegisterTaskWorkerRequest, metadata) in
            let authority = metadata[stringValues: ":authority"].first(where: { _ in true })
            return try admin.registerTaskWorker(r, advertising: advertise(authority))
        }
        unary(&router, "ReportTask") { (r: Littlehorse_ReportTaskRun, _) in
            try await admin.command(.reportTask(r)) { _ in () }
            return Google_Protobuf_Empty()
        }
        router.registerHandler(
            forMethod: MethodDescriptor(fullyQualifiedService: Self.serviceName, method: "PollTask"),
            deserializer: ProtobufDeserializer<Littlehorse_PollTaskRequest>(),
            serializer: ProtobufSerializer<Littlehorse_PollTaskResponse>()
        ) { request, _ in
            do {
                try Self.checkTenant(request.metadata)
            } catch {
                return StreamingServerResponse(error: Self.rpcError(error, method: "PollTask"))
            }
            return StreamingServerResponse { writer in
                do {
                    try await Self.poll(request.messages, writer: writer, admin: admin)
                } catch {
                    throw Self.rpcError(error, method: "PollTask")
                }
                return [:]
            }
        }
    }

    /// A PollTask stream: each request is room for one task, answered when
    /// the dispatcher hands one over (a long poll: never an empty answer).
    /// The task is TASK_RUNNING, durably, before it is written, as on our
    /// own protocol; the queues are shared with workers of our protocol.
    static func poll(
        _ requests: RPCAsyncSequence<Littlehorse_PollTaskRequest, any Error>,
        writer: RPCWriter<Littlehorse_PollTaskResponse>, admin: AdminService
    ) async throws {
        let stream = LHConnectionToken()
        let (tasks, continuation) = AsyncStream<Littlehorse_ScheduledTask>.makeStream()
        defer {
            admin.stopPolling(stream: stream.id)
            continuation.finish()
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                var polling = false
                for try await poll in requests {
                    try UnknownFields.refuse(in: poll)
                    if !polling {
                        try admin.startPolling(poll, stream: stream.id, push: .stream(continuation))
                        polling = true
                    }
                    admin.poll(poll, stream: stream.id)
                }
            }
            group.addTask {
                for await task in tasks { try await writer.write(.with { $0.result = task }) }
            }
            // Whichever ends first (the worker stopped polling, or it is gone)
            // ends the stream.
            try await group.next()
            group.cancelAll()
        }
    }
}
