"""The activity view's numbers: known jobs run by real agents, counted per minute and hour, by type and agent,
with queue depth and wait, and only the jobs the viewer may see."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from jobmanager import JobManager
from jobmanager.backends import store_at
from jobmanager.errors import BadParams
from jobmanager.history.activity import HOUR, ActivityReader
from jobmanager.home import Home


def totals(activity: Any, per: str, by: str | None = None, key: str | None = None) -> tuple[int, int]:
    processed, failed = activity.series(per, by, key)
    return sum(processed), sum(failed)


def test_activity_counts_attempts_by_type_and_agent_for_what_the_viewer_sees(
        jm: JobManager, home: Path, start_agent: Any) -> None:
    jm.add_group("acme")
    jm.grant("acme", "view_all_jobs")
    jm.add_case("acme", "ACME")
    jm.add_user("ana", "password-123", groups=["acme"])
    a1 = start_agent("a1", 1)
    # 4 tasks; task 2 fails its first attempt and is retried: 5 attempts ended, 1 failed
    acme = jm.submit("sleep", {"tasks": 4, "fail_tasks": [2], "fail_attempts": 1}, retries=1, case="ACME")
    # 3 tasks, task 1 fails for good: 3 attempts, 1 failed (ana cannot see this case)
    globex = jm.submit("sleep", {"tasks": 3, "fail_tasks": [1]}, case="GLOBEX")
    assert jm.wait(acme, timeout=60).state == "completed"
    assert jm.wait(globex, timeout=60).state == "completed_with_errors"
    a1.stop()
    a2 = start_agent("a2", 1)
    merged = jm.submit("merge_text", {"parts": ["x", "y"]})  # another type, no case: everyone sees it
    assert jm.wait(merged, timeout=60).state == "completed"

    everything = jm.activity()
    assert totals(everything, "minute") == (10, 2)
    assert totals(everything, "hour") == (10, 2)
    assert everything.keys("agent") == ["a1", "a2"]
    assert everything.keys("type") == ["merge_text", "sleep"]
    assert totals(everything, "minute", "agent", "a1") == (8, 2)
    assert totals(everything, "hour", "agent", "a2")[1] == 0
    assert totals(everything, "minute", "type", "sleep") == (8, 2)
    assert totals(everything, "minute", "type", "merge_text")[1] == 0
    assert len(everything.minute_starts) == 60 and len(everything.hour_starts) == 7 * 24
    assert everything.wait_mean_s is not None and everything.wait_max_s is not None
    assert 0 <= everything.wait_mean_s <= everything.wait_max_s < 60

    ana = JobManager(home, user="ana")
    seen = ana.activity()
    merge_attempts = totals(everything, "minute", "type", "merge_text")[0]
    assert totals(seen, "minute") == (5 + merge_attempts, 1)
    # which agent ran what is agent information: none without view_agents, the same counts with it
    assert seen.keys("agent") == [] and totals(seen, "hour", "agent", "a1") == (0, 0)
    assert seen.keys("type") == ["merge_text", "sleep"]
    jm.grant("acme", "view_agents")
    assert totals(ana.activity(), "hour", "agent", "a1") == (5, 1)

    # queue depth and wait: nothing serves the queue once the agents stop
    a2.stop()
    waiting = jm.submit("sleep", {"tasks": 3}, case="GLOBEX")
    time.sleep(0.2)  # so the oldest has waited a measurable time
    depth, oldest = jm.activity().queues["default"]
    assert depth == 3 and 0.1 < oldest < 60
    assert "default" not in ana.activity().queues  # ana cannot see GLOBEX's queued work
    jm.cancel(waiting)
    ana.close()


def test_activity_keeps_hours_that_are_over(jm: JobManager, home: Path, start_agent: Any) -> None:
    start_agent("a1", 2)
    job = jm.submit("sleep", {"tasks": 5, "fail_tasks": [5]})
    jm.wait(job, timeout=60)
    at = store_at(Home.open(home))
    scope = jm.actor.scope()
    reader = ActivityReader(at)
    now = time.time()
    assert totals(reader.read(scope, 2, now), "hour") == (5, 1)
    later = now + 3 * HOUR  # the hour of the work is over: kept, no longer in the minute series
    kept = reader.read(scope, 2, later)
    assert totals(kept, "minute") == (0, 0)
    assert totals(kept, "hour") == (5, 1)
    assert kept.hours == ActivityReader(at).read(scope, 2, later).hours  # the kept counts match a fresh read
    assert totals(reader.read(scope, 2, later + 2 * 24 * HOUR), "hour") == (0, 0)  # out of the window


@pytest.mark.parametrize("days", [0, 32, "7", 1.5, True, None])
def test_activity_refuses_bad_days(jm: JobManager, days: Any) -> None:
    with pytest.raises(BadParams, match="days must be a whole number between 1 and 31"):
        jm.activity(days)
