"""Named queues and concurrency limits (issue 14, item 4), with real agent processes on both backends.

The maximum number of tasks running at once is read from the store's events in id order: a claim and a
finish of tasks under one limit each write their event while holding that limit's row lock (SQLite: the
write lock), so the event order is the order in which the store counted.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from jobmanager import JobManager
from jobmanager.cli.main import cli
from jobmanager.engine.states import FINISHED

from .conftest import wait_for


def run_cli(home: Path, *args: str, user: str = "cli-user") -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--home", str(home), "--user", user, *args], catch_exceptions=False)
    return result.exit_code, result.output


def task_events(jm: JobManager, job_ids: list[int]) -> pd.DataFrame:
    df = pd.concat([jm.events(j) for j in job_ids])
    df = df[df.kind == "task"].sort_values("id")
    return df


def max_running(events: pd.DataFrame, key: str | None = None) -> int:
    """The most tasks running at once (per value of column ``key`` if given), replaying events in id order."""
    running: dict[object, int] = {}
    peak = 0
    for row in events.itertuples():
        k = getattr(row, key) if key else None
        if row.to_state == "running":
            running[k] = running.get(k, 0) + 1
        elif row.from_state == "running":
            running[k] = running.get(k, 0) - 1
        peak = max(peak, running.get(k, 0))
    return peak


def wait_done(jm: JobManager, job_ids: list[int], timeout: float = 120.0) -> None:
    wait_for(lambda: all(jm.store.get_job(j).state in FINISHED for j in job_ids), timeout=timeout,
             what=f"jobs {job_ids} finished")


def test_agents_run_only_the_queues_they_serve(jm: JobManager, start_agent, home: Path) -> None:
    start_agent("pdf-agent", 2, "--queues", "pdf")
    start_agent("default-agent", 2)  # default: --queues default
    pdf = jm.submit("sleep", {"tasks": 8, "seconds": 0.02}, queue="pdf")
    plain = jm.submit("sleep", {"tasks": 8, "seconds": 0.02})
    assert jm.wait(pdf, timeout=60).state == "completed"
    assert jm.wait(plain, timeout=60).state == "completed"
    assert set(jm.tasks(pdf).agent) == {"pdf-agent"}
    assert set(jm.tasks(plain).agent) == {"default-agent"}

    # a queue no agent serves keeps its work queued (and says where it is)
    other = jm.submit("sleep", {"tasks": 2}, queue="nightly")
    queues = jm.queues().set_index("queue")
    assert queues.loc["nightly", "depth"] == 2 and queues.loc["nightly", "agents"] == ""
    assert queues.loc["pdf", "agents"] == "pdf-agent" and queues.loc["default", "agents"] == "default-agent"
    both = start_agent("both", 1, "--queues", "nightly,default")
    assert jm.wait(other, timeout=60).state == "completed"
    assert set(jm.tasks(other).agent) == {"both"}
    both.stop()


def test_a_limit_of_two_holds_across_three_racing_agents(jm: JobManager, start_agent) -> None:
    jm.set_limit("two-sleeps", type="sleep", max_running=2)
    for name in ("r1", "r2", "r3"):
        start_agent(name, 3)
    jobs = [jm.submit("sleep", {"tasks": 50, "seconds": 0.01, "steps": 1}, priority=p) for p in (0, 3, 1, 2)]
    wait_done(jm, jobs, timeout=240)
    for job_id in jobs:
        job = jm.job(job_id)
        assert job.state == "completed", job
        tasks = jm.tasks(job_id)
        assert (tasks.attempts == 1).all(), "a refused claim spent an attempt"
        assert tasks.waiting.isna().all()
    events = task_events(jm, jobs)
    assert max_running(events) == 2
    assert events[events.to_state == "running"].agent.nunique() >= 2  # the agents really raced


def test_per_case_limit(jm: JobManager, start_agent) -> None:
    jm.set_limit("one-per-case", type="sleep", per_case=True, max_running=1)
    start_agent("a1", 4)
    jobs = [jm.submit("sleep", {"tasks": 3, "seconds": 0.2}, case=case) for case in ("ACME-1", "ACME-1", "ACME-2")]
    jobs.append(jm.submit("sleep", {"tasks": 3, "seconds": 0.2}))  # no case: a group of its own
    wait_done(jm, jobs)
    case_of = {j: jm.job(j).case or "-" for j in jobs}
    events = task_events(jm, jobs)
    events["case"] = events.job_id.map(case_of)
    assert max_running(events, "case") == 1
    assert max_running(events) >= 2  # cases ran side by side


def test_waiting_tasks_start_in_priority_order_and_say_why(jm: JobManager, start_agent, home: Path) -> None:
    jm.set_limit("serial", type="sleep", max_running=1)
    start_agent("a1", 4)
    blocker = jm.submit("sleep", {"tasks": 1, "seconds": 2})
    wait_for(lambda: jm.job(blocker).state == "running", what="blocker running")
    waiting = {p: jm.submit("sleep", {"tasks": 1, "seconds": 0.05}, priority=p) for p in (1, 5, 3)}
    wait_for(lambda: all(isinstance(jm.tasks(j).waiting[0], str) for j in waiting.values()),
             what="the three tasks refused")
    reason = jm.tasks(waiting[5]).waiting[0]
    assert reason == "waiting: 1/1 sleep running (limit serial)"
    assert jm.tasks(waiting[5]).attempts[0] == 0
    code, out = run_cli(home, "queues")
    assert code == 0 and "serial: at most 1 sleep running" in out
    queue = jm.queues().set_index("queue").loc["default"]
    assert (queue.depth, queue.waiting) == (3, 3)
    wait_done(jm, [blocker, *waiting.values()])
    started = sorted(waiting, key=lambda p: jm.job(waiting[p]).started_at)
    assert started == [5, 3, 1]


def test_changing_a_limit_while_tasks_wait_takes_effect(jm: JobManager, start_agent, home: Path) -> None:
    assert run_cli(home, "limits", "set", "hold", "--type", "sleep", "--max", "0")[0] == 0
    start_agent("a1", 4)
    job = jm.submit("sleep", {"tasks": 6, "seconds": 0.5, "steps": 5})
    wait_for(lambda: jm.tasks(job).waiting.notna().all(), what="all six waiting")
    assert (jm.tasks(job).attempts == 0).all()

    code, out = run_cli(home, "limits", "set", "hold", "--type", "sleep", "--max", "2")
    assert code == 0, out
    wait_for(lambda: (jm.tasks(job).state == "running").sum() == 2, what="two running")
    code, out = run_cli(home, "limits", "list")
    assert code == 0 and "hold" in out
    assert (jm.tasks(job).state == "running").sum() <= 2

    code, out = run_cli(home, "limits", "delete", "hold")
    assert code == 0 and "limit hold deleted" in out
    wait_for(lambda: (jm.tasks(job).state == "running").sum() >= 3, what="more than the old limit running")
    assert jm.wait(job, timeout=60).state == "completed"
    assert max_running(task_events(jm, [job])) >= 3


def test_store_wakes_waiting_tasks_and_the_sweep_leaves_them_alone(jm: JobManager) -> None:
    """No agent: the store's contract, driven by hand (a fake agent "x" claims)."""
    jm.set_limit("one", queue="default", max_running=1)
    job = jm.submit("sleep", {"tasks": 3})
    t1, t2, t3 = jm.store.get_tasks(job)
    assert jm.store.claim_task(t1.id, t1.dispatch, "x") is not None
    assert jm.store.claim_task(t2.id, t2.dispatch, "x") is None
    assert jm.store.claim_task(t3.id, t3.dispatch, "x") is None
    assert [t.waiting for t in jm.store.get_tasks(job)][1:] == ["waiting: 1/1 tasks running in queue default "
                                                                "(limit one)"] * 2
    runs, _ = jm.store.queue_targets(queued_before=time.time() + 1)
    assert runs == []  # the sweep does not re-send waiting tasks (no busy loop)
    assert jm.store.limits.wake_waiting() == []  # the limit is full
    outcome = jm.store.finish_task(t1.id, "x", "succeeded")
    assert [(d.task_id, d.queue) for d in outcome.wake] == [(t2.id, "default")]  # the best one, for one slot
    assert jm.store.get_tasks(job)[1].waiting is None
    # a lost wake-up (the message never sent) is found by the sweep: t2 is runnable and not waiting
    runs, _ = jm.store.queue_targets(queued_before=time.time() + 1)
    assert [d.task_id for d in runs] == [t2.id]
    # a raised limit wakes what now fits
    woken = jm.store.limits.save("one", type=None, queue="default", per_case=False, max_running=5, actor="t")
    assert [d.task_id for d in woken] == [t3.id]


