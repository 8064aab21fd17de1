import LHProto
import LHWireProto

/// Where a worker's tasks go: the connection of a worker of our protocol, or
/// the response stream of a gRPC `PollTask`.
enum WorkerPush: Sendable {
    case wire(LHResponder)
    case stream(AsyncStream<Littlehorse_ScheduledTask>.Continuation)

    /// Sends a task made TASK_RUNNING (durably) for this worker.
    func send(_ task: Littlehorse_ScheduledTask) {
        switch self {
        case .wire(let responder): responder.yield(Lhwire_Envelope(id: 0, .scheduledTask(task)))
        case .stream(let continuation): continuation.yield(task)
        }
    }
}
