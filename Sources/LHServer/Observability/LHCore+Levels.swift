import LHProto

extension LHCore {
    /// Sets the gauges that are levels rather than counts, read now: task
    /// queue depth and connected workers per TaskDef (every TaskDef, zero
    /// included), timers pending, WfRuns in the store by status.
    func readLevels() async {
        let depths = dispatcher.queueDepths()
        let workers = dispatcher.workerCounts()
        for name in Set(admin.metadata.taskDefs.keys).union(depths.keys).union(workers.keys) {
            metrics.setLevel("lh_task_queue_depth", [("task_def", name)], depths[name] ?? 0)
            metrics.setLevel("lh_task_workers_connected", [("task_def", name)], workers[name] ?? 0)
        }
        metrics.setLevel("lh_timers_pending", [], await timers.pendingCount)
        do {
            let counts = try store.wfRunCounts()
            for status in [Littlehorse_LHStatus.starting, .running, .completed, .halting, .halted, .error, .exception] {
                metrics.setLevel("lh_wf_runs", [("status", status.protoName)], counts[status] ?? 0)
            }
        } catch {
            logger.warning("could not count WfRuns for /metrics", metadata: ["lh.error": "\(error)"])
        }
    }
}
