"""The queue: Huey carries only ids; the store holds the truth.

Two Huey tasks exist: ``jm.run(task_id, dispatch)`` runs one task if its
dispatch counter still matches, and ``jm.finalize(job_id)`` runs a job's
finishing step when the agent that should have run it was lost. What they do
is installed by the agent process (:func:`set_handler`); a process that only
submits never executes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from huey.api import Huey
from huey.storage import RedisStorage, SqliteStorage

from jobmanager.backends import queue_at
from jobmanager.engine.queue_redis import redis_huey, send_many
from jobmanager.home import Home, create_private
from jobmanager.models import Dispatch

QUEUE_NAME = "jobmanager"


class Handler(Protocol):
    def run(self, task_id: int, dispatch: int) -> None: ...
    def finalize(self, job_id: int) -> None: ...


_HANDLER: Handler | None = None


def set_handler(handler: Handler | None) -> None:
    """Install what the queue's tasks do in this (agent) process."""
    global _HANDLER
    _HANDLER = handler


def _handler() -> Handler:
    if _HANDLER is None:
        raise RuntimeError("this process is not a Job Manager agent")
    return _HANDLER


class QueueStorage(SqliteStorage):
    """SqliteHuey's storage with ``synchronous=NORMAL`` instead of an fsync per dequeue.

    Safe here because the queue holds no truth: a message lost to a power cut is
    re-sent by an agent's sweep from the store, and a duplicate is dropped by the
    store's conditional claim. (``fsync=False`` would mean ``OFF``, which can
    corrupt the file on an OS crash; NORMAL in WAL mode cannot.) Measured by
    benchmarks/whatif_throughput.py: about 3x the managed throughput.
    """

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("pragma synchronous=NORMAL")
        return conn


class Queue:
    """The Huey instance of a home, with the two tasks registered."""

    def __init__(self, home: Home) -> None:
        at = queue_at(home)
        if at.url is not None:  # redis://host:port/db: PriorityRedisHuey, blocking dequeue (queue_redis.py)
            self.huey: Huey = redis_huey(at.url, QUEUE_NAME)
        else:
            assert at.path is not None
            create_private(at.path)  # before SQLite makes it (and its -wal/-shm) with the umask's mode
            self.huey = Huey(
                QUEUE_NAME, storage_class=QueueStorage, filename=str(at.path), results=False, utc=True,
                timeout=30,
            )

        @self.huey.task(name="jm.run")
        def run(task_id: int, dispatch: int) -> None:
            _handler().run(task_id, dispatch)

        @self.huey.task(name="jm.finalize")
        def finalize(job_id: int) -> None:
            _handler().finalize(job_id)

        # huey's TaskWrapper objects (huey has no type hints): called, or ``.s(...)`` to build a message
        self._run: Any = run
        self._finalize: Any = finalize

    def send(self, dispatches: Iterable[Dispatch]) -> None:
        """Enqueue run messages; on SQLite all of them in one transaction."""
        items = list(dispatches)
        if not items:
            return
        messages: list[tuple[bytes, int | None]] = [
            (self.huey.serialize_task(self._run.s(d.task_id, d.dispatch, priority=d.priority)), d.priority)
            for d in items
        ]
        storage = self.huey.storage
        if isinstance(storage, SqliteStorage):
            with storage.db(commit=True) as curs:
                curs.executemany(
                    "insert into task (queue, data, priority) values (?, ?, ?)",
                    [(storage.name, storage.to_blob(data), prio or 0) for data, prio in messages],
                )
        elif isinstance(storage, RedisStorage):
            send_many(storage, messages)  # one round trip
        else:  # pragma: no cover - other Huey storages
            for data, prio in messages:
                storage.enqueue(data, prio)

    def send_finalize(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids:
            self.huey.enqueue(self._finalize.s(job_id, priority=1_000_000))

    def pending(self) -> tuple[set[tuple[int, int]], set[int]]:
        """What the queue holds now: run messages as (task_id, dispatch), finalize job ids."""
        runs: set[tuple[int, int]] = set()
        finals: set[int] = set()
        for task in self.huey.pending():
            if task.name == "jm.run":
                runs.add((int(task.args[0]), int(task.args[1])))
            elif task.name == "jm.finalize":
                finals.add(int(task.args[0]))
        return runs, finals

    def size(self) -> int:
        return int(self.huey.pending_count())

    def close(self) -> None:
        self.huey.storage.close()
        pool = getattr(self.huey.storage, "pool", None)  # Redis: drop the pooled connections
        if pool is not None:
            pool.disconnect()
