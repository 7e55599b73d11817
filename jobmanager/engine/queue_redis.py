"""The queue on Redis: Huey's PriorityRedisHuey, chosen by ``queue = "redis://host:port/db"``.

Messages live in one sorted set per Huey name (``huey.redis.jobmanager``), scored by
priority; workers take them with BZPOPMIN, a blocking pop, so an idle agent sleeps
inside Redis instead of polling (one round trip per worker per ``READ_TIMEOUT_S``)
and a new message wakes a worker at once. As with SQLite the queue holds no truth:
a message lost with Redis (it need not persist anything) is re-sent by an agent's
sweep from the store, and a duplicate is dropped by the store's conditional claim.

Use one Redis database per Job Manager installation: every home pointing at the same
database shares one queue.
"""

from __future__ import annotations

import struct
import time
from typing import Any

from huey.api import Huey, PriorityRedisHuey
from huey.storage import RedisStorage

from jobmanager.backends import redact
from jobmanager.errors import HomeError

#: how long one blocking pop waits before the worker loop looks around (shutdown, backoff)
READ_TIMEOUT_S = 1


def redis_huey(url: str, name: str) -> Huey:
    """A Huey with priorities on Redis, blocking dequeue, no result store."""
    try:
        import redis  # noqa: F401
    except ImportError:
        raise HomeError("a Redis queue needs the redis client: pip install redis") from None
    return PriorityRedisHuey(name, url=url, results=False, utc=True, blocking=True, read_timeout=READ_TIMEOUT_S)


def send_many(storage: RedisStorage, messages: list[tuple[bytes, int | None]]) -> None:
    """Enqueue (data, priority) pairs in one round trip, keeping their order within a priority.

    The same encoding as Huey's ``RedisPriorityQueue.enqueue``: a microsecond prefix
    (here one apart per message, so the set orders them as sent) and score ``-priority``.
    """
    base = int(time.time() * 1e6)
    members: dict[bytes, float] = {}
    for i, (data, priority) in enumerate(messages):
        members[struct.pack(">Q", base + i) + data] = -(priority or 0)
    storage.conn.zadd(storage.queue_key, members)


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
