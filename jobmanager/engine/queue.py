"""The queue: Huey carries only ids; the store holds the truth.

Named queues: every job queue (``jobs.queue``, e.g. ``default``, ``pdf``) is its own Huey queue
name in the same storage (:func:`huey_queue`: ``jobmanager`` for ``default``, the name used before
queues existed, and ``jobmanager.<queue>`` for the others). Both of Huey's storages key on that
name (SQLite: the ``queue`` column of its ``task`` table; Redis: one sorted set per name), so a
message is only ever seen by an agent that serves its queue. Huey's consumer takes one Huey
instance whose storage dequeues one name; ours dequeues from every queue the agent serves
(:class:`QueueStorage` here, :class:`~jobmanager.engine.queue_redis.QueueRedisStorage`), so one
consumer with its usual workers serves several queues and nothing else of Huey changes.

Two Huey tasks exist: ``jm.run(task_id, dispatch)`` runs one task if its
dispatch counter still matches, and ``jm.finalize(job_id)`` runs a job's
finishing step when the agent that should have run it was lost. What they do
is installed by the agent process (:func:`set_handler`); a process that only
submits never executes them.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from huey.api import Huey
from huey.storage import SqliteStorage

from jobmanager import sqlite_files
from jobmanager.backends import queue_at
from jobmanager.engine.prefetch import BATCH, HOLD_S, SHORT_S, Message, Prefetch
from jobmanager.engine.queue_redis import QueueRedisStorage, redis_huey, send_many
from jobmanager.engine.wake import wake_all
from jobmanager.home import Home, create_private
from jobmanager.models import Dispatch

QUEUE_NAME = "jobmanager"
DEFAULT_QUEUE = "default"


def huey_queue(queue: str) -> str:
    """The Huey queue name of job queue ``queue`` (a :func:`jobmanager.validate.queue_name`)."""
    return QUEUE_NAME if queue == DEFAULT_QUEUE else f"{QUEUE_NAME}.{queue}"


def message_id(job_id: int | None) -> str | None:
    """A run message's Huey id: ``j<job>.<uuid4>`` carries the task's job as a hint for the claim (None: Huey's
    own uuid4). In the id rather than the arguments, so agents of the version before read these messages,
    and this version reads theirs: the message's arguments are still ``(task_id, dispatch)``."""
    return None if job_id is None else f"j{int(job_id)}.{uuid.uuid4()}"


def job_hint(message: str | None) -> int | None:
    """The job a run message's id names, or None (a message without the hint, or an id of another shape)."""
    found = _HINT.match(message or "")
    return int(found.group(1)) if found else None


_HINT = re.compile(r"j([1-9][0-9]{0,17})\.")


class AheadClaims(Protocol):
    """What claims a prefetched batch's tasks (the agent's :class:`jobmanager.engine.runner.Runner`)."""

    def claim_ahead(self, wanted: list[Dispatch | None]) -> list[bool | None]: ...

    def release_ahead(self, keys: list[tuple[int, int]], reason: str) -> list[tuple[int, int]]: ...


class Handler(Protocol):
    def run(self, task_id: int, dispatch: int, job_id: int | None = None) -> None: ...
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


class EngineHuey(Huey):
    """Huey without revocation: the engine never revokes through Huey (a cancel, a pause or a stale
    message is decided by the store's conditional claim), so the revoke check before each task and the
    revoke-key delete after it (two storage round trips per task) are skipped."""

    def is_revoked(self, task: Any, timestamp: Any = None, peek: bool = True) -> bool:
        return False

    def delete(self, key: str) -> bool:
        if key.startswith("r:"):  # a task's revoke key (``Task.revoke_id``): never written here
            return False
        return bool(super().delete(key))


