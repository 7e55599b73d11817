"""WAL checkpoints in the agent's own thread (issue 18): commits no longer copy the log.

Real SQLite files and a real agent. What is tested: the store's and the queue's connections
checkpoint only past the fallback threshold; the agent's thread copies the log, starts a long one
over, leaves writers alone while a long reader stays, and says once (without creating anything)
when a file cannot be checkpointed.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from jobmanager import JobManager
from jobmanager.engine import checkpoints
from jobmanager.engine.checkpoints import Checkpointer, CheckpointFailed
from jobmanager.engine.queue import Queue
from jobmanager.home import Home
from jobmanager.sqlite_files import AUTOCHECKPOINT_PAGES
from jobmanager.store import open_store
from jobmanager.trouble import TroubleLog

from .backends import PG_REDIS, sqlite_only
from .conftest import wait_for


def autocheckpoint(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def in_a_new_thread(fn):  # type: ignore[no-untyped-def]
    out = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0]


def test_the_store_and_queue_connections_leave_checkpoints_to_the_agents_thread(home: Path) -> None:
    h = Home.open(home)
    store, queue = open_store(h), Queue(h)
    try:
        found = checkpoints.for_agent(store, queue, TroubleLog(logging.getLogger("test")))
        if PG_REDIS:  # nothing of SQLite's to checkpoint
            assert found is None
            return
        assert found is not None and found.paths == [h.store_path, h.queue_path]
        # this thread's connection, and one a worker thread opens later
        assert autocheckpoint(store._conn()) == AUTOCHECKPOINT_PAGES  # type: ignore[attr-defined]
        assert in_a_new_thread(lambda: autocheckpoint(store._conn())) == AUTOCHECKPOINT_PAGES  # type: ignore[attr-defined]
        with queue.huey.storage.db() as curs:
            assert int(curs.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == AUTOCHECKPOINT_PAGES
        assert AUTOCHECKPOINT_PAGES >= 2 * checkpoints.RESTART_PAGES  # with an agent running, no commit copies it
    finally:
        store.close()
        queue.close()


@sqlite_only
def test_a_checkpoint_copies_the_log_and_starts_a_long_one_over(jm: JobManager, home: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "RESTART_PAGES", 40)
    store_path = Home.open(home).store_path
    for _ in range(30):
        jm.submit("sleep", {"tasks": 20, "seconds": 0})
    ckpt = Checkpointer([store_path], TroubleLog(logging.getLogger("test")))
    done = ckpt.checkpoint()[store_path]
    busy, pages, copied = done
    assert busy == 0 and pages > 40 and copied == pages, done  # all of it, and it was long: RESTART
    assert ckpt.restarts == 1
    ckpt.checkpoint()
    assert ckpt.restarts == 1  # nothing written since: the log keeps its length, no RESTART again
    jm.submit("sleep", {"tasks": 1, "seconds": 0})  # the next commit writes at the start of the log again
    busy, pages, copied = ckpt.checkpoint()[store_path]
    assert pages < 40, pages
    assert ckpt.restarts == 1  # a short log: PASSIVE only
    assert jm.job(jm.jobs(limit=1).id.iloc[0]).tasks_total == 1  # and the store reads as written


@sqlite_only
def test_a_reader_that_stays_holds_writers_once_then_restarts_wait(jm: JobManager, home: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "RESTART_PAGES", 40)
    store_path = Home.open(home).store_path
    reader = sqlite3.connect(store_path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM jobs").fetchone()  # a long report's snapshot, kept open
    try:
        for _ in range(30):
            jm.submit("sleep", {"tasks": 20, "seconds": 0})
        now = [time.monotonic()]
        ckpt = Checkpointer([store_path], TroubleLog(logging.getLogger("test")), clock=lambda: now[0])
        started = time.monotonic()
        busy, pages, copied = ckpt.checkpoint()[store_path]
        assert busy == 1 and pages > 40 and ckpt.restarts == 1  # the RESTART could not finish: the reader
        assert time.monotonic() - started < 2 * checkpoints.RESTART_WAIT_MS / 1000 + 1
        jm.submit("sleep", {"tasks": 1, "seconds": 0})  # writers go on
        ckpt.checkpoint()
        assert ckpt.restarts == 1  # PASSIVE only while it backs off
        first = ckpt.restart_paused_for(store_path)
        assert first == checkpoints.RESTART_BACKOFF_S
        now[0] += first  # its back-off is over: the reader still stays
        ckpt.checkpoint()
        assert ckpt.restarts == 2
        assert ckpt.restart_paused_for(store_path) == 2 * first  # longer each time
    finally:
        reader.execute("COMMIT")
        reader.close()


@sqlite_only
def test_a_file_it_cannot_checkpoint_is_said_once_and_not_created(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    gone = tmp_path / "gone.db"
    ckpt = Checkpointer([gone], TroubleLog(logging.getLogger("jobmanager.test.checkpoints")), interval_s=0.01)
    with pytest.raises(CheckpointFailed) as failed:
        ckpt.checkpoint()
    assert failed.value.path == gone and isinstance(failed.value.error, sqlite3.OperationalError)
    with caplog.at_level(logging.ERROR, logger="jobmanager.test.checkpoints"):
        ckpt.start()
        wait_for(lambda: any("checkpoints" in r.getMessage() for r in caplog.records), timeout=10,
                 what="the checkpoint thread's message")
        ckpt.close()
    said = [r.getMessage() for r in caplog.records if "checkpoints" in r.getMessage()]
    assert len(said) == 1, said
    assert not gone.exists()


@sqlite_only
def test_the_thread_waits_while_the_agent_lacks_storage_and_not_for_other_trouble(jm: JobManager, home: Path) -> None:
    trouble = TroubleLog(logging.getLogger("test"))
    ckpt = Checkpointer([Home.open(home).store_path], trouble, interval_s=0.01)
    trouble.failed("queue", ConnectionError("redis down"), None)  # not a storage problem: checkpoints go on
    ckpt.start()
    try:
        wait_for(lambda: ckpt.rounds >= 3, timeout=10, what="checkpoint rounds")
        trouble.failed("task", OSError(28, "No space left on device"), "/srv/home/store.db")  # a full disk
        time.sleep(0.1)
        paused_at = ckpt.rounds
        time.sleep(0.3)
        assert ckpt.rounds == paused_at  # waits while a writer lacks storage
        trouble.ok("task")
        wait_for(lambda: ckpt.rounds > paused_at, timeout=10, what="checkpoints again once it is over")
    finally:
        ckpt.close()
