// Made by scripts/make-unsupported-fields.py from LittleHorse's descriptors
// (PyPI littlehorse-client) and proto/; do not edit.

/// Fields of LittleHorse's model that this server does not implement, by
/// message and number: the names the gRPC front gives a refused field.
enum UnsupportedFields {
    static let names: [String: [Int: String]] = [
        "littlehorse.ExternalEventDef": [5: "correlated_event_config"],
        "littlehorse.Node": [18: "run_child_wf", 19: "wait_for_child_wf"],
        "littlehorse.NodeRun": [20: "user_task", 21: "start_multiple_threads", 22: "throw_event", 23: "wait_for_condition", 24: "run_child_wf", 25: "wait_for_child_wf"],
        "littlehorse.PutExternalEventDefRequest": [4: "correlated_event_config"],
        "littlehorse.ReportTaskRun": [9: "total_checkpoints"],
        "littlehorse.ScheduledTask": [7: "total_observed_checkpoints"],
        "littlehorse.TaskRun": [11: "total_checkpoints"],
        "littlehorse.TaskRunSource": [2: "user_task_trigger"],
        "littlehorse.TypeDefinition": [5: "struct_def_id", 6: "inline_array_def", 7: "inline_struct_def", 8: "inline_map_def"],
        "littlehorse.UserTaskNode": [4: "actions"],
        "littlehorse.VariableAssignment": [8: "lh_path", 9: "struct_builder", 10: "size_of", 11: "map_builder"],
        "littlehorse.VariableMutation": [7: "lhs_lh_path"],
        "littlehorse.VariableMutation.NodeOutputSource": [11: "lh_path"],
        "littlehorse.VariableValue": [11: "struct", 12: "array", 13: "map"],
        "littlehorse.WfRun": [12: "workflow_migration_plan_id", 13: "migration_variables", 14: "thread_run_queue"],
        "littlehorse.WfSpec": [8: "migration"],
    ]
}
