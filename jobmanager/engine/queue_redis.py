"""The queue on Redis: Huey's PriorityRedisHuey, chosen by ``queue = "redis://host:port/db"``.

Messages live in one sorted set per Huey queue name (``huey.redis.jobmanager`` for the
``default`` job queue, ``huey.redis.jobmanager.<queue>`` for the others), scored by
priority; workers take them with BZPOPMIN, a blocking pop over every served queue's set
(their order rotated at each call, so no queue starves another), so an idle agent sleeps
inside Redis instead of polling (one round trip per worker per ``READ_TIMEOUT_S``)
and a new message wakes a worker at once. As with SQLite the queue holds no truth:
a message lost with Redis (it need not persist anything) is re-sent by an agent's
sweep from the store, and a duplicate is dropped by the store's conditional claim.

Use one Redis database per Job Manager installation: every home pointing at the same
database shares one queue.
"""

from __future__ import annotations

import itertools
import struct
import time
from collections.abc import Sequence
from typing import Any

from huey.api import Huey
from huey.storage import PriorityRedisStorage

from jobmanager.backends import redact
from jobmanager.engine.prefetch import Message, Prefetch
from jobmanager.errors import HomeError

#: how long one blocking pop waits before the worker loop looks around (shutdown, backoff)
READ_TIMEOUT_S = 1


class QueueRedisStorage(PriorityRedisStorage):
    """Huey's priority storage on Redis, dequeuing from the sorted sets of every served queue.

    Keys are named here (``key_of``), not by Huey's ``clean_name``, which would drop the ``.`` and
    ``-`` a queue name may hold and could make two queues share a key.
    """

    served_keys: list[str]
    #: the agent's shared buffer of taken messages (None: one message per dequeue; see engine/prefetch.py)
    prefetch: Prefetch | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served_keys = [self.queue_key]
        self._turn = itertools.count()

    def key_of(self, huey_name: str) -> str:
        return f"huey.redis.{huey_name}"

    def _rotated(self) -> list[str]:
        keys = self.served_keys
        start = next(self._turn) % len(keys)
        return keys[start:] + keys[:start]

    def dequeue(self) -> Any:
        if self.prefetch is not None:
            return self.prefetch.take()
        one = self._blocking_pop()
        return None if one is None else one[1][8:]

    def _blocking_pop(self) -> tuple[str, bytes, float] | None:
        """One message (key, member, score), waiting up to ``read_timeout`` in Redis if every set is empty."""
        keys = self._rotated()
        if self.blocking:
            try:
                key, member, score = self.conn.bzpopmin(keys, timeout=self.read_timeout)
            except (TimeoutError, TypeError, ValueError, IndexError):
                return None  # empty or timed out; ConnectionError propagates for back-off
            return key.decode() if isinstance(key, bytes) else key, member, score
        for key in keys:
            items = self.conn.zpopmin(key, count=1)
            if items:
                return key, items[0][0], items[0][1]
        return None

    def pop(self, k: int) -> list[Message]:
        """Take up to ``k`` messages, best first (engine/prefetch.py): ``k`` > 1 takes them without waiting
        (ZPOPMIN with a count, one round trip) from the first served set in the rotated order that has any,
        as BZPOPMIN picks its set; if every set is empty it waits for one message as a plain dequeue does."""
        if k > 1:
            for key in self._rotated():
                items = self.conn.zpopmin(key, count=k)
                if items:
                    return [_message(key, member, score) for member, score in items]
        one = self._blocking_pop()
        return [] if one is None else [_message(*one)]

    def put_back(self, messages: Sequence[Message]) -> None:
        """Return taken messages, each as it was (its time prefix and score): its place in its set."""
        pipe = self.conn.pipeline(transaction=False)
        for m in messages:
            pipe.zadd(m.queue, {struct.pack(">Q", m.id) + m.data: -m.priority})
        pipe.execute()

    def _all_keys(self) -> list[str]:
        """Every job queue's key of this installation (the sweep compares them all with the store)."""
        keys = {self.queue_key, *self.served_keys}
        keys.update(k.decode() if isinstance(k, bytes) else k for k in self.conn.scan_iter(match=self.queue_key + ".*"))
        return sorted(keys)

    def queue_size(self) -> int:
        held = 0 if self.prefetch is None else len(self.prefetch.held())
        return held + int(sum(self.conn.zcard(key) for key in self._all_keys()))

    def enqueued_items(self, limit: int | None = None) -> list[Any]:
        """The messages of every job queue of the installation (the sweep compares them with the store), this
        process's prefetched ones first."""
        out: list[Any] = [] if self.prefetch is None else self.prefetch.held()
        for key in self._all_keys():
            out += [item[8:] for item in self.conn.zrange(key, 0, -1)]
        return out[:limit] if limit else out


def _message(key: str, member: bytes, score: float) -> Message:
    """A sorted-set member as a prefetch message: ``id`` is its microsecond prefix, so a put-back keeps its place."""
    return Message(struct.unpack(">Q", member[:8])[0], key, member[8:], -score)


def redis_huey(url: str, name: str, huey_class: type[Huey] = Huey) -> Huey:
    """A Huey with priorities on Redis, blocking dequeue over the served queues, no result store."""
    try:
        import redis  # noqa: F401
    except ImportError:
        raise HomeError("a Redis queue needs the redis client: pip install redis") from None
    return huey_class(name, storage_class=QueueRedisStorage, url=url, results=False, utc=True, blocking=True,
                read_timeout=READ_TIMEOUT_S)


def send_many(storage: QueueRedisStorage, messages: list[tuple[str, bytes, int | None]]) -> None:
    """Enqueue (Huey queue name, data, priority) triples in one round trip, keeping their order within a
    priority.

    The same encoding as Huey's ``RedisPriorityQueue.enqueue``: a microsecond prefix
    (here one apart per message, so the set orders them as sent) and score ``-priority``.
    """
    base = int(time.time() * 1e6)
    members: dict[str, dict[bytes, float]] = {}
    for i, (name, data, priority) in enumerate(messages):
        members.setdefault(storage.key_of(name), {})[struct.pack(">Q", base + i) + data] = -(priority or 0)
    if len(members) == 1:
        ((key, items),) = members.items()
        storage.conn.zadd(key, items)
        return
    pipe = storage.conn.pipeline(transaction=False)
    for key, items in members.items():
        pipe.zadd(key, items)
    pipe.execute()


def ping(url: str) -> str:
    """``"ok"`` or what is wrong with the Redis at ``url`` (for ``jobmanager doctor``)."""
    try:
        import redis
    except ImportError:
        return "the redis client is not installed: pip install redis"
    conn: Any = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        conn.ping()
        return "ok"
    except redis.RedisError as exc:
        return f"cannot reach Redis at {redact(url)}: {exc}"
    finally:
        conn.close()
