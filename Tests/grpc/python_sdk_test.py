"""LittleHorse's own Python SDK (PyPI littlehorse-client) against lh-server's
gRPC front, as a LittleHorse user would drive it: it registers WfSpecs (one
with an interrupt) and drives WfRuns with its stub, while the SDK's task
workers run in their own process (python_sdk_worker.py) beside a Swift worker
of our protocol. Configured by LittleHorse's LHC_* variables and
HOLD_GATE_DIR (set by the caller). Exits 0 when every check passed.
"""
import json
import os
import sys
import time

import grpc
import littlehorse
from littlehorse.config import LHConfig
from littlehorse.model import (
    ExternalEventDefId,
    PutExternalEventRequest,
    RunWfRequest,
    VariableId,
    VariableValue,
    WfRunId,
    ListTaskRunsRequest,
    LHStatus,
    TaskStatus,
    ThreadType,
    VariableMutationType,
    PutWfSpecRequest,
    ThreadSpec,
    ThreadVarDef,
    VariableDef,
    TypeDefinition,
    StructDefId,
    StopWfRunRequest,
    ResumeWfRunRequest,
)
from littlehorse.workflow import Workflow, WorkflowThread
from google.protobuf.empty_pb2 import Empty
from google.protobuf.json_format import MessageToJson


def on_poke(wf: WorkflowThread) -> None:
    who = wf.declare_str("INPUT")
    wf.mutate(wf.find_variable("pokes"), VariableMutationType.ADD, who)


def entry(wf: WorkflowThread) -> None:
    name = wf.declare_str("name")
    wf.declare_json_arr("pokes", [])
    wf.execute("greet", name)
    wf.wait_for_event("done", auto_register=True, return_type=str)
    wf.add_interrupt_handler("poke", on_poke).with_event_type(str)


def halting(wf: WorkflowThread) -> None:
    wf.execute("hold", wf.declare_str("name"))


def mixing(wf: WorkflowThread) -> None:
    wf.execute("mixed", wf.declare_str("input"))