class QueueStorage(SqliteStorage):
    """SqliteHuey's storage with ``synchronous=NORMAL`` instead of an fsync per dequeue, dequeuing
    from every served queue.

    ``synchronous=NORMAL`` is safe here because the queue holds no truth: a message lost to a power cut
    is re-sent by an agent's sweep from the store, and a duplicate is dropped by the store's conditional
    claim. (``fsync=False`` would mean ``OFF``, which can corrupt the file on an OS crash; NORMAL in WAL
    mode cannot.) Measured by benchmarks/whatif_throughput.py: about 3x the managed throughput.

    ``served`` are the Huey queue names a dequeue takes from: the best message (priority, then age)
    of all of them, each queue's head found through Huey's (queue, priority, id) index.
    """

    served: tuple[str, ...] = (QUEUE_NAME,)
    #: per worker thread: whether its last dequeue found nothing (``empty``)
    _idle: threading.local
    #: the agent's shared buffer of taken messages (None: one message per dequeue; see engine/prefetch.py)
    prefetch: Prefetch | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._idle = threading.local()
        super().__init__(*args, **kwargs)

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        sqlite_files.tune(conn)  # the store's pragmas: one rule for both files
        return conn

    def dequeue(self) -> Any:
        if self.prefetch is not None:
            return self.prefetch.take()
        messages = self.pop(1)
        return messages[0].data if messages else None

    def pop(self, k: int) -> list[Message]:
        """Take up to ``k`` messages, best first (priority, then age), in one transaction."""
        names = self.served
        marks = ",".join("?" * len(names))
        # Quick check without the exclusive lock (as Huey's own dequeue), but only after this thread found
        # the queue empty: while messages flow it would be one more statement per task, and each is a
        # GIL hand-off between busy workers (issue 18).
        if getattr(self._idle, "empty", True) and not self.sql(
                f"select 1 from task where queue in ({marks}) limit 1", names, results=True):
            return []
        heads = " union all ".join(
            "select * from (select id, priority from task where queue = ? order by priority desc, id limit ?)"
            for _ in names
        )
        # One statement, its own transaction (the connection autocommits): take the heads, return them.
        with self.db() as curs:
            curs.execute(f"delete from task where id in (select id from ({heads}) order by priority desc, id limit ?)"
                         " returning id, queue, data, priority", [v for name in names for v in (name, k)] + [k])
            rows = curs.fetchall()
        self._idle.empty = not rows
        return sorted((Message(*row) for row in rows), key=lambda m: (-m.priority, m.id))

    def put_back(self, messages: Sequence[Message]) -> None:
        """Return taken messages, each with its own id where it is still free (its place among its
        priority's messages), else at the end."""
        with self.db(commit=True) as curs:
            for m in messages:
                curs.execute("insert or ignore into task (id, queue, data, priority) values (?, ?, ?, ?)",
                             (m.id, m.queue, m.data, m.priority))
                if curs.rowcount == 0:
                    curs.execute("insert into task (queue, data, priority) values (?, ?, ?)",
                                 (m.queue, m.data, m.priority))

    _ALL = "(queue = ? or queue like ?)"

    def enqueued_items(self, limit: int | None = None) -> list[Any]:
        """The messages of every job queue of the home (the sweep compares them with the store), this
        process's prefetched ones first."""
        held = [] if self.prefetch is None else self.prefetch.held()
        sql = f"select data from task where {self._ALL} order by priority desc, id"
        params: tuple[Any, ...] = (QUEUE_NAME, QUEUE_NAME + ".%")
        if limit is not None:
            sql, params = sql + " limit ?", (*params, limit)
        return (held + [data for data, in self.sql(sql, params, results=True)])[:limit]

    def queue_size(self) -> int:
        held = 0 if self.prefetch is None else len(self.prefetch.held())
        return held + int(self.sql(f"select count(id) from task where {self._ALL}", (QUEUE_NAME, QUEUE_NAME + ".%"),
                                   results=True)[0][0])


