import LHProto

extension LHCore {
    /// Sets the gauges that are levels rather than counts, read now: task
    /// queue depth and connected workers per TaskDef (every TaskDef, zero
    /// included), timers pending, WfRuns in the store by status, a cluster's shares.
    func readLevels() async {
        let depths = dispatcher.queueDepths()
        let workers = dispatcher.workerCounts()
        for name in Set(admin.metadata.taskDefs.keys).union(depths.keys).union(workers.keys) {
            metrics.setLevel("lh_task_queue_depth", [("task_def", name)], depths[name] ?? 0)
            metrics.setLevel("lh_task_workers_connected", [("task_def", name)], workers[name] ?? 0)
        }
        metrics.setLevel("lh_timers_pending", [], await timers.pendingCount)
        if let membership = cluster?.membership {
            metrics.setLevel("lh_cluster_partitions", [], membership.partitionCount)
            metrics.setLevel("lh_cluster_partitions_served", [], membership.servedPartitions.count)
            metrics.setLevel("lh_cluster_members_live", [], membership.members.count)
        }
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
