"""Metrics: what one Prometheus scrape costs at a small and a large history (`jobmanager metrics`).

Two homes with a synthetic history (``demodata``, the store's bulk ``insert_history``): ``--small``
(1k) and ``--large`` (100k) finished jobs, each with the same number of jobs still in progress.
For each, the store's metrics are served over HTTP by prometheus-client (as ``jobmanager metrics``
does) and scraped ``--scrapes`` times; before each scrape (outside the timing) a 10-task job is
submitted and cancelled, so every scrape also tails new task events and moves counters. The two homes
are scraped in turn. It prints the median and p90 scrape time per size and the ratio large / small,
with the load average: counters tailed from events and gauges from indexed queries should make the
ratio about 1, where a COUNT over the history would grow it ~100x. Run::

    .venv/bin/python benchmarks/bench_metrics.py                       # SQLite, 1k vs 100k, ~2 min
    .venv/bin/python benchmarks/bench_metrics.py --pg-url postgresql://postgres@127.0.0.1:5433/jm_test
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import machine, median, percentile  # noqa: E402

from jobmanager import JobManager, metrics  # noqa: E402
from jobmanager.history import demodata  # noqa: E402
from jobmanager.home import CONFIG_NAME, DEFAULT_CONFIG  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _home(root: Path, name: str, pg_url: str | None, schemas: list[str]) -> Path:
    path = root / name
    if pg_url:
        schema = "jmbench_" + uuid.uuid4().hex[:10]
        import psycopg

        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        schemas.append(schema)
        url = f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}"
        path.mkdir(parents=True)
        (path / CONFIG_NAME).write_text(DEFAULT_CONFIG.replace('store = "sqlite"', f'store = "{url}"'))
    JobManager.init(path, admin="admin", admin_password="bench-password-1").close()
    return path


def fill(home: Path, jobs: int) -> None:
    t0 = time.perf_counter()
    demodata.generate(home, jobs=jobs, days=30, seed=1, in_progress=20)
    print(f"  {jobs:>8} jobs written in {time.perf_counter() - t0:.1f} s", flush=True)


def measure(homes: dict[int, Path], scrapes: int) -> dict[int, list[float]]:
    """Scrape the homes' endpoints in turn (so a change in the machine's load hits both alike)."""
    with ExitStack() as stack:
        urls, managers = {}, {}
        for jobs, home in homes.items():
            jm = stack.enter_context(JobManager(home, user="admin"))
            reg, collector = jm.metrics(process=False)
            stack.callback(collector.close)
            port = _free_port()
            stack.callback(metrics.serve(reg, "127.0.0.1", port).shutdown)
            urls[jobs], managers[jobs] = f"http://127.0.0.1:{port}/metrics", jm
            urllib.request.urlopen(urls[jobs], timeout=30).read()  # warm-up: connections, page cache
        times: dict[int, list[float]] = {jobs: [] for jobs in homes}
        for _ in range(scrapes):
            for jobs, url in urls.items():
                jm = managers[jobs]
                jm.cancel(jm.submit("sleep", {"tasks": 10}))  # new events for the tail, outside the timing
                t = time.perf_counter()
                body = urllib.request.urlopen(url, timeout=30).read()
                times[jobs].append(time.perf_counter() - t)
                assert b"jobmanager_tasks_cancelled_total" in body
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--pg-url", default=None, help="run on PostgreSQL (a fresh schema per home, dropped after)")
    args = parser.parse_args()
    print(machine())
    print(f"backend: {'PostgreSQL' if args.pg_url else 'SQLite'}; {args.scrapes} scrapes per size")
    root = Path(tempfile.mkdtemp(prefix="jm-bench-metrics-"))
    schemas: list[str] = []
    results: dict[int, list[float]] = {}
    try:
        homes = {jobs: _home(root, f"home-{jobs}", args.pg_url, schemas) for jobs in (args.small, args.large)}
        for jobs, home in homes.items():
            fill(home, jobs)
        results = measure(homes, args.scrapes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if args.pg_url and schemas:
            import psycopg

            with psycopg.connect(args.pg_url, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    for jobs, times in results.items():
        print(f"{jobs:>8} finished jobs: scrape median {median(times) * 1000:.2f} ms, "
              f"p90 {percentile(times, 90) * 1000:.2f} ms")
    ratio = median(results[args.large]) / median(results[args.small])
    print(f"ratio {args.large // 1000}k / {args.small // 1000}k (median scrape): {ratio:.2f}  "
          f"(load avg {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
