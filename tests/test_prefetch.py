"""Prefetch (issue 18): while tasks are short, one dequeue takes several messages; none is lost, run twice
or held back from idle workers.

The queue tests use a home's real queue (the SQLite file, or Redis with JOBMANAGER_TEST_BACKEND=pg-redis); the
agent tests run real agent processes (SIGKILL for a crash, SIGTERM for a graceful stop).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobmanager import JobManager
from jobmanager.engine.prefetch import SHORT_S
from jobmanager.engine.queue import Queue
from jobmanager.home import CONFIG_NAME, Home
from jobmanager.models import Dispatch

from .backends import sqlite_only
from .conftest import wait_for


@pytest.fixture
def queue(home: Path) -> Iterator[Queue]:
    q = Queue(Home.open(home))
    yield q
    q.close()


def take(q: Queue) -> tuple[int, int] | None:
    """One dequeue, as a worker makes it: (task id, dispatch) of the message, or None."""
    task = q.huey.dequeue()
    return None if task is None else (int(task.args[0]), int(task.args[1]))


def table(home: Path) -> list[tuple[int, int]]:
    """The messages in the queue, best first, read by another Queue (not through the buffer)."""
    q = Queue(Home.open(home))
    try:
        return [(int(t.args[0]), int(t.args[1]))
                for t in (q.huey.deserialize_task(data) for data in q.huey.storage.enqueued_items())]
    finally:
        q.close()


def send(q: Queue, ids: range, priority: int = 0) -> None:
    q.send([Dispatch(i, 0, priority, "default") for i in ids])


def test_a_short_previous_message_takes_a_batch_and_the_order_is_the_queues(home: Path, queue: Queue) -> None:
    send(queue, range(1, 11))
    send(queue, range(11, 16), priority=5)  # sent later, better priority: first
    assert queue.start_prefetch(batch=4, hold_ms=4000, short_ms=1000)  # every take within 1 s counts as short
    prefetch = queue.huey.storage.prefetch
    got = [take(queue)]  # this thread's first dequeue: nothing says tasks are short, one message
    assert prefetch.batches == 0 and len(table(home)) == 14
    got.append(take(queue))  # right after: a batch of 4, one returned, three held
    assert prefetch.batches == 1 and len(prefetch.held()) == 3 and len(table(home)) == 10
    assert queue.size() == 13  # held messages still count as queued (the sweep does not send them again)
    runs, _ = queue.pending()
    assert {t for t, _ in runs} == set(range(1, 16)) - {t for t, _ in got}  # type: ignore[misc]
    while (message := take(queue)) is not None:
        got.append(message)
    assert [t for t, _ in got] == [*range(11, 16), *range(1, 11)]  # type: ignore[misc]
    assert prefetch.batches > 1


def test_a_long_previous_message_takes_one(home: Path, queue: Queue) -> None:
    send(queue, range(1, 6))
    queue.start_prefetch(batch=8, hold_ms=4000)  # the default: short is under 5 ms
    for _ in range(3):
        take(queue)
        time.sleep(SHORT_S * 4)  # the "task" took longer than a short one
    assert queue.huey.storage.prefetch.batches == 0
    assert len(table(home)) == 2


def test_held_messages_go_back_to_the_queue_in_their_places(home: Path, queue: Queue) -> None:
    send(queue, range(1, 11))
    queue.start_prefetch(batch=8, hold_ms=100, short_ms=1000)
    assert take(queue) == (1, 0)
    assert take(queue) == (2, 0)  # a batch: 3..9 held
    assert [t for t, _ in table(home)] == [10]
    wait_for(lambda: len(table(home)) == 8, timeout=5, what="held messages back in the queue")
    assert [t for t, _ in table(home)] == list(range(3, 11))  # their own ids: ahead of later messages
    assert queue.huey.storage.prefetch.held() == []


@sqlite_only  # SQLite reuses a free row id; a Redis member is the message itself (its time prefix and data)
def test_a_put_back_message_whose_id_was_taken_again_goes_to_the_end(home: Path, queue: Queue) -> None:
    send(queue, range(1, 2))  # row 1
    send(queue, range(2, 3), priority=5)  # row 2
    send(queue, range(3, 4), priority=9)  # row 3
    queue.start_prefetch(batch=2, hold_ms=4000, short_ms=1000)
    take(queue)  # nothing yet says tasks are short: row 3 alone
    send(queue, range(4, 5), priority=9)  # row 4
    assert take(queue) == (4, 0)  # a batch: row 4 returned, row 2 held; the file keeps row 1
    assert [t for t, _ in table(home)] == [1]
    send(queue, range(5, 6))  # SQLite gives it the free id 2, the held message's
    queue.stop_prefetch()
    assert [t for t, _ in table(home)] == [2, 1, 5]  # both there: nothing overwritten, nothing lost


def test_stopping_puts_the_buffer_back_and_later_dequeues_take_one(home: Path, queue: Queue) -> None:
    send(queue, range(1, 21))
    queue.start_prefetch(batch=8, hold_ms=4000, short_ms=1000)
    take(queue)
    take(queue)
    assert len(table(home)) == 11
    queue.stop_prefetch()
    assert len(table(home)) == 18 and queue.size() == 18
    assert queue.huey.storage.prefetch is None
    take(queue)
    take(queue)
    assert len(table(home)) == 16


def test_prefetch_settings_are_checked(home: Path) -> None:
    cfg = home / CONFIG_NAME
    text = cfg.read_text()
    assert "prefetch_batch = 8" in text and "prefetch_hold_ms = 50" in text  # documented in a new home's file
    for bad in ("prefetch_batch = 0", "prefetch_batch = 101", 'prefetch_batch = "8"', "prefetch_hold_ms = 0",
                "prefetch_hold_ms = 4001", "prefetch_short_ms = 0", "prefetch_short_ms = 1001"):
        cfg.write_text(re.sub(r"(?m)^prefetch_\w+ = .*$", "", text) + f"\n{bad}\n")
        with pytest.raises(Exception, match="prefetch_"):
            Home.open(home).settings  # noqa: B018


# -- real agents ---------------------------------------------------------------------------------------------
def set_prefetch(home: Path, batch: int, hold_ms: int, short_ms: int = 1000) -> None:
    """Agent settings; by default every task counts as short (a loaded machine cannot turn a test's batch
    into single messages)."""
    cfg = home / CONFIG_NAME
    text = re.sub(r"(?m)^prefetch_\w+\s*=.*$", "", cfg.read_text())
    cfg.write_text(f"{text}\nprefetch_batch = {batch}\nprefetch_hold_ms = {hold_ms}\nprefetch_short_ms = {short_ms}\n")
    settings = Home.open(home).settings
    assert (settings.prefetch_batch, settings.prefetch_hold_ms, settings.prefetch_short_ms) == (batch, hold_ms,
                                                                                                short_ms)


def states(jm: JobManager, job_id: int) -> dict[int, str]:
    return {t.seq: t.state for t in jm.job(job_id).tasks}


def stalled(jm: JobManager, job_id: int, seq: int) -> bool:
    s = states(jm, job_id)
    return s[seq] == "running" and all(s[n] == "succeeded" for n in range(1, seq))


def assert_ran_once(jm: JobManager, job_id: int, seqs: list[int]) -> None:
    tasks = {t.seq: t for t in jm.job(job_id).tasks}
    assert all(tasks[n].state == "succeeded" for n in seqs), {n: tasks[n].state for n in seqs}
    events = jm.events(job_id)
    done = events[(events.kind == "task") & (events.to_state == "succeeded")]
    assert sorted(done.task_id.astype(int)) == sorted(tasks[n].id for n in states(jm, job_id)
                                                      if tasks[n].state == "succeeded")  # once each


def test_a_long_task_after_short_ones_does_not_hold_the_messages_it_took(home: Path, jm: JobManager,
                                                                        start_agent) -> None:
    """One worker: it takes task 3 from a batch and stalls on it; the rest of the batch goes back to the
    queue within the hold time, in order, where another agent's idle worker finds it."""
    set_prefetch(home, 8, 2000)
    start_agent("a1", 1)
    job_id = jm.submit("stall_at", {"tasks": 12, "stall": 3})
    wait_for(lambda: stalled(jm, job_id, 3), timeout=30, what="task 3 stalls")
    ids = {t.seq: t.id for t in jm.job(job_id).tasks}
    behind = [ids[n] for n in range(4, 13)]
    assert [t for t, _ in table(home)] != behind  # held by a1 for now (not yet 2 s)
    wait_for(lambda: [t for t, _ in table(home)] == behind, timeout=10,
             what="the messages a1 took behind task 3 back in the queue, in order")
    start_agent("a2", 1)
    wait_for(lambda: all(s == "succeeded" for n, s in states(jm, job_id).items() if n != 3), timeout=30,
             what="a2 runs the rest while a1 is stalled")
    assert {t.agent for t in jm.job(job_id).tasks if t.seq > 3} == {"a2"}
    assert {(t.attempts, t.losses) for t in jm.job(job_id).tasks if t.seq > 3} == {(1, 0)}  # given back unspent
    jm.cancel(job_id)
    jm.wait(job_id, timeout=30)
    assert_ran_once(jm, job_id, [n for n in range(1, 13) if n != 3])


