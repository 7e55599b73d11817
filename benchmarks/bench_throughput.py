"""Throughput: N trivial tasks through plain SqliteHuey vs through a Job Manager agent.

Variants, each run ``--rounds`` times (interleaved, so machine noise spreads over all):

* ``raw-bulk``  plain SqliteHuey, trivial task, consumer in its own process, N messages
  enqueued in one transaction (what ``Queue.send`` does): the baseline of the ratio.
* ``raw-normal``  ``raw-bulk`` on SqliteHuey at ``synchronous=NORMAL`` (the queue storage the agent
  uses): the ratio against Huey on the same storage.
* ``raw-each``  the same, one ``task()`` call per message (how plain Huey code enqueues).
* ``jm-1job``   ``jobmanager agent --workers W`` in its own process, one ``sleep`` job with
  ``tasks=N, seconds=0``; from just before ``submit`` to the job's ``finished_at``.
* ``jm-jobs``   the same agent, N/10 ``sleep`` jobs of 10 tasks submitted one after another;
  from the first submit to the last job's ``finished_at``.
* ``jm-jobs-many``  the same N/10 jobs in one ``submit_many`` call (one store transaction, one queue
  write, as ``raw-bulk`` enqueues its messages).
* ``jm-1job-limit``  ``jm-1job`` with a concurrency limit that matches nothing (``export_report``,
  max 1): what every claim and finish pays to look for limits (not in the default list).
* ``jm-1job-notify``  ``jm-1job`` whose job has a notification rule (a webhook on failure, never sent):
  what routing every event through the rules costs.
* ``jm-1job-metrics``  ``jm-1job`` on an agent that also serves Prometheus metrics (``--metrics-port``),
  scraped every second: what counting every event costs.

The rates are tasks/s; the ratio is managed / raw-bulk (floor 0.9, goal 1.5; managed / raw-normal:
goal 0.5). ``cpu ms/task``
is the consumer's or agent's process CPU (all threads) per task. Run::

    .venv/bin/python benchmarks/bench_throughput.py            # N=2000, 3 rounds
    .venv/bin/python benchmarks/bench_throughput.py --tasks 500 --rounds 1   # quick
"""

from __future__ import annotations

import argparse
import queue
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

sys.path.insert(0, str(HERE))

import _raw_consumer  # noqa: E402
from _common import (  # noqa: E402
    PYTHON,
    cpu_seconds,
    machine,
    median,
    scratch,
    scratch_folders,
    start_agent_cli,
    stop,
    wait_registered,
)

from jobmanager import JobManager  # noqa: E402

FINISHED = ("completed", "completed_with_errors", "failed", "cancelled")
VARIANTS = ("raw-bulk", "raw-normal", "raw-each", "jm-1job", "jm-jobs", "jm-jobs-many")
OPTIONAL = ("jm-1job-limit", "jm-1job-notify", "jm-1job-metrics")


@dataclass
class Result:
    variant: str
    tasks: int
    seconds: float  # first enqueue/submit -> last task executed
    submit_s: float  # time spent enqueueing/submitting
    cpu_s: float  # consumer/agent process CPU over the run

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds


def run_raw(tmp: Path, n: int, workers: int, mode: str, timeout: float) -> Result:
    path = str(tmp / "queue.db")
    normal = mode == "normal"
    huey, noop = _raw_consumer.make_huey(path, normal=normal)
    with open(tmp / "consumer.log", "ab") as log:
        # Imported (not run as __main__) so the task's registry name matches the enqueuer's.
        code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import _raw_consumer; _raw_consumer.main()"
        proc = subprocess.Popen(
            [PYTHON, "-c", code, path, str(n), str(workers), "normal" if normal else "full"],
            stdout=subprocess.PIPE, stderr=log, cwd=tmp, text=True,
        )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()  # type: ignore

    def readline(wait: float) -> str:
        try:
            return lines.get(timeout=wait)
        except queue.Empty:
            raise RuntimeError(f"raw consumer silent for {wait:g} s; see {tmp / 'consumer.log'}") from None

    try:
        if readline(30).strip() != "ready":
            raise RuntimeError("raw consumer did not start")
        time.sleep(0.5)  # let the workers reach their idle polling, as the agent's have
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.time()
        if mode in ("bulk", "normal"):
            _raw_consumer.enqueue_bulk(huey, noop, n)
        else:
            _raw_consumer.enqueue_each(huey, noop, n)
        t_sub = time.time()
        line = readline(timeout).split()  # blocks until the consumer saw N completions
        if not line or line[0] != "done":
            raise RuntimeError(f"raw consumer ended early (rc={proc.poll()})")
        cpu1 = cpu_seconds(proc.pid)
        return Result(f"raw-{mode}", n, float(line[1]) - t0, t_sub - t0, cpu1 - cpu0)
    finally:
        stop(proc)
        huey.storage.close()


def _finished(store_db: Path) -> tuple[int, float | None, int]:
    """(finished jobs, latest finished_at, tasks not succeeded), read without touching the service."""
    con = sqlite3.connect(f"file:{store_db}?mode=ro", uri=True, timeout=30)
    try:
        done, last = con.execute(
            f"SELECT count(*), max(finished_at) FROM jobs WHERE state IN {FINISHED!r}").fetchone()
        bad = con.execute("SELECT count(*) FROM tasks WHERE state != 'succeeded'").fetchone()[0]
        return int(done), last, int(bad)
    finally:
        con.close()


def _scrape_every_second(port: int, stop_event: threading.Event) -> None:
    while not stop_event.wait(1.0):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        except OSError:
            pass


