"""The dashboard's activity view at 1M jobs of history against 1k: its cost must not grow with the history.

Two homes, one run. Each holds an *old* history (``--small`` / ``--big`` synthetic jobs over 30 days, ending
8 days ago, made with ``jobmanager.history.demodata``) and the *same* recent work on top (``--recent`` jobs over
the last 7 days, seed 2, with every task's start and success event, as real agents write them). So both homes
did the same work this week and differ only in how much history lies behind it: the activity query, which reads
the ``events_kind_at`` index over bounded time ranges, should cost the same in both.

Timed (median of ``--repeat`` runs, one warm-up), as the dashboard's kernel runs them:

* ``refresh``: ``ActivityReader.read`` with the settled hours kept (what every dashboard refresh costs);
* ``first``: a fresh reader (the first paint after sign-in: 7 days of hours are read once);
* ``refresh, one case``: the refresh for a user who sees one case's jobs (and jobs without a case).

Prints each figure at both sizes and the ratio big / small (goal: refresh <= 1.2), with the load average.

Usage: ``python benchmarks/bench_activity.py [--small 1000] [--big 1000000] [--recent 20000] [--dir DIR]``.
Homes are kept in DIR (default /tmp/jmbench-activity) and reused when they hold the expected jobs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import job_count  # noqa: E402

from jobmanager import JobManager  # noqa: E402
from jobmanager.backends import store_at  # noqa: E402
from jobmanager.history import demodata  # noqa: E402
from jobmanager.history.activity import ActivityReader  # noqa: E402
from jobmanager.home import Home  # noqa: E402

DAY = 86400.0


def make_home(root: Path, old: int, recent: int) -> Path:
    home = root / f"home-{old}-{recent}"
    have = job_count(home)
    if have == old + recent:
        return home
    if have is not None:
        raise SystemExit(f"{home} holds {have} jobs, not {old + recent}: remove it")
    JobManager.init(home, admin="bench", admin_password="bench-password-1").close()
    now = time.time()
    t = time.perf_counter()
    demodata.generate(home, jobs=old, days=30, seed=1, now=now - 8 * DAY, in_progress=3)
    demodata.generate(home, jobs=recent, days=7, seed=2, now=now, in_progress=20, task_events=True)
    print(f"  made {home.name}: {old:,} old + {recent:,} recent jobs in {time.perf_counter() - t:.0f} s", flush=True)
    return home


def measure(homes: dict[int, Path], repeat: int) -> dict[int, dict[str, float]]:
    """Each figure at every size, in alternating rounds (so a change of the machine's load hits both)."""
    everyone = {"user": "bench", "own": True, "all": True, "cases": None}
    one_case = {"user": "nobody", "own": True, "all": True, "cases": ["CASE-1001"]}
    ats = {size: store_at(Home.open(home)) for size, home in homes.items()}
    kept = {size: ActivityReader(at) for size, at in ats.items()}
    kept_case = {size: ActivityReader(at) for size, at in ats.items()}
    runs: dict[int, dict[str, list[float]]] = {size: {} for size in homes}
    # the refreshes first, alternating between the homes round by round; then the first reads (heavier,
    # they would disturb the refreshes' caches if mixed in); round 0 of each warms up (page cache)
    for names, rounds in ((("refresh", "refresh, one case"), repeat), (("first",), max(3, repeat // 8))):
        for round_ in range(rounds + 1):
            for size, at in ats.items():
                for name in names:
                    fn = {"refresh": partial(kept[size].read, everyone),
                          "refresh, one case": partial(kept_case[size].read, one_case),
                          "first": lambda at=at: ActivityReader(at).read(everyone)}[name]
                    t = time.perf_counter()
                    fn()
                    if round_:
                        runs[size].setdefault(name, []).append(time.perf_counter() - t)
    out: dict[int, dict[str, float]] = {}
    for size in homes:
        out[size] = {name: statistics.median(values) for name, values in runs[size].items()}
        a = kept[size].read(everyone)
        out[size]["processed last hour"] = float(sum(a.series("minute")[0]))
        out[size]["processed 7 days"] = float(sum(a.series("hour")[0]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--recent", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=60)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/jmbench-activity"))
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    homes = {size: make_home(args.dir, size, args.recent) for size in (args.small, args.big)}
    results = measure(homes, args.repeat)
    small, big = results[args.small], results[args.big]
    print(f"\nactivity view, {args.recent:,} recent jobs on {args.small:,} vs {args.big:,} old jobs "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"{'':24}{args.small:>14,}{args.big:>14,}{'ratio':>9}")
    for name in small:
        if name.startswith("processed"):
            print(f"{name:24}{small[name]:>14,.0f}{big[name]:>14,.0f}")
        else:
            print(f"{name + ' (ms)':24}{small[name] * 1000:>14.2f}{big[name] * 1000:>14.2f}"
                  f"{big[name] / small[name]:>9.2f}")
    ratio = big["refresh"] / small["refresh"]
    print(f"\nrefresh ratio {args.big:,} / {args.small:,} jobs: {ratio:.2f} (goal <= 1.2: "
          f"{'met' if ratio <= 1.2 else 'NOT met'})")


if __name__ == "__main__":
    main()
