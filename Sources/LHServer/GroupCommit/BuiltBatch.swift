import Foundation
import LHEngine
import LHProto
import LHStore

/// One group commit's jobs run and merged: what is written, what the
/// workers get and what is carried out once it is durable.
struct BuiltBatch: Sendable {
    var number: UInt64
    var epoch: UInt64
    var batch = LHWriteBatch()
    var effects: [(String, LHEffect)] = []
    var deleted = Set<String>()
    var states: [(key: String, value: WfRunState)] = []
    /// The ScheduledTasks to push, made from the batch's final states (nil:
    /// the attempt is no longer the one reserved; its room is given back).
    var pushes: [(TaskReservation, Littlehorse_ScheduledTask?)] = []
    /// What the jobs did (metrics).
    var tally = Tally()
    /// When the reports arrived whose next TaskRuns this batch hands over.
    var reportArrivals: [Date] = []

    init(number: UInt64, epoch: UInt64, stagings: [Staging]) {
        self.number = number
        self.epoch = epoch
        var deliveries: [Staging.Delivery] = []
        for st in stagings {
            deliveries += st.deliveries
            tally.add(st.tally)
            batch.merge(st.batch)
            effects += st.effects
            deleted.formUnion(st.deleted)
            states += st.states.map { ($0.key, $0.value) }
        }
        guard !deliveries.isEmpty else { return }
        var finalStates: [String: WfRunState] = [:]
        for (id, state) in states { finalStates[id] = state }
        pushes = deliveries.map { d in
            let task = finalStates[d.wfRunId]?.scheduledTask(taskGuid: d.taskGuid, attempt: d.attempt)
            let sent = task?.taskRunID.taskGuid == d.taskGuid
            if sent, let arrived = d.reportArrivedAt { reportArrivals.append(arrived) }
            return (d.reservation, sent ? task : nil)
        }
    }
}
