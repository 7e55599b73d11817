"""The trigger-kept per-state counters agree with counting the rows, whatever happened to the jobs."""

from __future__ import annotations

import sqlite3

import pytest

from jobmanager import JobManager
from jobmanager.history.grid import grid_page


def counted_by_scan(jm: JobManager, states: tuple[str, ...]) -> int:
    with sqlite3.connect(jm.home.store_path) as c:
        return c.execute(f"SELECT count(*) FROM jobs WHERE state IN ({','.join('?' * len(states))})",
                         states).fetchone()[0]


@pytest.mark.sqlite_only  # job_counts is SQLite's (PostgreSQL's grid counts with COUNT(*))
def test_counters_follow_every_transition(jm: JobManager, start_agent) -> None:
    from jobmanager.history import demodata

    demodata.generate(jm.home, jobs=300, days=3, seed=7)  # bulk inserts go through the triggers too
    a = jm.submit("sleep", {"tasks": 2})
    b = jm.submit("sleep", {"tasks": 2, "fail_tasks": [1]})
    c = jm.submit("sleep", {"tasks": 2})
    jm.pause(c)
    start_agent("a1")
    jm.wait(a, timeout=20)
    jm.wait(b, timeout=20)
    jm.retry(b)
    jm.wait(b, timeout=20)
    jm.cancel(c)
    for tab, states in (("in-progress", ("queued", "running", "paused")),
                        ("completed", ("completed", "completed_with_errors", "failed", "cancelled"))):
        _, fast = grid_page(jm.home.store_path, tab)  # from job_counts
        _, scanned = grid_page(jm.home.store_path, tab, {"search": ""},
                               scope={"user": "x", "own": False, "all": True, "cases": ["no-such-case"]})
        assert fast == counted_by_scan(jm, states)
        assert scanned <= fast
        for state in states:
            _, one = grid_page(jm.home.store_path, tab, {"state": state})
            assert one == counted_by_scan(jm, (state,))