def until(what, check, timeout=30.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except grpc.RpcError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")


def expect_code(what, code, call):
    try:
        call()
    except grpc.RpcError as e:
        assert e.code() == code, f"{what}: {e.code()} ({e.details()}), expected {code}"
        print(f"ok: {what} -> {code.name}: {e.details()}")
        return
    raise AssertionError(f"{what}: no error, expected {code}")


def main() -> None:
    config = LHConfig()
    for wf in (Workflow("grpc-front", entry), Workflow("grpc-halt", halting), Workflow("grpc-mixed", mixing)):
        littlehorse.create_workflow_spec(wf, config)
    stub = config.stub()
    drive(stub)
    drive_halt(stub)
    drive_mixed(stub)
    drive_errors(stub)


def drive(stub) -> None:
    version = stub.GetServerVersion(Empty())
    print(f"ok: server version {version.major_version}.{version.minor_version}")
    stub.RunWf(RunWfRequest(wf_spec_name="grpc-front", id="g1", variables={"name": VariableValue(str="obiwan")}))

    def task_done():
        runs = stub.ListTaskRuns(ListTaskRunsRequest(wf_run_id=WfRunId(id="g1"))).results
        return runs if runs and runs[0].status == TaskStatus.TASK_SUCCESS else None

    runs = until("the Python worker's report", task_done)
    attempt = runs[0].attempts[-1]
    assert attempt.output.str == "hello obiwan", attempt
    assert attempt.task_worker_id == "py-worker-1", attempt.task_worker_id
    assert "greeting obiwan" in attempt.log_output.str, attempt.log_output
    print("ok: TaskRun TASK_SUCCESS from py-worker-1 with its output and log")

    for who in ("anakin", "yoda"):
        stub.PutExternalEvent(PutExternalEventRequest(
            wf_run_id=WfRunId(id="g1"), external_event_def_id=ExternalEventDefId(name="poke"),
            content=VariableValue(str=who)))

    def pokes():
        v = stub.GetVariable(VariableId(wf_run_id=WfRunId(id="g1"), thread_run_number=0, name="pokes"))
        return json.loads(v.value.json_arr) == ["anakin", "yoda"]

    until("both interrupts' mutations", pokes)
    wf = stub.GetWfRun(WfRunId(id="g1"))
    handlers = [t for t in wf.thread_runs if t.type == ThreadType.INTERRUPT]
    assert len(handlers) == 2 and all(t.status == LHStatus.COMPLETED for t in handlers), wf
    assert wf.thread_runs[0].status == LHStatus.RUNNING, wf.thread_runs[0]
    print("ok: two INTERRUPT threads COMPLETED, the entrypoint RUNNING again")

    stub.PutExternalEvent(PutExternalEventRequest(
        wf_run_id=WfRunId(id="g1"), external_event_def_id=ExternalEventDefId(name="done"),
        content=VariableValue(str="done!")))
    until("the WfRun's completion", lambda: stub.GetWfRun(WfRunId(id="g1")).status == LHStatus.COMPLETED)
    print("ok: WfRun COMPLETED")
    v = stub.GetVariable(VariableId(wf_run_id=WfRunId(id="g1"), thread_run_number=0, name="pokes"))
    print("variable pokes: " + MessageToJson(v))


def drive_halt(stub) -> None:
    """StopWfRun while the Python worker holds the task: HALTING until it reports."""
    stub.RunWf(RunWfRequest(wf_spec_name="grpc-halt", id="h1", variables={"name": VariableValue(str="leia")}))
    until("the Python worker holding h1's task", lambda: any(
        t.status == TaskStatus.TASK_RUNNING
        for t in stub.ListTaskRuns(ListTaskRunsRequest(wf_run_id=WfRunId(id="h1"))).results))
    stub.StopWfRun(StopWfRunRequest(wf_run_id=WfRunId(id="h1")))
    time.sleep(0.5)
    wf = stub.GetWfRun(WfRunId(id="h1"))
    assert wf.status == LHStatus.HALTING and wf.thread_runs[0].status == LHStatus.HALTING, wf
    print("ok: stopped with the task in the Python worker's hands: HALTING")
    open(os.path.join(os.environ["HOLD_GATE_DIR"], "h1"), "w").close()
    until("HALTED after the report", lambda: stub.GetWfRun(WfRunId(id="h1")).status == LHStatus.HALTED)
    runs = stub.ListTaskRuns(ListTaskRunsRequest(wf_run_id=WfRunId(id="h1"))).results
    assert runs[0].status == TaskStatus.TASK_SUCCESS and runs[0].attempts[-1].output.str == "held leia", runs
    print("ok: HALTED once the worker reported")
    stub.ResumeWfRun(ResumeWfRunRequest(wf_run_id=WfRunId(id="h1")))
    until("COMPLETED after resume", lambda: stub.GetWfRun(WfRunId(id="h1")).status == LHStatus.COMPLETED)
    print("ok: resumed and COMPLETED")


def drive_mixed(stub) -> None:
    """A Python worker and a Swift worker serve one TaskDef: both take tasks."""
    ids = [f"m{i}" for i in range(24)]
    for i in ids:
        stub.RunWf(RunWfRequest(wf_spec_name="grpc-mixed", id=i, variables={"input": VariableValue(str=i)}))
    outputs = {}
    for i in ids:
        until(f"{i} COMPLETED", lambda: stub.GetWfRun(WfRunId(id=i)).status == LHStatus.COMPLETED)
        run = stub.ListTaskRuns(ListTaskRunsRequest(wf_run_id=WfRunId(id=i))).results[0]
        outputs[i] = (run.attempts[-1].task_worker_id, run.attempts[-1].output.str)
    by = {}
    for i, (worker, out) in outputs.items():
        by.setdefault(worker, []).append(out)
        assert out in (f"python:{i}", f"echo:{i}"), (i, out)
    assert len(by) == 2, f"one worker took every task: {by}"
    print("ok: one TaskDef served by both workers: " + ", ".join(f"{w} {len(o)}" for w, o in sorted(by.items())))


def drive_errors(stub) -> None:

    expect_code("GetWfRun of a WfRun that does not exist", grpc.StatusCode.NOT_FOUND,
                lambda: stub.GetWfRun(WfRunId(id="nope")))
    expect_code("RunWf of an unknown WfSpec", grpc.StatusCode.NOT_FOUND,
                lambda: stub.RunWf(RunWfRequest(wf_spec_name="ghost")))
    expect_code("Whoami (not served)", grpc.StatusCode.UNIMPLEMENTED, lambda: stub.Whoami(Empty()))
    struct_spec = PutWfSpecRequest(
        name="uses-a-struct", entrypoint_thread_name="entrypoint",
        thread_specs={"entrypoint": ThreadSpec(variable_defs=[ThreadVarDef(var_def=VariableDef(
            name="car", type_def=TypeDefinition(struct_def_id=StructDefId(name="car"))))])})
    try:
        stub.PutWfSpec(struct_spec)
        raise AssertionError("a WfSpec with a struct variable was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "struct_def_id" in e.details(), e
        print(f"ok: a struct variable -> INVALID_ARGUMENT: {e.details()}")

    def stub_of(tenant):
        config = LHConfig()
        config.load({"LHC_TENANT_ID": tenant})
        return config.stub()

    expect_code("a tenant other than default (LHC_TENANT_ID=acme)", grpc.StatusCode.INVALID_ARGUMENT,
                lambda: stub_of("acme").GetWfRun(WfRunId(id="g1")))
    assert stub_of("default").GetWfRun(WfRunId(id="g1")).status == LHStatus.COMPLETED
    print("ok: LHC_TENANT_ID=default accepted")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}")
        sys.exit(1)
    print("python sdk: all checks passed")
