"""The batched completer (issue 18): finished tasks written in batches, with the guarantee the README states.

Real agent processes (SIGKILL for crashes, SIGTERM for a graceful stop) on whichever backend the test
run names. A long flush window makes the window the tests aim at wide enough to hit every time.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from jobmanager import JobManager
from jobmanager.home import CONFIG_NAME, Home

from .conftest import wait_for


def set_completer(home: Path, flush_ms: int, batch: int) -> None:
    cfg = home / CONFIG_NAME
    text = re.sub(r"(?m)^completer_(flush_ms|batch)\s*=.*$", "", cfg.read_text())
    cfg.write_text(f"{text}\ncompleter_flush_ms = {flush_ms}\ncompleter_batch = {batch}\n")
    settings = Home.open(home).settings
    assert (settings.completer_flush_ms, settings.completer_batch) == (flush_ms, batch)


def counts(jm: JobManager, job_id: int) -> dict[str, int]:
    states: dict[str, int] = {}
    for t in jm.job(job_id).tasks:
        states[t.state] = states.get(t.state, 0) + 1
    return states


def assert_each_task_reported_once(jm: JobManager, job_id: int, total: int) -> None:
    """Counters, task rows and events agree: every task succeeded once, with one attempt."""
    job = jm.job(job_id)
    assert job.state == "completed", job
    assert (job.tasks_total, job.tasks_succeeded, job.tasks_failed, job.tasks_cancelled) == (total, total, 0, 0)
    assert [t.state for t in job.tasks] == ["succeeded"] * total
    assert all(t.attempts == 1 for t in job.tasks), [(t.seq, t.attempts, t.losses) for t in job.tasks]
    events = jm.events(job_id)
    done = events[(events.kind == "task") & (events.to_state == "succeeded")]
    assert sorted(done.task_id.astype(int)) == sorted(t.id for t in job.tasks)  # once each, never twice
    finished = events[(events.kind == "job") & (events.to_state == "completed")]
    assert len(finished) == 1


def test_sigkill_mid_stream_loses_no_task_and_reports_none_twice(home: Path, jm: JobManager, start_agent) -> None:
    set_completer(home, 500, 1000)
    total = 150  # 2.3 s of work at least: several batches
    victim = start_agent("victim", 2)
    job_id = jm.submit("sleep", {"tasks": total, "seconds": 0.03, "steps": 1})

    def mid_stream() -> bool:  # some outcomes written, more finished and waiting in the buffer
        n = counts(jm, job_id)
        return n.get("succeeded", 0) >= 1 and n.get("running", 0) >= 3

    wait_for(mid_stream, timeout=60, what="a written batch and finished tasks in the buffer")
    victim.kill()
    start_agent("rescuer", 2)
    jm.wait(job_id, timeout=90)
    assert_each_task_reported_once(jm, job_id, total)
    lost = [t for t in jm.job(job_id).tasks if t.losses]
    assert lost and all(t.losses == 1 and t.agent == "rescuer" for t in lost)
    assert jm.agents().set_index("name").loc["victim", "status"] == "lost"


def test_a_finished_task_stays_running_until_its_batch_is_written(home: Path, jm: JobManager, start_agent) -> None:
    """The window is real (the outcome waits in the agent), and a graceful stop writes it before the
    agent reports itself stopped: nothing handed back, no attempt or loss counted."""
    set_completer(home, 10_000, 1000)
    agent = start_agent("a1", 2)
    job_id = jm.submit("sleep", {"tasks": 6, "seconds": 0, "steps": 1})
    wait_for(lambda: counts(jm, job_id) == {"running": 6}, timeout=30, what="all tasks ran, outcomes buffered")
    assert agent.stop() == 0
    assert_each_task_reported_once(jm, job_id, 6)
    assert all(t.losses == 0 and t.agent == "a1" for t in jm.job(job_id).tasks)
    events = jm.events(job_id)
    assert not events.message.fillna("").str.contains("agent stopped").any()  # nothing handed back
    with JobManager(home, user="tester") as other:
        ag = other.agents().set_index("name").loc["a1"]
    assert ag.status == "offline"


def test_batches_write_retries_failures_and_the_job_state(home: Path, jm: JobManager, start_agent) -> None:
    """Failures with attempts left are retried, failures without end the job, in batched writes."""
    set_completer(home, 200, 100)
    start_agent("a1", 2)
    job_id = jm.submit("sleep", {"tasks": 20, "seconds": 0, "steps": 1, "fail_tasks": [3, 7],
                                 "fail_attempts": 1}, retries=1)
    bad = jm.submit("sleep", {"tasks": 4, "seconds": 0, "steps": 1, "fail_tasks": [2]})
    assert jm.wait(job_id, timeout=60).state == "completed"
    job = jm.job(job_id)
    assert [t.attempts for t in job.tasks] == [2 if t.seq in (3, 7) else 1 for t in job.tasks]
    failed = jm.wait(bad, timeout=60)
    assert failed.state == "completed_with_errors"
    assert (failed.tasks_succeeded, failed.tasks_failed) == (3, 1)


def test_an_outcome_the_database_refuses_does_not_drop_its_batch(home: Path, jm: JobManager, tmp_path: Path,
                                                                start_agent) -> None:
    """A task whose error holds a NUL (PostgreSQL's text refuses it) shares a batch with others: its outcome
    is written (the NUL shown as \\x00) and the others' too, none handed back as a loss."""
    importlib.import_module("jm_loss_types")
    set_completer(home, 400, 100)
    start_agent("a1", 2, "--import", "jm_loss_types")
    folder = tmp_path / "runs"
    folder.mkdir()
    bad = jm.submit("scripted", {"folder": str(folder), "script": ["nul"]})
    good = jm.submit("sleep", {"tasks": 6, "seconds": 0, "steps": 1})
    assert jm.wait(bad, timeout=60).state == "failed"
    assert_each_task_reported_once(jm, jm.wait(good, timeout=60).id, 6)
    task = jm.job(bad).tasks[0]
    assert (task.attempts, task.losses) == (1, 0) and "failed\\x00with a NUL" in (task.error or ""), task
