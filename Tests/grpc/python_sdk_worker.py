"""LittleHorse's Python SDK task workers, as their own process (started by
PythonSDKTests beside a Swift worker of our protocol):
  greet(name) -> "hello <name>", logging "greeting <name> at <unix ns>"
  hold(name)  -> waits until the file $HOLD_GATE_DIR/<wfRunId> exists, then
                 "held <name>" (for halting while a worker holds a task)
  mixed(input) -> "python:<input>" (the Swift worker serves the same TaskDef)
It registers greet and hold (mixed is the Swift worker's), prints
"python workers ready" and serves until killed. PYTHON_TASKS (comma-
separated) picks the tasks it serves; all three by default.
"""
import asyncio
import os
import time

import littlehorse
from littlehorse.config import LHConfig
from littlehorse.worker import LHTaskWorker, WorkerContext

GATES = os.environ.get("HOLD_GATE_DIR", "/tmp")


async def greet(name: str, ctx: WorkerContext) -> str:
    ctx.log(f"greeting {name} at {time.time_ns()}")
    return f"hello {name}"


async def hold(name: str, ctx: WorkerContext) -> str:
    gate = os.path.join(GATES, ctx.wf_run_id.id)
    print(f"hold: {ctx.wf_run_id.id} waiting", flush=True)
    while not os.path.exists(gate):
        await asyncio.sleep(0.02)
    return f"held {name}"


async def mixed(input: str) -> str:
    return f"python:{input}"


async def main() -> None:
    config = LHConfig()
    littlehorse.create_task_def(greet, "greet", config)
    littlehorse.create_task_def(hold, "hold", config)
    tasks = {"greet": greet, "hold": hold, "mixed": mixed}
    wanted = os.environ.get("PYTHON_TASKS", "greet,hold,mixed").split(",")
    workers = [LHTaskWorker(tasks[name], name, config) for name in wanted]
    print("python workers ready", flush=True)
    await littlehorse.start(*workers)


if __name__ == "__main__":
    asyncio.run(main())
