"""What a time limit costs per task: N trivial tasks with no limit, a soft limit, and a hard limit.

One agent (``jobmanager agent --workers 2``, its own process, a fresh home per variant) runs one ``sleep``
job of ``--tasks`` tasks with ``seconds=0``; time is from just before ``submit`` to the job's
``finished_at``. Variants (run interleaved, round by round):

* ``none``  no limit: tasks run in the agent's worker threads (the baseline).
* ``soft``  ``soft_limit=3600``: still worker threads; each ``ctx.progress``/``ctx.log`` checks the clock.
* ``hard``  ``hard_limit=3600``: each task runs in its own child process (a fork of the agent's fork
  server, which imports Job Manager and opens its own store connection) that the agent can kill.

Before the measured job, each agent runs a 1-task warm-up job of the same variant; for ``hard`` that
includes starting the fork server, reported as "first task". Prints ms/task (wall, 2 workers) and the
ratio to ``none``. Run::

    .venv/bin/python benchmarks/bench_time_limits.py                   # 300 tasks, 3 rounds
    .venv/bin/python benchmarks/bench_time_limits.py --tasks 100 --rounds 1
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, median, start_agent_cli, stop, wait_registered  # noqa: E402

from jobmanager import JobManager  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {"none": {}, "soft": {"soft_limit": 3600}, "hard": {"hard_limit": 3600}}


def run_job(jm: JobManager, tasks: int, limits: dict[str, Any]) -> float:
    """Seconds from submit to the job's finished_at."""
    t0 = time.time()
    job_id = jm.submit("sleep", {"tasks": tasks, "seconds": 0, "steps": 1}, **limits)
    job = jm.wait(job_id, timeout=600, poll=0.05)
    if job.state != "completed":
        raise RuntimeError(f"job {job_id} ended {job.state}")
    assert job.finished_at is not None
    return job.finished_at - t0


def run_variant(variant: str, tasks: int, workers: int, keep: bool) -> tuple[float, float]:
    tmp = Path(tempfile.mkdtemp(prefix=f"jmtl-{variant}-"))
    jm = JobManager.init(tmp / "home")
    jm.job_types()
    proc = start_agent_cli(tmp / "home", "bench", workers, tmp / "agent.log")
    try:
        wait_registered(jm, "bench", proc)
        first = run_job(jm, 1, VARIANTS[variant])
        total = run_job(jm, tasks, VARIANTS[variant])
    finally:
        stop(proc)
        jm.close()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return first, total / tasks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--keep", action="store_true", help="keep the homes and agent logs")
    args = ap.parse_args()
    variants = args.variants.split(",")
    print(machine())
    per_task: dict[str, list[float]] = {v: [] for v in variants}
    firsts: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            first, each = run_variant(v, args.tasks, args.workers, args.keep)
            firsts[v].append(first)
            per_task[v].append(each)
            print(f"round {r + 1} {v:5s}: {each * 1000:7.2f} ms/task, first task {first * 1000:6.0f} ms", flush=True)
    base = median(per_task["none"]) if "none" in per_task else None
    print(f"\n{args.tasks} trivial tasks, {args.workers} workers, median of {args.rounds} round(s):")
    for v in variants:
        m = median(per_task[v])
        ratio = f"{m / base:5.2f}x none" if base else ""
        print(f"  {v:5s} {m * 1000:7.2f} ms/task  {ratio}  (first task of an agent: {median(firsts[v]) * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
