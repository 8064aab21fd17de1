import LHEngine

/// Carries out committed effects (task queues, timers).
protocol EffectSink: Sendable {
    /// Called on the commit thread, in commit order: must not block.
    func carryOut(_ effects: [(String, LHEffect)], deleted: Set<String>)
}

/// Sends committed effects to the dispatcher and the timers: one call to
/// each per group commit, effects in their order.
struct EffectRouter: EffectSink {
    let dispatcher: any EffectSink
    let timers: any EffectSink

    func carryOut(_ effects: [(String, LHEffect)], deleted: Set<String>) {
        var tasks: [(String, LHEffect)] = []
        var timerEffects: [(String, LHEffect)] = []
        for (id, effect) in effects {
            switch effect {
            case .dispatchTask, .withdrawTask: tasks.append((id, effect))
            case .scheduleTimer, .cancelTimer: timerEffects.append((id, effect))
            case .wfRunTerminated: break
            }
        }
        if !tasks.isEmpty || !deleted.isEmpty { dispatcher.carryOut(tasks, deleted: deleted) }
        if !timerEffects.isEmpty || !deleted.isEmpty { timers.carryOut(timerEffects, deleted: deleted) }
    }
}
