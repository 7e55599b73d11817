"""Submit-to-start latency and idle CPU of an agent: woken by each send, polling only, Huey's polling.

For each variant an agent (2 thread workers) starts in its own process on a fresh home and
sits idle for ``--idle`` seconds; its CPU use (utime + stime from ``/proc/<pid>/stat``, all
threads, heartbeats included) is measured over the last ``--cpu-window`` seconds of that
idle time, as a percentage of one core. Then ``--jobs`` single-task ``sleep`` jobs
(``seconds=0``) are submitted one at a time, a random 0.5-2 s apart, each after the previous
one finished; the latency of one is from just before ``submit`` to the task's
``tasks.started_at`` in the store (both ``time.time()`` on this machine).

Variants:

* ``agent``  ``jobmanager agent`` as users run it: ``Polling()`` (the agent's defaults), its idle
  workers woken by every send (``jobmanager/engine/wake.py``) and polling every 0.5 s at most.
* ``poll``   the same agent never woken: it polls 5 ms growing to 50 ms (the agent before wake-ups).
* ``huey``   the same agent with Huey's default polling, ``Polling(0.1, 10, 1.15)``, never woken.

Goals for ``agent`` (issue 18): median < 20 ms, p95 < 50 ms, idle CPU < 1 % of a core. Run::

    .venv/bin/python benchmarks/bench_latency.py               # --idle 60, about 6 minutes
    .venv/bin/python benchmarks/bench_latency.py --idle 5 --cpu-window 5 --jobs 10   # quick
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    cpu_seconds,
    machine,
    median,
    percentile,
    start_agent_cli,
    start_agent_polling,
    stop,
    wait_registered,
)

from jobmanager import JobManager  # noqa: E402
from jobmanager.engine.agent import Polling  # noqa: E402

HUEY_DEFAULT = (0.1, 10.0, 1.15)  # huey_consumer's -d, -m, -b defaults
FINISHED = ("completed", "completed_with_errors", "failed", "cancelled")


@dataclass
class Result:
    variant: str
    polling: tuple[float, float, float]
    idle_cpu_pct: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, in submit order
    submit_s: list[float] = field(default_factory=list)  # time spent inside submit()


def _poll(con: sqlite3.Connection, sql: str, args: tuple[object, ...], every: float, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while True:
        row = con.execute(sql, args).fetchone()
        if row is not None and row[0] is not None:
            return row[0]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {sql} {args}")
        time.sleep(every)


def run_variant(variant: str, args: argparse.Namespace, rng: random.Random) -> Result:
    default = Polling()
    polling = HUEY_DEFAULT if variant == "huey" else (default.initial_delay, default.max_delay, default.backoff)
    res = Result(variant, polling)
    tmp = Path(tempfile.mkdtemp(prefix=f"jmlat-{variant}-"))
    jm = JobManager.init(tmp / "home")
    jm.job_types()  # import the job types now, not inside the first measured submit
    if variant == "agent":
        proc = start_agent_cli(jm.home.path, "lat", args.workers, tmp / "agent.log")
    else:
        proc = start_agent_polling(jm.home.path, "lat", args.workers, polling, tmp / "agent.log", wake=False)
    con = sqlite3.connect(f"file:{jm.home.store_path}?mode=ro", uri=True, timeout=30)
    try:
        wait_registered(jm, "lat", proc)
        window = min(args.cpu_window, args.idle)
        time.sleep(max(0.0, args.idle - window))
        cpu0, w0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(window)
        cpu1, w1 = cpu_seconds(proc.pid), time.monotonic()
        res.idle_cpu_pct = 100 * (cpu1 - cpu0) / (w1 - w0)
        for i in range(args.jobs):
            if i:
                time.sleep(rng.uniform(args.gap_min, args.gap_max))
            t0 = time.time()
            job_id = jm.submit("sleep", {"tasks": 1, "seconds": 0}, name=f"latency {i + 1}")
            res.submit_s.append(time.time() - t0)
            started = _poll(con, "SELECT started_at FROM tasks WHERE job_id = ?", (job_id,), 0.005, 60)
            res.latencies.append(float(started) - t0)  # type: ignore[arg-type]
            state = _poll(con, f"SELECT state FROM jobs WHERE id = ? AND state IN {FINISHED!r}", (job_id,),
                          0.01, 60)
            if state != "completed":
                raise RuntimeError(f"latency job {job_id} ended {state}")
        return res
    finally:
        con.close()
        stop(proc)
        jm.close()
        if args.keep:
            print(f"#   kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--idle", type=float, default=60, help="seconds the agent sits idle first (default 60)")
    ap.add_argument("--cpu-window", type=float, default=20, help="idle CPU window, the end of --idle (default 20)")
    ap.add_argument("--jobs", type=int, default=30, help="single-task jobs per variant (default 30)")
    ap.add_argument("--gap-min", type=float, default=0.5, help="shortest random gap between jobs, s")
    ap.add_argument("--gap-max", type=float, default=2.0, help="longest random gap between jobs, s")
    ap.add_argument("--workers", type=int, default=2, help="thread workers (default 2)")
    ap.add_argument("--variants", default="agent,poll,huey", help="comma list of agent, poll, huey (default all)")
    ap.add_argument("--seed", type=int, default=1, help="random seed of the gaps")
    ap.add_argument("--keep", action="store_true", help="keep the temporary homes")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - {"agent", "poll", "huey"}:
        ap.error("variants are: agent, poll, huey")

    print(f"# latency: idle {args.idle:g} s, idle CPU over the last {min(args.cpu_window, args.idle):g} s, "
          f"{args.jobs} single-task jobs {args.gap_min:g}-{args.gap_max:g} s apart, {args.workers} thread workers")
    print(f"# {machine()}")
    results = []
    for v in variants:
        r = run_variant(v, args, random.Random(args.seed))
        results.append(r)
        ms = [1000 * x for x in r.latencies]
        print(f"{v:5s} polling (initial {r.polling[0]:g} s, max {r.polling[1]:g} s, backoff {r.polling[2]:g}):"
              f" idle CPU {r.idle_cpu_pct:.2f} % of a core")
        print(f"      latencies ms: {' '.join(f'{x:.0f}' for x in ms)}")
        print(f"      submit() itself: median {1000 * median(r.submit_s):.1f} ms", flush=True)

    print()
    print(f"{'variant':7s} {'first':>8s} {'median':>8s} {'p95':>8s} {'max':>8s} {'idle CPU':>9s}")
    for r in results:
        ms = [1000 * x for x in r.latencies]
        print(f"{r.variant:7s} {ms[0]:6.0f}ms {median(ms):6.1f}ms {percentile(ms, 95):6.1f}ms {max(ms):6.0f}ms"
              f" {r.idle_cpu_pct:8.2f}%")
    for r in results:
        if r.variant == "agent":
            ms = [1000 * x for x in r.latencies]
            ok = median(ms) < 20 and percentile(ms, 95) < 50 and r.idle_cpu_pct < 1
            print(f"agent goals (median < 20 ms, p95 < 50 ms, idle CPU < 1 %): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
