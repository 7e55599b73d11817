"""Backends: throughput with 1, 2 and 4 agent processes, SQLite vs PostgreSQL + Redis, in one run.

For each backend and agent count: a fresh home (SQLite files, or a fresh PostgreSQL schema and
Redis database), K ``jobmanager agent --workers W`` processes, then N tasks submitted as N/10
``sleep`` jobs of 10 tasks (``--seconds`` per task, 0 by default: pure coordination overhead), one
``submit`` call each, or all in one ``submit_many`` call with ``--submit many``.
The rate is tasks / (first submit -> last job's ``finished_at``). It prints, per backend, the
rate at each K, the speed-up over K=1, where it saturates (the first K whose extra agents add
less than 15 %), and the ratio PostgreSQL+Redis / SQLite at each K. Run::

    .venv/bin/python benchmarks/bench_backends.py --pg-url postgresql://postgres@127.0.0.1:5433/jm_test \\
        --redis-url redis://127.0.0.1:6390/0          # default N=2000, W=2, 1 round
    # the URLs default to $JOBMANAGER_TEST_PG_URL / $JOBMANAGER_TEST_REDIS_URL (see .ci/backends)

Each run gets its own schema (dropped afterwards) and its own Redis database (flushed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
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
from jobmanager.home import CONFIG_NAME, DEFAULT_CONFIG  # noqa: E402

FINISHED = ("completed", "completed_with_errors", "failed", "cancelled")
SATURATION_GAIN = 1.15


@dataclass
class Result:
    backend: str
    agents: int
    tasks: int
    seconds: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds


def _pg_schema(pg_url: str) -> tuple[str, str]:
    import psycopg

    schema = "jmbench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pg_url else "?"
    return schema, f"{pg_url}{sep}options=-csearch_path%3D{schema}"


def _drop_schema(pg_url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _redis_db(redis_url: str, number: int) -> str:
    import redis

    url = redis_url.rsplit("/", 1)[0] + f"/{number}"
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    conn.close()
    return url


def run(tmp: Path, backend: str, agents: int, n: int, workers: int, seconds: float, per_job: int,
        pg_url: str, redis_url: str, redis_db: int, timeout: float, many: bool = False) -> Result:
    home = tmp / "home"
    schema = None
    if backend == "pg-redis":
        schema, store = _pg_schema(pg_url)
        queue = _redis_db(redis_url, redis_db)
        home.mkdir(parents=True)
        (home / CONFIG_NAME).write_text(DEFAULT_CONFIG.replace('store = "sqlite"', f'store = "{store}"')
                                        .replace('queue = "sqlite"', f'queue = "{queue}"'))
    jm = JobManager.init(home, admin_password="bench-password-1")
    procs = []
    try:
        for i in range(agents):
            name = f"bench{i}"
            procs.append(start_agent_cli(home, name, workers, tmp / f"agent{i}.log"))
        for i, proc in enumerate(procs):
            wait_registered(jm, f"bench{i}", proc)
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        t0 = time.time()
        if many:  # one submit_many call: one store transaction and one queue write for every job
            ids = jm.submit_many([{"type": "sleep", "params": {"tasks": per_job, "seconds": seconds}, "name": "bench"}]
                                 * (n // per_job))
        else:
            ids = [jm.submit("sleep", {"tasks": per_job, "seconds": seconds}, name="bench")
                   for _ in range(n // per_job)]
        deadline = time.monotonic() + timeout
        while True:
            done = jm.store.list_jobs(states=FINISHED, limit=len(ids) + 1)
            if len(done) == len(ids):
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{backend} with {agents} agents did not finish; logs in {tmp}")
            time.sleep(0.1)
        cpu1 = sum(cpu_seconds(p.pid) for p in procs)
        bad = [j for j in done if j.state != "completed"]
        if bad:
            raise RuntimeError(f"{len(bad)} jobs did not complete: {bad[0].error}")
        end = max(j.finished_at or 0 for j in done)
        return Result(backend, agents, per_job * len(ids), end - t0, cpu1 - cpu0)
    finally:
        for proc in procs:
            stop(proc)
        jm.close()
        if schema:
            _drop_schema(pg_url, schema)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=2000, help="tasks per run (default 2000)")
    ap.add_argument("--workers", type=int, default=2, help="thread workers per agent (default 2)")
    ap.add_argument("--agents", default="1,2,4", help="agent counts (default 1,2,4)")
    ap.add_argument("--seconds", type=float, default=0.0, help="seconds each task sleeps (default 0)")
    ap.add_argument("--per-job", type=int, default=10, help="tasks per job (default 10)")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each combination (default 1)")
    ap.add_argument("--backends", default="sqlite,pg-redis")
    ap.add_argument("--pg-url", default=os.environ.get("JOBMANAGER_TEST_PG_URL", ""))
    ap.add_argument("--redis-url", default=os.environ.get("JOBMANAGER_TEST_REDIS_URL", ""))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--submit", choices=("each", "many"), default="each",
                    help="one submit call a job (default), or one submit_many call for all")
    args = ap.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    counts = [int(k) for k in args.agents.split(",")]
    if "pg-redis" in backends and not (args.pg_url and args.redis_url):
        ap.error("pg-redis needs --pg-url and --redis-url (or JOBMANAGER_TEST_PG_URL / JOBMANAGER_TEST_REDIS_URL)")

    print(f"# backends: {args.tasks} tasks as jobs of {args.per_job}, {args.seconds:g} s each, "
          f"{args.workers} thread workers per agent, agents {counts}, {args.rounds} round(s), "
          f"submitted {'in one submit_many' if args.submit == 'many' else 'one submit each'}")
    print(f"# {machine()}")
    rates: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    redis_db = 1
    with scratch_folders() as folders:
        for rnd in range(1, args.rounds + 1):
            for backend in backends:
                for k in counts:
                    tmp = scratch(folders, f"jmbench-{backend}-{k}-")
                    r = run(tmp, backend, k, args.tasks, args.workers, args.seconds, args.per_job,
                            args.pg_url, args.redis_url, redis_db, args.timeout, many=args.submit == "many")
                    redis_db += 1
                    rates.setdefault((backend, k), []).append(r.rate)
                    cpu.setdefault((backend, k), []).append(1000 * r.cpu_s / r.tasks)
                    print(f"round {rnd} {backend:8s} {k} agents {r.tasks:6d} tasks {r.seconds:7.2f} s "
                          f"{r.rate:8.1f} tasks/s  agent cpu {1000 * r.cpu_s / r.tasks:5.2f} ms/task", flush=True)

    print()
    print(f"{'backend':8s} {'agents':>6s} {'tasks/s':>9s} {'vs 1 agent':>10s} {'cpu ms/task':>11s}")
    for backend in backends:
        base = median(rates[(backend, counts[0])])
        for k in counts:
            rate = median(rates[(backend, k)])
            print(f"{backend:8s} {k:6d} {rate:9.1f} {rate / base:10.2f} {median(cpu[(backend, k)]):11.2f}")
        saturated = next((prev for prev, k in zip(counts, counts[1:], strict=False)
                          if median(rates[(backend, k)]) < SATURATION_GAIN * median(rates[(backend, prev)])), None)
        print(f"{backend:8s} saturates at: " + (f"{saturated} agent(s) (more add < 15 %)" if saturated
                                                 else f"not within {counts[-1]} agents"))
    if {"sqlite", "pg-redis"} <= set(backends):
        print()
        print("pg-redis / sqlite: " + ", ".join(
            f"{k} agents {median(rates[('pg-redis', k)]) / median(rates[('sqlite', k)]):.2f}" for k in counts))


if __name__ == "__main__":
    main()