def test_bad_input_is_one_line_and_changes_nothing(jm: JobManager, home: Path) -> None:
    for args, words in [
        (("limits", "set", "x", "--max", "-1"), "between 0 and"),
        (("limits", "set", "x", "--max", "two"), "whole number"),
        (("limits", "set", "x", "--max", "2", "--queue", "PDF Queue"), "not a queue name"),
        (("limits", "set", "x", "--max", "2", "--type", "no_such_type"), "no_such_type"),
        (("limits", "set", "bad\x1bname", "--max", "2"), "control characters"),
        (("limits", "set", "x"), "--max"),
        (("limits", "delete", "nothing"), "no limit 'nothing'"),
        (("agent", "--queues", "pdf,Bad Queue"), "not a queue name"),
        (("agent", "--queues", ""), "may not be empty"),
    ]:
        code, out = run_cli(home, *args)
        assert code == 2, (args, out)
        assert words in out, (args, out)
        assert "Traceback" not in out
    assert jm.limits().empty
    assert jm.agents().empty

    jm.add_user("viewer", "viewer-password-1", groups=["analysts"])
    code, out = run_cli(home, "limits", "set", "x", "--max", "1", user="viewer")
    assert code == 2 and "manage_agents" in out
    assert jm.limits().empty
    with pytest.raises(Exception, match="per_case"):
        jm.set_limit("x", per_case="yes", max_running=1)  # type: ignore[arg-type]
    audit = jm.audit_log()
    assert ((audit.action == "set_limit") & (audit.allowed == 0)).any()
