"""A crash is not a failure: a lost agent's tasks run again without spending an attempt (issue 14).

Real agent processes killed with SIGKILL (by the test, or by a poison task from inside), on
whichever backend the test run names (SQLite, or PostgreSQL + Redis with JOBMANAGER_TEST_BACKEND).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobmanager import JobManager
from jobmanager.cli.main import cli
from jobmanager.models import NewTask
from jobmanager.store import open_store

from .conftest import wait_for

#: agents that can run the job types of tests/support/jm_loss_types.py
LOSS_TYPES = ("--import", "jm_loss_types")


@pytest.fixture
def lm(jm: JobManager) -> Iterator[JobManager]:
    """``jm`` that also knows the test's job types (the agents import them with --import)."""
    importlib.import_module("jm_loss_types")
    yield jm


def task_states(jm: JobManager, job_id: int) -> list[str]:
    return [t.state for t in jm.job(job_id).tasks]


def messages(jm: JobManager, job_id: int) -> list[str]:
    return [m for m in jm.events(job_id).message if isinstance(m, str)]


def test_killed_agent_task_completes_on_another_agent_without_spending_an_attempt(
        home: Path, jm: JobManager, start_agent) -> None:
    victim = start_agent("victim", 1)
    job_id = jm.submit("sleep", {"tasks": 1, "seconds": 2.0, "steps": 20})  # retries=0: one attempt only
    wait_for(lambda: task_states(jm, job_id) == ["running"], what="task running on victim")
    victim.kill()
    start_agent("rescuer", 1)
    job = jm.wait(job_id, timeout=60)
    task = job.tasks[0]
    assert job.state == "completed" and task.agent == "rescuer"
    assert (task.attempts, task.max_attempts, task.losses) == (1, 1, 1)
    events = jm.events(job_id)
    loss = events[events.message.fillna("").str.contains("loss 1 of 3")]
    assert len(loss) == 1 and loss.iloc[0].to_state == "queued" and loss.iloc[0].task_id == task.id
    assert loss.iloc[0].message == "agent victim lost (loss 1 of 3); queued again, no attempt spent"
    assert jm.agents().set_index("name").loc["victim", "status"] == "lost"
    shown = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "show", str(job_id)])
    assert shown.exit_code == 0 and "attempts 1/1  losses 1/3  rescuer" in shown.output, shown.output


def test_poison_task_fails_after_three_losses_and_other_agents_survive(lm: JobManager, start_agent) -> None:
    agents = [start_agent(f"a{i}", 1, *LOSS_TYPES) for i in range(1, 5)]
    job_id = lm.submit("kill_agent", {})
    job = lm.wait(job_id, timeout=120)
    task = job.tasks[0]
    assert job.state == "failed" and job.max_losses == 3
    assert task.state == "failed" and task.losses == 3 and task.attempts == 0
    assert task.error.startswith("killed its agent 3 times (the last: agent ") and "max_losses is 3" in task.error
    dead = sorted(a.name for a in agents if a.proc.poll() is not None)
    alive = [a.name for a in agents if a.proc.poll() is None]
    assert len(dead) == 3 and len(alive) == 1  # each run killed the agent it landed on, and only that one
    text = messages(lm, job_id)
    assert [sum(f"(loss {k} of 3)" in m for m in text) for k in (1, 2, 3)] == [1, 1, 1]
    assert sum(m.startswith(f"agent {name} lost (loss ") for m in text for name in dead) == 3
    status = lm.agents().set_index("name").status
    assert list(status[dead]) == ["lost"] * 3 and status[alive[0]] == "idle"
    assert lm.wait(lm.submit("sleep", {"tasks": 1}), timeout=30).state == "completed"  # the survivor works on


def test_max_losses_of_the_job_type_is_honoured(lm: JobManager, start_agent) -> None:
    agents = [start_agent(f"a{i}", 1, *LOSS_TYPES) for i in range(1, 4)]
    job_id = lm.submit("kill_agent_max2", {})
    job = lm.wait(job_id, timeout=90)
    task = job.tasks[0]
    assert job.state == "failed" and job.max_losses == 2 and task.losses == 2
    assert "killed its agent 2 times" in task.error
    assert sum(a.proc.poll() is not None for a in agents) == 2
    assert sum("(loss 2 of 2)" in m for m in messages(lm, job_id)) == 1


