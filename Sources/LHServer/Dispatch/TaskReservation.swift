import Foundation

/// A worker's room taken for one TaskRun attempt.
struct TaskReservation: Sendable {
    let connection: ObjectIdentifier
    let workerId: String
    let taskDef: String
    /// "<wfRunId>/<guid>"
    let key: String
    let push: WorkerPush
}