class Queue:
    """The Huey instance of a home, with the two tasks registered.

    ``serve`` are the job queues this process takes messages from (an agent's ``--queues``); any
    process sends to every queue.
    """

    def __init__(self, home: Home, serve: Sequence[str] = (DEFAULT_QUEUE,)) -> None:
        at = queue_at(home)
        served = tuple(dict.fromkeys(huey_queue(q) for q in serve))
        if at.url is not None:  # redis://host:port/db: priorities, blocking dequeue (queue_redis.py)
            self.huey: Huey = redis_huey(at.url, QUEUE_NAME, EngineHuey)
            storage: Any = self.huey.storage
            storage.served_keys = [storage.key_of(name) for name in served]
        else:
            assert at.path is not None
            create_private(at.path)  # before SQLite makes it (and its -wal/-shm) with the umask's mode
            self.huey = EngineHuey(
                QUEUE_NAME, storage_class=QueueStorage, filename=str(at.path), results=False, utc=True,
                timeout=30,
            )
            self.huey.storage.served = served
        self.served = served
        #: the SQLite queue file whose agents are woken after each send (Redis workers block instead)
        self._wake = at.path

        @self.huey.task(name="jm.run", context=True)
        def run(task_id: int, dispatch: int, task: Any = None) -> None:
            _handler().run(task_id, dispatch, job_hint(None if task is None else task.id))

        @self.huey.task(name="jm.finalize")
        def finalize(job_id: int) -> None:
            _handler().finalize(job_id)

        # huey's TaskWrapper objects (huey has no type hints): called, or ``.s(...)`` to build a message
        self._run: Any = run
        self._finalize: Any = finalize

    def send(self, dispatches: Iterable[Dispatch]) -> None:
        """Enqueue run messages, each on its job's queue; on SQLite all of them in one transaction."""
        self._put([(huey_queue(d.queue), self.huey.serialize_task(self._run.s(
            d.task_id, d.dispatch, priority=d.priority, id=message_id(d.job_id))), d.priority) for d in dispatches])

    def send_finalize(self, finals: Iterable[tuple[int, str]]) -> None:
        """Enqueue finishing steps: (job id, the job's queue) pairs."""
        self._put([(huey_queue(queue), self.huey.serialize_task(self._finalize.s(job_id, priority=1_000_000)),
                    1_000_000) for job_id, queue in finals])

    def _put(self, messages: list[tuple[str, bytes, int | None]]) -> None:
        """(Huey queue name, message, priority) triples, in one transaction or round trip."""
        if not messages:
            return
        storage = self.huey.storage
        if isinstance(storage, SqliteStorage):
            with storage.db(commit=True) as curs:
                curs.executemany(
                    "insert into task (queue, data, priority) values (?, ?, ?)",
                    [(name, storage.to_blob(data), prio or 0) for name, data, prio in messages],
                )
            if self._wake is not None:
                wake_all(self._wake)  # after the commit: a woken worker finds the messages
        elif isinstance(storage, QueueRedisStorage):
            send_many(storage, messages)  # one round trip
        else:  # pragma: no cover - other Huey storages
            for _, data, prio in messages:
                storage.enqueue(data, prio)

    def pending(self) -> tuple[set[tuple[int, int]], set[int]]:
        """What the queues hold now (all of them): run messages as (task_id, dispatch), finalize job ids."""
        runs: set[tuple[int, int]] = set()
        finals: set[int] = set()
        for task in self.huey.pending():
            if task.name == "jm.run":
                runs.add((int(task.args[0]), int(task.args[1])))
            elif task.name == "jm.finalize":
                finals.add(int(task.args[0]))
        return runs, finals

    def size(self) -> int:
        """Messages in all the home's queues."""
        return int(self.huey.pending_count())

    def start_prefetch(self, batch: int = BATCH, hold_ms: float = HOLD_S * 1000,
                       short_ms: float = SHORT_S * 1000, claims: AheadClaims | None = None) -> bool:
        """Let this process's dequeues take up to ``batch`` messages while its tasks take under ``short_ms``
        (engine/prefetch.py): for an agent's thread workers, on SQLite (a transaction a batch) and on Redis
        (a round trip a batch). ``claims`` (the agent's runner) claims each batch's tasks in one store
        transaction. False, and nothing changes, with ``batch`` 1."""
        storage = self.huey.storage
        if not isinstance(storage, QueueStorage | QueueRedisStorage) or batch <= 1:
            return False

        def put_back(messages: list[Message]) -> None:
            storage.put_back(messages)
            if self._wake is not None:
                wake_all(self._wake)  # idle workers of every agent find them

        claim = release = None
        if claims is not None:
            def claim(messages: list[Message]) -> list[bool | None]:
                return claims.claim_ahead([self._run_of(m.data) for m in messages])

            def release(messages: list[Message], why: str) -> list[Message]:
                keyed = {(d.task_id, d.dispatch): m for m in messages if (d := self._run_of(m.data)) is not None}
                return [keyed[k] for k in claims.release_ahead(list(keyed), why)]

        storage.prefetch = Prefetch(storage.pop, put_back, batch=batch, hold_s=hold_ms / 1000,
                                    short_s=short_ms / 1000, claim=claim, release=release)
        return True

    def _run_of(self, data: bytes) -> Dispatch | None:
        """The task a run message names (task id, dispatch and the job hint); None for any other message."""
        try:
            task = self.huey.deserialize_task(data)
            if task.name != "jm.run":
                return None
            return Dispatch(int(task.args[0]), int(task.args[1]), job_id=job_hint(task.id))
        except Exception:  # noqa: BLE001 - not ours to judge here: Huey reports it when it runs the message
            return None

    def stop_prefetch(self) -> None:
        """Put the prefetched messages back (after the workers stopped taking them)."""
        storage = self.huey.storage
        prefetch = getattr(storage, "prefetch", None)
        if prefetch is not None:
            try:
                prefetch.close()  # never raises: what cannot be put back is said, and the sweep sends it again
            finally:
                storage.prefetch = None

    def close(self) -> None:
        self.stop_prefetch()
        self.huey.storage.close()
        pool = getattr(self.huey.storage, "pool", None)  # Redis: drop the pooled connections
        if pool is not None:
            pool.disconnect()