def test_type_not_safe_to_rerun_fails_at_once_when_its_agent_is_killed(lm: JobManager, start_agent) -> None:
    victim = start_agent("victim", 1, *LOSS_TYPES)
    job_id = lm.submit("unsafe_sleep", {"tasks": 1, "seconds": 30, "steps": 300}, retries=2)
    wait_for(lambda: task_states(lm, job_id) == ["running"], what="task running on victim")
    victim.kill()
    start_agent("rescuer", 1, *LOSS_TYPES)
    job = lm.wait(job_id, timeout=30)
    task = job.tasks[0]
    assert job.state == "failed" and not job.rerun_safe and task.losses == 1
    assert task.error == ("agent victim lost while running the task; job type unsafe_sleep is not safe to re-run"
                          " (rerun_safe = False), so it was not run again")
    events = lm.events(job_id)
    assert list(events[events.kind == "task"].to_state) == ["running", "failed"]  # never run again
    assert "(loss 1 of 3)" in events[events.kind == "task"].message.iloc[-1]


def test_attempts_and_losses_are_separate_budgets(lm: JobManager, start_agent, tmp_path: Path) -> None:
    # retries=2: a failure spends attempt 1; two losses after it spend none; the fourth run succeeds.
    folder = tmp_path / "runs"
    folder.mkdir()
    agents = [start_agent(f"a{i}", 1, *LOSS_TYPES) for i in range(1, 4)]
    job_id = lm.submit("scripted", {"folder": str(folder), "script": ["fail", "kill", "kill", "ok"]}, retries=2)
    job = lm.wait(job_id, timeout=90)
    task = job.tasks[0]
    assert job.state == "completed"
    assert (task.attempts, task.max_attempts, task.losses) == (2, 3, 2)
    assert sorted(p.name for p in folder.iterdir()) == [
        "run-1-attempt-1", "run-2-attempt-2", "run-3-attempt-2", "run-4-attempt-2"]
    assert sum(a.proc.poll() is not None for a in agents) == 2


def test_graceful_stop_spends_no_attempt_and_counts_no_loss(jm: JobManager, start_agent) -> None:
    first = start_agent("first", 1, "--shutdown-timeout", "0.2")
    job_id = jm.submit("sleep", {"tasks": 1, "seconds": 3.0, "steps": 30})
    wait_for(lambda: task_states(jm, job_id) == ["running"], what="task running")
    assert first.stop() == 0
    task = jm.job(job_id).tasks[0]
    assert (task.state, task.attempts, task.losses) == ("queued", 0, 0)
    start_agent("second", 1)
    task = jm.wait(job_id, timeout=30).tasks[0]
    assert (task.state, task.attempts, task.losses, task.agent) == ("succeeded", 1, 0, "second")
    assert not any("loss" in m for m in messages(jm, job_id))


def test_task_missing_from_a_live_agents_heartbeat_is_recovered(jm: JobManager, start_agent) -> None:
    start_agent("a1", 2)
    real = jm.submit("sleep", {"tasks": 1, "seconds": 3.0, "steps": 30})
    wait_for(lambda: task_states(jm, real) == ["running"], what="a real task running on a1")
    # The store says a1 runs a task that a1 knows nothing of (as after a finish write that failed).
    store = open_store(jm.home)
    ghost, _ = store.create_job(
        type="sleep", name="ghost", params={"tasks": 1}, owner="tester", case=None, priority=0, retries=0,
        has_finish=False, tasks=[NewTask("sleep 1", {"n": 1})], actor="tester",
    )
    task = jm.job(ghost).tasks[0]
    assert store.claim_task(task.id, task.dispatch, "a1") is not None
    job = jm.wait(ghost, timeout=30)  # handed back within a few heartbeats, then run for real by a1
    task = job.tasks[0]
    assert job.state == "completed" and (task.attempts, task.losses, task.agent) == (1, 1, "a1")
    assert "agent a1 no longer reports the task in its heartbeat (loss 1 of 3); queued again, no attempt spent" \
        in messages(jm, ghost)
    job = jm.wait(real, timeout=30)  # the task a1 really ran was never taken from it
    assert job.state == "completed" and (job.tasks[0].attempts, job.tasks[0].losses) == (1, 0)


def test_reconciling_never_takes_a_task_its_agent_runs(jm: JobManager, start_agent) -> None:
    # Many short tasks on two agents: claims and finishes race every heartbeat's snapshot.
    start_agent("a1", 2)
    start_agent("a2", 2)
    job_id = jm.submit("sleep", {"tasks": 150, "seconds": 0.02, "steps": 1})
    job = jm.wait(job_id, timeout=120)
    assert job.state == "completed"
    assert {(t.attempts, t.losses) for t in job.tasks} == {(1, 0)}
    assert not any("heartbeat" in m for m in messages(jm, job_id))
