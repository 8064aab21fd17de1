#!/usr/bin/env python3
"""Makes the WfSpec fixtures in this folder with LittleHorse's own Python SDK
(PyPI: littlehorse-client), so that our proto model and DSL are checked
against bytes that no one here wrote.

Run once (the output is committed):
    python3 -m venv .build-py && .build-py/bin/pip install littlehorse-client
    .build-py/bin/python Tests/LHProtoTests/Fixtures/make-fixtures.py

Each workflow gives NAME.json (protobuf JSON as the SDK prints it) and
NAME.bin (the deterministic binary encoding of the same PutWfSpecRequest).
"""
import os

from google.protobuf.json_format import MessageToJson
from littlehorse.model import (Comparator, ExponentialBackoffRetryPolicy,
                               VariableMutationType)
from littlehorse.workflow import SpawnedThreads, Workflow, WorkflowThread

HERE = os.path.dirname(os.path.abspath(__file__))


def collect_underpants(wf: WorkflowThread) -> None:
    """Seed 003's walkthrough, as its Java snippet builds it."""
    all_underpants = wf.declare_json_arr("all-underpants")
    wf.execute("start-underpants-collection")
    wf.wait_for_event("done-collecting-underpants")
    wf.execute("profit", all_underpants)

    def handler(h: WorkflowThread) -> None:
        content = h.declare_str("INPUT")
        h.mutate(all_underpants, VariableMutationType.ADD, content)
        h.execute("collect-underpant", content)

    wf.add_interrupt_handler("underpant-collected", handler)


def kitchen_sink(wf: WorkflowThread) -> None:
    """Many node kinds, assignments and mutations at once."""
    count = wf.declare_int("count").with_default(0)
    name = wf.declare_str("name").required()
    doc = wf.declare_json_obj("doc")
    ratio = wf.declare_double("ratio").with_default(1.5)
    flag = wf.declare_bool("flag").with_default(True)

    out = wf.execute("greet", name, retries=3, timeout_seconds=30,
                     exponential_backoff=ExponentialBackoffRetryPolicy(
                         base_interval_ms=500, max_delay_ms=10000, multiplier=2.0))
    wf.mutate(doc, VariableMutationType.ASSIGN, out)
    wf.sleep(5)

    def body(t: WorkflowThread) -> None:
        t.mutate(count, VariableMutationType.ADD, 1)

    wf.do_while(wf.condition(count, Comparator.LESS_THAN, 3), body)

    def big(t: WorkflowThread) -> None:
        t.execute("greet", wf.format("hello {0}", name))

    def small(t: WorkflowThread) -> None:
        t.mutate(ratio, VariableMutationType.MULTIPLY, 2)

    wf.do_if(wf.condition(doc.with_json_path("$.size"), Comparator.GREATER_THAN, 10), big).do_else(small)

    def child(t: WorkflowThread) -> None:
        t.declare_str("child-input")
        t.execute("greet", "child")
        t.fail("child-failed", "the child gave up")

    spawned = wf.spawn_thread(child, "child-thread", {"child-input": name})
    result = wf.wait_for_threads(SpawnedThreads.from_list(spawned))

    def on_fail(t: WorkflowThread) -> None:
        t.mutate(flag, VariableMutationType.ASSIGN, False)

    result.handle_exception_on_child(on_fail, "child-failed")
    task = wf.execute("greet", "after")
    wf.handle_any_failure(task, on_fail)
    wf.wait_for_event("go-on", timeout=60)
    wf.fail("give-up", "done on purpose")


def write(name, func):
    req = Workflow(name, func).compile()
    with open(os.path.join(HERE, name + ".json"), "w") as f:
        f.write(MessageToJson(req) + "\n")
    with open(os.path.join(HERE, name + ".bin"), "wb") as f:
        f.write(req.SerializeToString(deterministic=True))
    print("wrote", name)


if __name__ == "__main__":
    write("collect-underpants", collect_underpants)
    write("kitchen-sink", kitchen_sink)