def test_sigkill_loses_the_taken_messages_not_the_tasks(home: Path, jm: JobManager, start_agent) -> None:
    """Messages held when the agent is SIGKILLed are gone from the queue; on SQLite their tasks were claimed with
    the batch (running for the victim), and the next agent recovers them from the store: each task runs once,
    none is left running, no attempt is spent. The store cannot tell a claimed task from a started one, so each
    counts a loss (the batch's claims keep such tasks, and jobs not safe to re-run, for when they start). On
    PostgreSQL the tasks are still queued, and the next agent's sweep sends their messages again."""
    set_prefetch(home, 8, 4000)
    victim = start_agent("victim", 1)
    job_id = jm.submit("stall_at", {"tasks": 12, "stall": 3, "seconds": 1.5})
    wait_for(lambda: stalled(jm, job_id, 3), timeout=30, what="task 3 stalls")
    ids = {t.seq: t.id for t in jm.job(job_id).tasks}
    in_queue = {t for t, _ in table(home)}
    held = [n for n in range(4, 13) if ids[n] not in in_queue]
    assert held, "the victim held no messages: nothing to lose"
    ahead = jm.store.claims_ahead  # SQLite: claimed with the batch; PostgreSQL: claimed when they start
    assert {n: (t.state, t.agent) for n, t in tasks_of(jm, job_id).items() if n in held} == {
        n: ("running", "victim") if ahead else ("queued", None) for n in held}
    victim.kill()
    start_agent("rescuer", 2)
    job = jm.wait(job_id, timeout=60)
    assert job.state == "completed", job
    assert_ran_once(jm, job_id, list(range(1, 13)))
    tasks = tasks_of(jm, job_id)
    assert {tasks[n].agent for n in held} == {"rescuer"}
    assert {(tasks[n].attempts, tasks[n].losses) for n in held} == {(1, 1 if ahead else 0)}


