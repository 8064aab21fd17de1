"""Seed 003's walkthrough with LittleHorse's Python client instead of lhctl,
through lh-server's gRPC front (the WfSpec and its workers are the Swift
example's, on our own protocol). Prints the variable as lhctl would (every
field: protojson's EmitUnpopulated) between the lines BEGIN VARIABLE and
END VARIABLE, for the caller to compare with the seed's text.
"""
import json
import sys
import time

from google.protobuf.json_format import MessageToJson
from littlehorse.config import LHConfig
from littlehorse.model import (
    ExternalEventDefId,
    GetLatestWfSpecRequest,
    LHStatus,
    ListTaskRunsRequest,
    PutExternalEventRequest,
    RunWfRequest,
    ThreadType,
    VariableId,
    VariableValue,
    WfRunId,
)


def until(what, check, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def main() -> None:
    stub = LHConfig().stub()
    wf_run = WfRunId(id="my-wf")
    # lhctl run collect-underpants --wfRunId my-wf all-underpants '[]'
    spec = stub.GetLatestWfSpec(GetLatestWfSpecRequest(name="collect-underpants"))
    assert "all-underpants" in [v.var_def.name for v in spec.thread_specs["entrypoint"].variable_defs], spec
    run = stub.RunWf(RunWfRequest(wf_spec_name="collect-underpants", id="my-wf",
                                  variables={"all-underpants": VariableValue(json_arr="[]")}))
    assert run.status == LHStatus.RUNNING, run
    until("my-wf waiting for done-collecting-underpants",
          lambda: stub.GetWfRun(wf_run).thread_runs[0].current_node_position == 2)

    def post(event, content):
        stub.PutExternalEvent(PutExternalEventRequest(
            wf_run_id=wf_run, external_event_def_id=ExternalEventDefId(name=event), content=VariableValue(str=content)))

    def handlers_done():
        return len([t for t in stub.GetWfRun(wf_run).thread_runs
                    if t.type == ThreadType.INTERRUPT and t.status == LHStatus.COMPLETED])

    def variable():
        return stub.GetVariable(VariableId(wf_run_id=wf_run, thread_run_number=0, name="all-underpants"))

    # lhctl postEvent my-wf underpant-collected STR obiwan
    post("underpant-collected", "obiwan")
    until("the first handler", lambda: handlers_done() == 1)
    # lhctl get variable my-wf 0 all-underpants
    print("BEGIN VARIABLE")
    print(MessageToJson(variable(), always_print_fields_with_no_presence=True))
    print("END VARIABLE", flush=True)

    post("underpant-collected", "anakin")
    post("underpant-collected", "yoda")
    until("three handlers", lambda: handlers_done() == 3)
    assert json.loads(variable().value.json_arr) == ["obiwan", "anakin", "yoda"], variable()

    # lhctl postEvent my-wf done-collecting-underpants STR "done!"
    post("done-collecting-underpants", "done!")
    until("my-wf COMPLETED", lambda: stub.GetWfRun(wf_run).status == LHStatus.COMPLETED)
    profit = [t for t in stub.ListTaskRuns(ListTaskRunsRequest(wf_run_id=wf_run)).results
              if t.task_def_id.name == "profit"][0]
    assert profit.attempts[-1].output.str == "Collected 3 underpants!", profit
    print("seed walkthrough: done")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}")
        sys.exit(1)
