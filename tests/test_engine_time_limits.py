"""Time limits end to end, with real agent processes: a soft limit asks a task to stop (TimeLimitExceeded at
its next ctx.progress / ctx.log, ctx.cancelled() true), a hard limit ends a task that never listens (it runs
in a child process the agent kills), and bad limits are refused with one line."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from jobmanager import JobManager

from .conftest import SUPPORT, agent_env, wait_for

TYPES = "jm_time_limit_types"


@pytest.fixture
def tl(home: Path) -> Iterator[JobManager]:
    """A service that knows the time limit test types (tests/support/jm_time_limit_types.py)."""
    sys.path.insert(0, str(SUPPORT))
    manager = JobManager(home, user="tester", imports=(TYPES,))
    yield manager
    manager.close()
    sys.path.remove(str(SUPPORT))


def start(start_agent, name: str = "a1", workers: int = 2):  # type: ignore[no-untyped-def]
    return start_agent(name, workers, "--import", TYPES)


def task_pid(jm: JobManager, job_id: int) -> int:
    """The pid the task logged first ("pid N"): the agent's for a thread, the child's for a hard limit."""
    found = wait_for(lambda: re.search(r"pid (\d+)", jm.log(job_id)), what="the task's pid in its log")
    return int(found.group(1))  # type: ignore[union-attr]


def runtime(job_id: int, jm: JobManager) -> float:
    task = jm.job(job_id).tasks[0]
    assert task.started_at is not None and task.finished_at is not None
    return task.finished_at - task.started_at


@pytest.mark.parametrize("call", ["progress", "log", "cancelled"])
def test_a_soft_limit_stops_a_task_at_its_next_call(tl: JobManager, start_agent, call: str) -> None:
    """The type's default is 20 s; the job's 0.5 s override wins. ctx.progress and ctx.log raise
    TimeLimitExceeded; a task that checks ctx.cancelled() and returns is timed out all the same."""
    agent = start(start_agent)
    job_id = tl.submit("limited_loop", {"seconds": 60, "call": call}, soft_limit=0.5)
    assert tl.job(job_id).soft_limit == 0.5
    job = tl.wait(job_id, timeout=30)
    task = job.tasks[0]
    assert (job.state, task.state, task.error, task.attempts) == ("failed", "failed", "timed out after 0.5 s", 1)
    assert 0.5 <= runtime(job_id, tl) < 10
    assert "timed out after 0.5 s (soft limit)" in tl.log(job_id)
    assert task_pid(tl, job_id) == agent.pid  # no hard limit: it ran in the agent's worker thread
    if call != "cancelled":
        assert "TimeLimitExceeded" in (task.traceback or "")


def test_a_timed_out_task_is_retried_like_any_failure(tl: JobManager, start_agent) -> None:
    start(start_agent)
    job_id = tl.submit("limited_loop", {"seconds": 60}, soft_limit=0.3, retries=1)
    job = tl.wait(job_id, timeout=30)
    task = job.tasks[0]
    assert (job.state, task.error, task.attempts) == ("failed", "timed out after 0.3 s", 2)
    assert list(tl.events(job_id).to_state).count("retrying") == 1
    assert tl.log(job_id).count("timed out after 0.3 s (soft limit)") == 2


def test_a_task_without_a_limit_reached_succeeds(tl: JobManager, start_agent) -> None:
    start(start_agent)
    job = tl.wait(tl.submit("limited_loop", {"seconds": 0.2, "call": "log"}, soft_limit=30), timeout=30)
    assert job.state == "completed" and "loop done" in tl.log(job.id)


def test_a_hard_limit_ends_an_endless_loop_and_the_agent_stays_healthy(tl: JobManager, start_agent) -> None:
    """The type's default is 3600 s; the job's 1 s override wins. The loop never calls ctx: only killing
    its process ends it. The agent then runs another job."""
    agent = start(start_agent, workers=1)
    job_id = tl.submit("endless", {}, hard_limit=1)
    pid = task_pid(tl, job_id)
    assert pid != agent.pid  # a child process
    job = tl.wait(job_id, timeout=30)
    task = job.tasks[0]
    assert (job.state, task.state, task.error) == ("failed", "failed", "timed out after 1 s (hard limit)")
    assert 1 <= runtime(job_id, tl) < 10
    assert "timed out after 1 s (hard limit); its process was ended" in tl.log(job_id)
    wait_for(lambda: not _alive(pid), what="the task's process gone")
    assert agent.proc.poll() is None
    after = tl.wait(tl.submit("sleep", {"tasks": 2, "seconds": 0.1}), timeout=30)
    assert after.state == "completed"
    assert tl.agents().set_index("name").loc["a1", "status"] in ("idle", "busy")


def test_a_hard_limited_task_runs_in_a_child_like_any_task(tl: JobManager, start_agent) -> None:
    """Progress, logs, outputs and the soft limit work the same in the child process."""
    agent = start(start_agent)
    ok = tl.submit("limited_loop", {"seconds": 0.3, "artifact": True}, hard_limit=30)
    job = tl.wait(ok, timeout=30)
    task = job.tasks[0]
    assert (job.state, task.state, task.attempts) == ("completed", "succeeded", 1)
    assert task.progress_done == task.progress_total and (task.progress_done or 0) > 0
    pid = task_pid(tl, ok)
    assert pid != agent.pid and "loop done after" in tl.log(ok)
    assert list(tl.artifacts(ok)["name"]) == ["done.txt"]

    both = tl.submit("limited_loop", {"seconds": 60}, soft_limit=0.5, hard_limit=20)
    job = tl.wait(both, timeout=30)
    assert (job.state, job.tasks[0].error) == ("failed", "timed out after 0.5 s")  # the soft one, in the child
    assert task_pid(tl, both) != agent.pid and runtime(both, tl) < 10

    retried = tl.wait(tl.submit("endless", {}, hard_limit=0.5, retries=1), timeout=30)
    assert (retried.tasks[0].attempts, retried.tasks[0].error) == (2, "timed out after 0.5 s (hard limit)")


@pytest.mark.parametrize("how", ["SIGKILL", "graceful stop"])
def test_a_child_ends_with_its_agent(tl: JobManager, start_agent, how: str) -> None:
    """No task keeps running behind the store's back: a SIGKILLed agent's child sees its pipe close; an
    agent that stops (its graceful time over) kills its children at exit; the store then recovers the task."""
    agent = start(start_agent)
    job_id = tl.submit("endless", {}, hard_limit=600)
    pid = task_pid(tl, job_id)
    assert _alive(pid)
    if how == "SIGKILL":
        agent.kill()
    else:
        assert agent.stop() == 0
    wait_for(lambda: not _alive(pid), timeout=20, what="the orphaned task process gone")
    start(start_agent, "a2")  # recovers a1's work (a lost agent's task runs again or fails "agent lost")
    wait_for(lambda: (lambda t: t.agent != "a1" or t.state != "running")(tl.job(job_id).tasks[0]), timeout=30,
             what="the task no longer running on a1")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("args", [["--hard-limit", "-1"], ["--soft-limit", "10", "--hard-limit", "5"],
                                  ["--soft-limit", "0"], ["--hard-limit", "inf"]])
def test_the_cli_refuses_bad_limits_with_one_line(home: Path, args: list[str]) -> None:
    cmd = [sys.executable, "-m", "jobmanager", "--home", str(home), "--user", "tester", "submit", "sleep", *args]
    result = subprocess.run(cmd, env=agent_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]  # click adds its usage
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "limit" in errors[0], errors
    with JobManager(home, user="tester") as jm:
        assert jm.jobs().empty


def test_hard_limited_tasks_log_into_their_own_parts(tl: JobManager, start_agent) -> None:
    """A child process appends its task's records to its worker thread's file, inside the part
    the thread's index recorded: one worker runs three child tasks one after another, each task's log is its
    own."""
    start(start_agent, workers=1)
    job_id = tl.submit("sleep", {"tasks": 3, "seconds": 0.05}, hard_limit=30)
    job = tl.wait(job_id, timeout=60)
    assert job.state == "completed"
    assert len(list(tl.home.thread_logs.glob("*.log"))) == 1  # one thread, one file (and its index)
    for n in (1, 2, 3):
        own = tl.log(job_id, task=n)
        assert f"task {n}: sleeping" in own and f"task {n}: done" in own
        assert sorted(set(re.findall(r"task (\d+): ", own))) == [str(n)], own