def test_claimed_tasks_that_wait_are_checked_before_they_start(home: Path, jm: JobManager, start_agent) -> None:
    """Tasks claimed with a batch wait in the agent's buffer while task 3 runs: a pause, then a cancel, made
    meanwhile reach them before they start. Paused: they go back to the queue (no attempt spent) and run once
    after the resume; cancelled: they end cancelled with no attempt counted, never started (no log part)."""
    if not jm.store.claims_ahead:
        pytest.skip("this backend's agents claim each task when it starts (Dialect.claims_ahead)")
    set_prefetch(home, 8, 4000)
    start_agent("a1", 1)
    for action in ("pause", "cancel"):
        held_then(jm, jm.submit("stall_at", {"tasks": 12, "stall": 3, "seconds": 1.5}), action)


def held_then(jm: JobManager, job_id: int, action: str) -> None:
    """Wait until task 3 stalls with tasks claimed behind it, ``action`` the job, and check what they became."""
    from jobmanager.engine.tasklogs import parse_marks, scan_thread_indexes

    wait_for(lambda: stalled(jm, job_id, 3), timeout=30, what="task 3 stalls")
    held = [n for n, t in tasks_of(jm, job_id).items() if n > 3 and t.state == "running"]
    assert held, "nothing claimed ahead"
    if action == "pause":
        jm.pause(job_id)
        wait_for(lambda: states(jm, job_id)[3] == "succeeded", timeout=30, what="task 3 ends")
        wait_for(lambda: all(states(jm, job_id)[n] == "queued" for n in held), timeout=10,
                 what="the claimed tasks back in the queue")
        tasks = tasks_of(jm, job_id)
        assert {(tasks[n].attempts, tasks[n].losses) for n in held} == {(0, 0)}
        jm.resume(job_id)
        assert jm.wait(job_id, timeout=60).state == "completed"
        assert_ran_once(jm, job_id, list(range(1, 13)))
        assert {t.attempts for t in jm.job(job_id).tasks} == {1}
        return
    jm.cancel(job_id)
    assert jm.wait(job_id, timeout=60).state == "cancelled"
    wait_for(lambda: all(states(jm, job_id)[n] == "cancelled" for n in held), timeout=30,
             what="the claimed tasks cancelled")  # once task 3 has seen the cancel and ended
    tasks = tasks_of(jm, job_id)
    assert {tasks[n].attempts for n in held} == {0}
    runs = {run for n in held for run in parse_marks(tasks[n].log_slices)}
    assert runs, "a claim ahead marks its agent's run"
    started = scan_thread_indexes(jm.home.thread_logs, job_id, [tasks[n].id for n in held], runs)
    assert started == {}, started  # none of them began