def run_managed(tmp: Path, n: int, workers: int, per_job: int | None, timeout: float,
                feature: str = "") -> Result:
    home = tmp / "home"
    jm = JobManager.init(home)  # the home's administrator (or the current user)
    if feature == "limit":
        jm.set_limit("matches-nothing", type="export_report", max_running=1)
    extra: list[str] = []
    scraping = threading.Event()
    if feature == "metrics":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        extra = ["--metrics-port", str(port)]
        threading.Thread(target=_scrape_every_second, args=(port, scraping), daemon=True).start()
    notify = ["failed:http://127.0.0.1:9/never-sent"] if feature == "notify" else None
    proc = start_agent_cli(home, "bench", workers, tmp / "agent.log", *extra)
    try:
        wait_registered(jm, "bench", proc)
        sizes = [n] if per_job is None else [per_job] * (n // per_job)
        total = sum(sizes)
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.time()
        if feature == "many":
            ids = jm.submit_many([{"type": "sleep", "params": {"tasks": size, "seconds": 0}, "name": "bench"}
                                  for size in sizes])
        else:
            ids = [jm.submit("sleep", {"tasks": size, "seconds": 0}, name="bench", notify=notify) for size in sizes]
        t_sub = time.time()
        deadline = time.monotonic() + timeout
        if per_job is None:
            # Poll cheaply (JobManager.wait loads every task row on each poll), then let wait() return it.
            while jm.store.get_job(ids[0]).state not in FINISHED:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("managed run did not finish")
                time.sleep(0.1)
            job = jm.wait(ids[0])
            end = job.finished_at
            if job.state != "completed":
                raise RuntimeError(f"job ended {job.state}: {job.error}")
        else:
            while True:
                done, end, _ = _finished(jm.home.store_path)
                if done == len(ids):
                    break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("managed run did not finish")
                time.sleep(0.1)
        cpu1 = cpu_seconds(proc.pid)
        bad = _finished(jm.home.store_path)[2]
        if bad:
            raise RuntimeError(f"{bad} tasks did not succeed")
        assert end is not None
        name = ("jm-1job" if per_job is None else "jm-jobs") + (f"-{feature}" if feature else "")
        return Result(name, total, end - t0, t_sub - t0, cpu1 - cpu0)
    finally:
        scraping.set()
        stop(proc)
        jm.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=2000, help="tasks per variant (default 2000)")
    ap.add_argument("--workers", type=int, default=2, help="thread workers (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each variant (default 3)")
    ap.add_argument("--per-job", type=int, default=10, help="tasks per job in jm-jobs (default 10)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma list of {', '.join(VARIANTS + OPTIONAL)}")
    ap.add_argument("--timeout", type=float, default=600, help="seconds before a run counts as stuck")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders (agent logs, stores)")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS + OPTIONAL)
    if unknown:
        ap.error(f"unknown variants: {', '.join(sorted(unknown))}")

    print(f"# throughput: {args.tasks} trivial tasks, {args.workers} thread workers, {args.rounds} rounds")
    print(f"# {machine()}")
    results: dict[str, list[Result]] = {v: [] for v in variants}
    with scratch_folders(args.keep) as folders:
        for rnd in range(1, args.rounds + 1):
            for v in variants:
                tmp = scratch(folders, f"jmbench-{v}-")
                if v.startswith("raw-"):
                    r = run_raw(tmp, args.tasks, args.workers, v[4:], args.timeout)
                else:
                    r = run_managed(tmp, args.tasks, args.workers, None if v.startswith("jm-1job") else args.per_job,
                                    args.timeout, feature=v.split("-", 2)[2] if v.count("-") == 2 else "")
                results[v].append(r)
                print(f"round {rnd} {v:15s} {r.tasks:6d} tasks {r.seconds:7.2f} s {r.rate:8.1f} tasks/s"
                      f"  submit {r.submit_s:6.2f} s  cpu {1000 * r.cpu_s / r.tasks:5.2f} ms/task", flush=True)

    print()
    what = {"limit": "a limit row that matches nothing", "notify": "a notification rule on the job",
            "metrics": "the agent serving metrics, scraped every second"}
    for feature, says in what.items():
        v = f"jm-1job-{feature}"
        if results.get("jm-1job") and results.get(v):
            cost = median([r.rate for r in results[v]]) / median([r.rate for r in results["jm-1job"]])
            cpu = (median([r.cpu_s / r.tasks for r in results[v]])
                   - median([r.cpu_s / r.tasks for r in results["jm-1job"]]))
            print(f"ratio {v}/jm-1job = {cost:.2f}, {1000 * cpu:+.3f} ms CPU per task (what {says} costs)")
    print(f"{'variant':15s} {'median tasks/s':>14s} {'min':>8s} {'max':>8s} {'cpu ms/task':>11s} {'ratio':>7s}")
    base = median([r.rate for r in results["raw-bulk"]]) if results.get("raw-bulk") else None
    for v in variants:
        rates = [r.rate for r in results[v]]
        cpu = median([1000 * r.cpu_s / r.tasks for r in results[v]])
        ratio = f"{median(rates) / base:7.2f}" if base else "      -"
        print(f"{v:15s} {median(rates):14.1f} {min(rates):8.1f} {max(rates):8.1f} {cpu:11.2f} {ratio}")
    if base:
        for v in ("jm-1job", "jm-jobs", "jm-jobs-many", "jm-1job-limit"):
            if results.get(v):
                ratio = median([r.rate for r in results[v]]) / base
                verdict = "meets the 1.5 goal" if ratio >= 1.5 else "above the 0.9 floor" if ratio >= 0.9 else "BELOW"
                print(f"ratio {v}/raw-bulk = {ratio:.2f} ({verdict}; floor 0.9, goal 1.5, issue 18)")
    if results.get("raw-normal"):
        same = median([r.rate for r in results["raw-normal"]])
        for v in ("jm-1job", "jm-jobs", "jm-jobs-many"):
            if results.get(v):
                ratio = median([r.rate for r in results[v]]) / same
                print(f"ratio {v}/raw-normal = {ratio:.2f} (against Huey on the same synchronous=NORMAL storage;"
                      " goal 0.5)")


if __name__ == "__main__":
    main()
