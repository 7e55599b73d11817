"""What-if throughput: the managed run of ``bench_throughput.py`` with engine changes patched in.

Used to find where an agent's time per task goes without editing the engine: each
experiment starts an agent whose process monkeypatches one or more parts before it
runs, then times one ``sleep`` job of ``--tasks`` trivial tasks (submit to ``finished_at``)
and reads the agent's CPU per task. Experiments (combine with ``+``):

* ``stock``         the engine as it is
* ``queue-normal``  the Huey queue with ``PRAGMA synchronous=NORMAL`` (no fsync per dequeue)
* ``no-task-logs``  no per-task log file (records go to the agent log instead)
* ``one-log-file``  per-task capture kept, but into one file per worker thread (no file created per task)
* ``no-events``     no rows in ``events``
* ``no-cancel-read`` no ``cancel_requested`` read after a task that never asked
* ``tx-lock``       store write transactions serialized by a process lock (no SQLite busy-wait sleeps)
* ``trace``         count SQL statements per task in the store and the queue (prints them)

Run::

    .venv/bin/python benchmarks/whatif_throughput.py stock queue-normal queue-normal+no-task-logs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import PYTHON, cpu_seconds, machine, stop, wait_registered  # noqa: E402

EXPERIMENTS = ("stock", "queue-normal", "no-task-logs", "one-log-file", "no-events", "no-cancel-read", "tx-lock",
               "trace")


def patch(exp: set[str], home: str) -> None:
    """Apply the experiments in this (agent) process, before the agent starts."""
    from jobmanager.engine import context, logcapture, runner
    from jobmanager.store import sqlite as store_sqlite

    if "queue-normal" in exp:
        from huey.storage import SqliteStorage

        create = SqliteStorage._create_connection

        def normal(self: Any) -> Any:
            conn = create(self)
            conn.execute("pragma synchronous=NORMAL")
            return conn

        SqliteStorage._create_connection = normal  # type: ignore[method-assign]
    if "no-task-logs" in exp:
        class NoCapture:
            def capture(self, path: Path, header: str) -> contextlib.AbstractContextManager[None]:
                return contextlib.nullcontext()

        runner.router = lambda: NoCapture()  # type: ignore[assignment,return-value]
    if "one-log-file" in exp:
        capture = logcapture.TaskLogRouter.capture

        def same_file(self: Any, path: Path, header: str) -> Any:
            return capture(self, Path(home) / "logs" / f"worker-{threading.get_ident()}.log", header)

        logcapture.TaskLogRouter.capture = same_file  # type: ignore[method-assign]
    if "no-events" in exp:
        store_sqlite.SQLiteStore._event = staticmethod(lambda c, kind, **kw: None)  # type: ignore[method-assign]
    if "no-cancel-read" in exp:
        context.CANCEL_CHECK_EVERY_S = 1e9  # the first check after a task is due only after this
    if "tx-lock" in exp:
        lock = threading.Lock()
        tx = store_sqlite.SQLiteStore._tx

        @contextlib.contextmanager
        def locked_tx(self: Any) -> Any:
            with lock, tx(self) as c:
                yield c

        store_sqlite.SQLiteStore._tx = locked_tx  # type: ignore[method-assign]
    if "trace" in exp:
        import atexit

        from huey.storage import SqliteStorage

        counts: Counter[str] = Counter()
        guard = threading.Lock()

        def tracer(db: str) -> Any:
            def cb(sql: str) -> None:
                words = sql.split()
                head = words[0].upper() if words else "?"
                for kw in ("INTO", "UPDATE", "FROM"):
                    up = [w.upper() for w in words]
                    if kw in up and up.index(kw) + 1 < len(words):
                        head += " " + words[up.index(kw) + 1].lower()
                        break
                with guard:
                    counts[f"{db}: {head}"] += 1
            return cb

        conn = store_sqlite.SQLiteStore._conn

        def traced(self: Any) -> Any:
            new = getattr(self._local, "conn", None) is None
            c = conn(self)
            if new:
                c.set_trace_callback(tracer("store"))
            return c

        store_sqlite.SQLiteStore._conn = traced  # type: ignore[method-assign]
        create2 = SqliteStorage._create_connection

        def traced_queue(self: Any) -> Any:
            c = create2(self)
            c.set_trace_callback(tracer("queue"))
            return c

        SqliteStorage._create_connection = traced_queue  # type: ignore[method-assign]
        atexit.register(lambda: Path(home, "trace.json").write_text(json.dumps(counts)))


def agent_main() -> None:
    """Subprocess entry: argv = HOME NAME WORKERS EXPERIMENT."""
    from jobmanager.engine.agent import Agent
    from jobmanager.home import Home

    home, name, workers, exp = sys.argv[1], sys.argv[2], int(sys.argv[3]), set(sys.argv[4].split("+"))
    patch(exp, home)
    agent = Agent(Home.open(home), name=name, workers=workers)
    agent.prepare()
    agent.run()


def run(exp: str, n: int, workers: int) -> tuple[float, float, dict[str, int]]:
    from jobmanager import JobManager

    tmp = Path(tempfile.mkdtemp(prefix="jmwhatif-"))
    try:
        jm = JobManager.init(tmp / "home")
        code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import whatif_throughput as w; w.agent_main()"
        with open(tmp / "agent.log", "ab") as log:
            proc = subprocess.Popen([PYTHON, "-c", code, str(tmp / "home"), "bench", str(workers), exp],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        try:
            wait_registered(jm, "bench", proc)
            cpu0, t0 = cpu_seconds(proc.pid), time.time()
            job_id = jm.submit("sleep", {"tasks": n, "seconds": 0}, name="whatif")
            while (job := jm.store.get_job(job_id)).state not in ("completed", "failed", "completed_with_errors"):
                if proc.poll() is not None:
                    raise RuntimeError(f"agent died; see {tmp / 'agent.log'}")
                time.sleep(0.1)
            cpu1 = cpu_seconds(proc.pid)
            if job.state != "completed" or job.finished_at is None:
                raise RuntimeError(f"job ended {job.state}: {job.error}")
        finally:
            stop(proc)
            jm.close()
        trace = tmp / "home" / "trace.json"
        counts = json.loads(trace.read_text()) if trace.exists() else {}
        return n / (job.finished_at - t0), 1000 * (cpu1 - cpu0) / n, counts
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiments", nargs="+", help="e.g. stock queue-normal queue-normal+no-task-logs")
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for e in args.experiments:
        bad = set(e.split("+")) - set(EXPERIMENTS)
        if bad:
            ap.error(f"unknown experiment {', '.join(sorted(bad))}; choose from {', '.join(EXPERIMENTS)}")
    print(f"# what-if: {args.tasks} trivial tasks in one job, {args.workers} thread workers, {args.rounds} rounds")
    print(f"# {machine()}")
    rates: dict[str, list[float]] = {e: [] for e in args.experiments}
    cpus: dict[str, list[float]] = {e: [] for e in args.experiments}
    for rnd in range(1, args.rounds + 1):
        for e in args.experiments:
            rate, cpu, counts = run(e, args.tasks, args.workers)
            rates[e].append(rate)
            cpus[e].append(cpu)
            print(f"round {rnd} {e:40s} {rate:8.1f} tasks/s  cpu {cpu:5.2f} ms/task", flush=True)
            for key in sorted(counts):
                if counts[key] >= args.tasks / 2:
                    print(f"    {key:32s} {counts[key] / args.tasks:5.2f} per task")
    print()
    base = statistics.median(rates[args.experiments[0]])
    print(f"{'experiment':40s} {'median tasks/s':>14s} {'cpu ms/task':>11s}  vs {args.experiments[0]}")
    for e in args.experiments:
        m = statistics.median(rates[e])
        print(f"{e:40s} {m:14.1f} {statistics.median(cpus[e]):11.2f}  x{m / base:.2f}")


if __name__ == "__main__":
    main()
