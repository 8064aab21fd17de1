"""LittleHorse's own Python SDK (PyPI littlehorse-client) against lh-server's
gRPC front: it registers a TaskDef and a WfSpec with an interrupt, runs its
own task worker, and drives a WfRun with its stub, as a LittleHorse user
would. Configured by LittleHorse's LHC_* variables (set by the caller).
Exits 0 when every check passed; prints what failed otherwise.
"""
import asyncio
import json
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
)
from littlehorse.worker import LHTaskWorker, WorkerContext
from littlehorse.workflow import Workflow, WorkflowThread
from google.protobuf.empty_pb2 import Empty


async def greet(name: str, ctx: WorkerContext) -> str:
    ctx.log(f"greeting {name}")
    return f"hello {name}"


def on_poke(wf: WorkflowThread) -> None:
    who = wf.declare_str("INPUT")
    wf.mutate(wf.find_variable("pokes"), VariableMutationType.ADD, who)


def entry(wf: WorkflowThread) -> None:
    name = wf.declare_str("name")
    wf.declare_json_arr("pokes", [])
    wf.execute("greet", name)
    wf.wait_for_event("done", auto_register=True, return_type=str)
    wf.add_interrupt_handler("poke", on_poke).with_event_type(str)


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


async def main() -> None:
    config = LHConfig()
    littlehorse.create_task_def(greet, "greet", config)
    littlehorse.create_workflow_spec(Workflow("grpc-front", entry), config)
    worker = LHTaskWorker(greet, "greet", config)
    running = asyncio.create_task(littlehorse.start(worker))
    stub = config.stub()
    try:
        await asyncio.to_thread(drive, stub)
    finally:
        worker.stop()
        running.cancel()


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
        asyncio.run(main())
    except AssertionError as e:
        print(f"FAILED: {e}")
        sys.exit(1)
    print("python sdk: all checks passed")
