"""What the SQL sandbox costs: a query on the history's own connection (the old way, store attached)
against the same query in the sandbox (``History.sql``: scoped rows of the named views and columns, as
Arrow, in a fresh DuckDB), for an administrator (every row) and a case-scoped user.

Runs interleaved (old, admin, scoped per query) so load from other processes hits all three alike.
Usage: ``python benchmarks/bench_sql_sandbox.py HOME_STORE_DB [--repeat 3]`` (e.g. a home made by
bench_history.py: /tmp/jobmanager-bench/home-1000000/store.db).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobmanager.history.history import History  # noqa: E402

QUERIES = {
    "count jobs": "SELECT count(*) FROM jobs",
    "jobs by state": "SELECT state, count(*) AS n, avg(duration_s) AS d FROM jobs GROUP BY state",
    "count tasks": "SELECT count(*) FROM tasks",
    "failed tasks by error": "SELECT error, count(*) AS n FROM tasks WHERE state = 'failed' GROUP BY error"
                             " ORDER BY n DESC LIMIT 5",
    "jobs per day": "SELECT date_trunc('day', created_at) AS day, state, count(*) FROM jobs GROUP BY ALL",
    "one job by id": "SELECT * FROM jobs WHERE id = 4242",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    h = History(args.store)
    case = h.con.execute("SELECT case_id FROM jobs WHERE case_id IS NOT NULL LIMIT 1").fetchone()[0]
    admin = {"user": "admin", "own": True, "all": True, "cases": None, "agents": True}
    scoped = {"user": "ana", "own": True, "all": True, "cases": [case], "agents": False}
    runs: dict[str, dict[str, list[float]]] = {q: {"old": [], "admin": [], "scoped": []} for q in QUERIES}
    peak = 0.0
    for _ in range(args.repeat):
        for name, q in QUERIES.items():
            for kind in ("old", "admin", "scoped"):
                t = time.perf_counter()
                if kind == "old":
                    h.con.execute(q).df()
                else:
                    h.sql(q, scope=admin if kind == "admin" else scoped)
                runs[name][kind].append(time.perf_counter() - t)
                peak = max(peak, psutil.Process().memory_info().rss / 2**20)
    n = h.con.execute("SELECT count(*) FROM jobs").fetchone()[0]
    print(f"{n:,} jobs; median of {args.repeat} runs, ms; scoped = one case ({case}) + jobs without a case")
    print(f"  {'query':<24}{'old (store attached)':>22}{'sandbox, admin':>16}{'sandbox, scoped':>17}{'admin/old':>11}")
    for name, r in runs.items():
        old, adm, sc = (statistics.median(r[k]) * 1000 for k in ("old", "admin", "scoped"))
        print(f"  {name:<24}{old:>22.1f}{adm:>16.1f}{sc:>17.1f}{adm / old:>10.2f}x")
    print(f"  peak RSS {peak:.0f} MB")
    h.close()


if __name__ == "__main__":
    main()
