"""Which engine serves which history query: DuckDB over the live SQLite file, or indexed SQLite.

Builds homes of 10k, 100k and 1M synthetic jobs (~10 tasks each) with
``jobmanager.history.demodata`` and times, per size:

* the grid's page (filter + sort + page of 100 + total count) on SQLite (``jobmanager.history.grid``)
  and the same page on DuckDB's sqlite scanner, against the indexed-SQLite floor
  (the two bare statements, no DataFrame);
* a few grid variants (type + search, agent filter, sort by an unindexed column);
* ``History.stats`` by type and by agent: cold (builds the mirror) and warm (sync + query);
* the process RSS.

Usage: ``python benchmarks/bench_history.py [--sizes 10000 100000 1000000] [--dir DIR]``.
Homes are kept in DIR and reused when they already hold the right number of jobs.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobmanager import JobManager
from jobmanager.history import demodata
from jobmanager.history.grid import build_where, grid_page, order_by, select_list  # noqa: E402
from jobmanager.history.history import History  # noqa: E402

FINISHED = "('completed', 'completed_with_errors', 'failed', 'cancelled')"


def timed(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Median seconds of ``repeat`` runs after one warm-up (page cache, sqlite schema)."""
    fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def home_with(root: Path, n: int) -> tuple[Path, float]:
    home = root / f"home-{n}"
    db = home / "store.db"
    if db.exists():
        conn = sqlite3.connect(db)
        have = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        conn.close()
        if have == n:
            return db, 0.0
        raise SystemExit(f"{home} holds {have} jobs, not {n}; remove it or use another --dir")
    JobManager.init(home, admin_password="bench-password").close()
    t = time.perf_counter()
    demodata.generate(home, jobs=n, days=30, seed=1)
    return db, time.perf_counter() - t


def floor(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f"SELECT * FROM jobs WHERE +state IN {FINISHED} ORDER BY created_at DESC, id DESC LIMIT 100"
                 ).fetchall()
    conn.execute(f"SELECT COUNT(*) FROM jobs WHERE state IN {FINISHED}").fetchone()
    conn.close()


def duck_page(h: History) -> None:
    where = build_where({"tab": "completed"}, prefix="s.")
    h.con.execute(f"SELECT {select_list('s.')} FROM store.jobs s WHERE {where.sql}"
                  f" ORDER BY {order_by('created_at', True, 's.')} LIMIT 100", where.params).df()
    h.con.execute(f"SELECT COUNT(*) FROM store.jobs s WHERE {where.sql}", where.params).fetchone()


def measure(db: Path, n: int) -> dict[str, float]:
    r: dict[str, float] = {}
    r["floor"] = timed(lambda: floor(db))
    r["page"] = timed(lambda: grid_page(db, "completed"))
    r["page_in_progress"] = timed(lambda: grid_page(db, "in-progress"))
    r["page_type_search"] = timed(lambda: grid_page(db, "completed", {"type": "print_to_pdf", "search": "letters"}),
                                  3)
    r["page_agent"] = timed(lambda: grid_page(db, "completed", {"agent": "agent-gpu-01"}), 3)
    r["page_sort_name"] = timed(lambda: grid_page(db, "completed", sort="name"), 3)
    r["page_last"] = timed(lambda: grid_page(db, "completed", page=max(1, n // 100 - 1)), 3)
    h = History(db)
    r["duck_page"] = timed(lambda: duck_page(h), 3)
    t = time.perf_counter()
    h.stats(by="type")
    r["stats_cold"] = time.perf_counter() - t
    r["stats_type"] = timed(lambda: h.stats(by="type"), 3)
    r["stats_agent"] = timed(lambda: h.stats(by="agent", period="hour"), 3)
    r["tasks"] = h.con.execute("SELECT count(*) FROM _m_tasks").fetchone()[0]
    r["rss_mb"] = rss_mb()
    h.close()
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "jobmanager-bench")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, float]] = {}
    print(f"homes in {args.dir}; {os.cpu_count()} CPUs; times in ms (median)")
    for n in args.sizes:
        db, gen_s = home_with(args.dir, n)
        r = measure(db, n)
        results[n] = r
        ms = {k: v * 1000 for k, v in r.items() if k not in ("tasks", "rss_mb")}
        print(f"\n{n:>9,} jobs, {int(r['tasks']):,} finished tasks in the stats mirror"
              + (f"  (generated in {gen_s:.1f} s)" if gen_s else ""))
        print(f"  grid page, SQLite      {ms['page']:8.1f}   floor (bare indexed SQLite) {ms['floor']:8.1f}"
              f"   DuckDB scanner {ms['duck_page']:8.1f}")
        print(f"  grid in-progress tab   {ms['page_in_progress']:8.1f}   type+search {ms['page_type_search']:8.1f}"
              f"   agent {ms['page_agent']:8.1f}   sort by name {ms['page_sort_name']:8.1f}"
              f"   last page {ms['page_last']:8.1f}")
        print(f"  stats cold (mirror)    {ms['stats_cold']:8.1f}   warm by type {ms['stats_type']:8.1f}"
              f"   warm by agent {ms['stats_agent']:8.1f}")
        print(f"  RSS {r['rss_mb']:.0f} MB")
    small, big = min(results), max(results)
    rb = results[big]
    print("\nratios (goals in brackets)")
    if big != small:
        print(f"  page at {big:,} / page at {small:,}: {rb['page'] / results[small]['page']:.2f}x  [<= 2x]")
    for n, r in results.items():
        print(f"  {n:>9,}: page / indexed floor {r['page'] / r['floor']:.2f}x [<= 3x];"
              f" DuckDB page / SQLite page {r['duck_page'] / r['page']:.1f}x;"
              f" stats warm by agent {r['stats_agent']:.3f} s [< 1 s]")
    print(f"  RSS at the end {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
