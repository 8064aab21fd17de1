#!/usr/bin/env python3
"""Throughput and task-to-next-task latency through lh-server's gRPC front,
with LittleHorse's own Python SDK as the workers and the driver (what a
LittleHorse user's Python deployment gets; our own protocol and Swift SDK are
measured by lh-bench). Starts its own lh-server (--grpc-listen, TLS, a
temporary data directory) and worker processes, runs --wfruns WfRuns of a
chain of 5 tasks, prints a table and one JSON line. Task-to-next-task runs
from a task's end as the server recorded it to the worker's start of the
next task as the worker logged it (one machine, one clock).

  swift build -c release && .build-py/bin/python scripts/bench-grpc.py
  (scripts/python-sdk.sh makes .build-py)
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default=os.path.join(ROOT, ".build/release/lh-server"))
    ap.add_argument("--wfruns", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2, help="worker processes")
    ap.add_argument("--threads", type=int, default=64, help="LHW_NUM_WORKER_THREADS of each worker")
    ap.add_argument("--in-flight", type=int, default=64, help="RunWf calls in flight")
    ap.add_argument("--rate", type=float, help="start WfRuns at this rate (per second) instead of all at once")
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="lh-bench-grpc-")
    port, grpc_port = free_port(), free_port()
    server = subprocess.Popen([args.server, "--data-dir", data, "--listen", f"127.0.0.1:{port}",
                               "--grpc-listen", f"127.0.0.1:{grpc_port}", "--log-level", "warning"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    workers = []
    try:
        for line in server.stdout:
            if "gRPC (LittleHorse's service) listening" in line:
                break
        env = dict(os.environ, LHC_API_HOST="localhost", LHC_API_PORT=str(grpc_port), LHC_API_PROTOCOL="TLS",
                   LHC_CA_CERT=os.path.join(data, "tls", "ca.pem"), PYTHON_TASKS="greet",
                   LHW_NUM_WORKER_THREADS=str(args.threads), HOLD_GATE_DIR=data)
        os.environ.update({k: env[k] for k in ("LHC_API_HOST", "LHC_API_PORT", "LHC_API_PROTOCOL", "LHC_CA_CERT")})
        for i in range(args.workers):
            workers.append(subprocess.Popen(
                [sys.executable, os.path.join(ROOT, "Tests/grpc/python_sdk_worker.py")],
                env=dict(env, LHW_TASK_WORKER_ID=f"py-bench-{i}"), stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True))
            for line in workers[-1].stdout:
                if "python workers ready" in line:
                    break
        import littlehorse
        from littlehorse.config import LHConfig
        from littlehorse.model import LHStatus, ListTaskRunsRequest, RunWfRequest, VariableValue, WfRunId
        from littlehorse.workflow import Workflow

        def chain(wf):
            name = wf.declare_str("name")
            for _ in range(5):
                wf.execute("greet", name)

        config = LHConfig()
        littlehorse.create_workflow_spec(Workflow("bench-chain-grpc", chain), config)
        stub = config.stub()
        ids = [f"b{i}" for i in range(args.wfruns)]
        started = time.time()
        def run(i):
            stub.RunWf(RunWfRequest(wf_spec_name="bench-chain-grpc", id=i, variables={"name": VariableValue(str=i)}))

        if args.rate:
            for n, i in enumerate(ids):
                time.sleep(max(0.0, started + n / args.rate - time.time()))
                run(i)
        else:
            with concurrent.futures.ThreadPoolExecutor(args.in_flight) as pool:
                list(pool.map(run, ids))
        sys.stderr.write(f"{len(ids)} WfRuns started in {time.time() - started:.1f} s\n")
        pending = set(ids)
        while pending and time.time() - started < 600:
            for i in list(pending)[:200]:
                if stub.GetWfRun(WfRunId(id=i)).status == LHStatus.COMPLETED:
                    pending.discard(i)
            time.sleep(0.2)
        gaps, first, last = [], None, None
        for i in ids:
            runs = sorted(stub.ListTaskRuns(ListTaskRunsRequest(wf_run_id=WfRunId(id=i))).results,
                          key=lambda t: t.scheduled_at.ToNanoseconds())
            # From the server's receipt of a task's report to the worker's start
            # of the next task (the worker logs its start: "greeting ... at <ns>").
            for a, b in zip(runs, runs[1:]):
                started_ns = int(b.attempts[0].log_output.str.rsplit(" at ", 1)[1])
                gaps.append((started_ns - a.attempts[-1].end_time.ToNanoseconds()) / 1e6)
            for t in runs:
                s, e = t.attempts[0].start_time.ToNanoseconds(), t.attempts[-1].end_time.ToNanoseconds()
                first = s if first is None else min(first, s)
                last = e if last is None else max(last, e)
        tasks = 5 * (len(ids) - len(pending))
        seconds = (last - first) / 1e9 if last and first else float("nan")
        result = {"scenario": "grpc-python-sdk", "wfruns": len(ids), "rate": args.rate, "not_completed": len(pending),
                  "taskruns_per_s": round(tasks / seconds, 1), "workers": args.workers, "threads": args.threads,
                  "task_to_next_task_p50_ms": round(percentile(gaps, 50), 3),
                  "task_to_next_task_p99_ms": round(percentile(gaps, 99), 3),
                  "task_to_next_task_mean_ms": round(statistics.mean(gaps), 3) if gaps else None}
        print(f"TaskRuns/s through the gRPC front     {result['taskruns_per_s']}")
        print(f"task-to-next-task p50 / p99          {result['task_to_next_task_p50_ms']} / "
              f"{result['task_to_next_task_p99_ms']} ms")
        print(f"WfRuns not completed                 {result['not_completed']}")
        print(json.dumps(result, sort_keys=True))
    finally:
        for w in workers:
            w.kill()
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