def tasks_of(jm: JobManager, job_id: int) -> dict[int, Any]:
    return {t.seq: t for t in jm.job(job_id).tasks}


def test_a_graceful_stop_puts_the_taken_messages_back(home: Path, jm: JobManager, start_agent) -> None:
    set_prefetch(home, 8, 4000)
    agent = start_agent("a1", 1)
    job_id = jm.submit("stall_at", {"tasks": 12, "stall": 3, "seconds": 1.0})
    wait_for(lambda: stalled(jm, job_id, 3), timeout=30, what="task 3 stalls")
    ids = {t.seq: t.id for t in jm.job(job_id).tasks}
    assert len(table(home)) < 9  # some of tasks 4-12 are held by the agent
    assert agent.stop() == 0
    assert states(jm, job_id)[3] == "succeeded"
    assert [t for t, _ in table(home)] == [ids[n] for n in range(4, 13)]  # all back, in order
    rest = [t for t in jm.job(job_id).tasks if t.seq > 3]  # claimed with the batch: given back as unclaimed
    assert {(t.state, t.attempts, t.losses) for t in rest} == {("queued", 0, 0)}


def test_a_stop_whose_put_back_fails_says_so_and_goes_on(home: Path, queue: Queue, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A full disk at the stop: the agent's stop must go on (its completer still writes outcomes); the
    held messages are lost from the queue, not the tasks (the sweep sends them again)."""
    send(queue, range(1, 11))
    queue.start_prefetch(batch=8, hold_ms=4000, short_ms=1000)
    take(queue)
    take(queue)

    def full(messages: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(queue.huey.storage, "put_back", full)
    queue.stop_prefetch()  # does not raise
    assert queue.huey.storage.prefetch is None
    assert "7 messages could not be put back in the queue (database or disk is full); the sweep sends them again" \
        in caplog.text
