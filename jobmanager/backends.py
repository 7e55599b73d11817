"""The one owner of backend choice: which store and which queue a home uses, and how to reach them.

The store is ``sqlite`` (store.db in the home, the default), ``sqlite:///path`` or
``postgresql://user@host/db``; the queue is ``sqlite`` (queue.db) or ``redis://host:port/db``.
Both live in the home's jobmanager.toml; ``JOBMANAGER_STORE`` / ``JOBMANAGER_QUEUE`` override them.

Every other module asks this one: :func:`store_at` parses the store's URL once into a
:class:`StoreAt` (a SQLite file or a PostgreSQL URL, with its :mod:`dialect
<jobmanager.store.dialect>`); :func:`open_store` hands out the store (the only writer of job
rows), :func:`read_connection` a read-only snapshot for the grid and the history's mirror,
:func:`queue_at` where the queue lives; :func:`redact` is how a URL is shown in messages. No other
module looks at a URL's scheme. Also here: ``init --store/--queue``, ``doctor`` and ``migrate``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from jobmanager.errors import BadParams, HomeError
from jobmanager.home import CONFIG_NAME, Home
from jobmanager.store.base import SCHEMA_VERSION
from jobmanager.store.dialect import POSTGRES, SQLITE, Dialect

if TYPE_CHECKING:
    from jobmanager.store.base import JobStore
    from jobmanager.store.connection import Connection

PG_SCHEMES = ("postgresql://", "postgres://")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
#: how long a reader waits for a busy SQLite store, or for a PostgreSQL server to answer
READ_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10


def is_pg_url(url: str) -> bool:
    return url.startswith(PG_SCHEMES)


def is_redis_url(url: str) -> bool:
    return url.startswith(REDIS_SCHEMES)


def redact(url: str) -> str:
    """The URL without its password, for messages (any backend's URL; a plain path is unchanged)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class StoreAt:
    """Where a store is: a SQLite file (``path``) or a PostgreSQL server (``url``), parsed once."""

    path: Path | None = None
    url: str | None = None

    @property
    def is_postgres(self) -> bool:
        return self.url is not None

    @property
    def dialect(self) -> Dialect:
        return POSTGRES if self.is_postgres else SQLITE

    def __str__(self) -> str:
        """For messages: the file, or the URL without its password."""
        return redact(self.url) if self.url is not None else str(self.path)


def parse_store(url: str, home_path: Path | None = None) -> StoreAt:
    """``sqlite`` (the home's store.db), ``sqlite:///path`` or a PostgreSQL URL; HomeError otherwise."""
    if url == "sqlite" and home_path is not None:
        return StoreAt(path=home_path / "store.db")
    if url.startswith("sqlite:///"):
        return StoreAt(path=Path(url.removeprefix("sqlite:///")))
    if is_pg_url(url):
        return StoreAt(url=url)
    raise HomeError(f"unsupported store {url!r}: use 'sqlite' or a postgresql://user@host/db URL")


def store_at(home: Home) -> StoreAt:
    """Where the home's store is."""
    return parse_store(home.store_url, home.path)


def as_store_at(where: StoreAt | str | os.PathLike[str]) -> StoreAt:
    """A :class:`StoreAt` from what the history and the grid are given: itself, a store file, or a URL."""
    if isinstance(where, StoreAt):
        return where
    if isinstance(where, str) and is_pg_url(where):
        return StoreAt(url=where)
    return StoreAt(path=Path(where))


def open_store(where: Home | StoreAt, *, create: bool = False, check: bool = True) -> JobStore:
    """The store (the only writer of job rows) of a home, or at a place; ``check=False`` skips the
    schema checks (PostgreSQL: ``migrate`` and ``doctor`` look at an old or missing schema themselves)."""
    at = store_at(where) if isinstance(where, Home) else where
    if at.url is not None:
        try:
            from jobmanager.store.postgres import PostgresStore
        except ImportError:
            raise HomeError("a PostgreSQL store needs psycopg 3: pip install 'psycopg[binary]'") from None
        return PostgresStore(at.url, create=create, check=check)
    from jobmanager.store.sqlite import SQLiteStore

    assert at.path is not None
    return SQLiteStore(at.path, create=create, check=check)


@contextmanager
def read_connection(where: StoreAt) -> Iterator[Connection]:
    """A read-only connection to the store inside one snapshot (a transaction), for the grid and the
    history's mirror. It takes the store's SQL (``?`` placeholders); its rows are tuples."""
    if where.url is None:
        assert where.path is not None
        conn = sqlite3.connect(where.path, timeout=READ_TIMEOUT_S)
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute("BEGIN")
            yield conn
            conn.execute("COMMIT")
        finally:
            conn.close()
        return
    import psycopg

    from jobmanager.store.postgres import PgConnection

    try:
        raw = psycopg.connect(where.url, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        raise HomeError(f"cannot connect to the store {where}: {str(exc).strip().splitlines()[0]}") from None
    with raw:
        raw.read_only = True
        raw.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # every read from one snapshot
        with raw.transaction():
            yield PgConnection(raw)  # type: ignore[arg-type]  # tuple rows, not the store's dict rows


@dataclass(frozen=True)
class QueueAt:
    """Where a queue is: a SQLite file (``path``) or a Redis server (``url``)."""

    path: Path | None = None
    url: str | None = None

    def __str__(self) -> str:
        return redact(self.url) if self.url is not None else str(self.path)


def queue_at(home: Home) -> QueueAt:
    url = home.queue_url
    if url == "sqlite":
        return QueueAt(path=home.queue_path)
    if is_redis_url(url):
        return QueueAt(url=url)
    raise HomeError(f"unsupported queue {url!r}: use 'sqlite' or a redis://host:port/db URL")


def check_store_url(url: str) -> None:
    if not (url == "sqlite" or url.startswith("sqlite:///") or is_pg_url(url)):
        raise BadParams(f"store {url!r}: use 'sqlite' or a postgresql://user@host/db URL")


def check_queue_url(url: str) -> None:
    if not (url == "sqlite" or is_redis_url(url)):
        raise BadParams(f"queue {url!r}: use 'sqlite' or a redis://host:port/db URL")


def set_backends(path: str | Path | None, *, store: str | None, queue: str | None) -> Home:
    """Create the home folder if needed and write ``store``/``queue`` into its jobmanager.toml."""
    if store:
        check_store_url(store)
    if queue:
        check_queue_url(queue)
    home = Home.create(path)
    cfg = home.path / CONFIG_NAME
    text = cfg.read_text()
    for key, value in (("store", store), ("queue", queue)):
        if not value:
            continue
        line = f"{key} = {json.dumps(value)}"  # a JSON string is a valid TOML basic string
        text, n = re.subn(rf"(?m)^{key}\s*=.*$", line.replace("\\", "\\\\"), text, count=1)
        if n == 0:
            text = f"{line}\n{text}"
    cfg.write_text(text)
    return Home.open(home.path)


@dataclass
class Check:
    what: str
    ok: bool
    message: str


def doctor(home: Home) -> list[Check]:
    """Is each backend reachable, and is the store's schema current? One line per finding."""
    checks: list[Check] = []
    url = home.store_url
    shown = "sqlite (" + str(home.store_path) + ")" if url == "sqlite" else redact(url)
    try:
        version = _store_version(home)
    except HomeError as exc:
        checks.append(Check("store", False, str(exc) if redact(url) in str(exc) else f"{shown}: {exc}"))
    else:
        if version == SCHEMA_VERSION:
            checks.append(Check("store", True, f"{shown}: reachable, schema version {version} (current)"))
        elif version < SCHEMA_VERSION:
            checks.append(Check("store", False, f"{shown}: schema version {version}, this jobmanager needs "
                                                f"{SCHEMA_VERSION}; run: jobmanager migrate"))
        else:
            checks.append(Check("store", False, f"{shown}: schema version {version} is newer than this jobmanager "
                                                f"({SCHEMA_VERSION}); upgrade jobmanager"))
    queue = home.queue_url
    if queue == "sqlite":
        checks.append(Check("queue", True, f"sqlite ({home.queue_path})"))
    elif is_redis_url(queue):
        from jobmanager.engine.queue_redis import ping

        result = ping(queue)
        checks.append(Check("queue", result == "ok", f"{redact(queue)}: reachable" if result == "ok" else result))
    else:
        checks.append(Check("queue", False, f"unsupported queue {queue!r}: use 'sqlite' or redis://host:port/db"))
    loose = home.loose_modes()  # a home made before homes were private (0700 folders, 0600 files)
    if loose:
        more = f" (and {len(loose) - 1} more)" if len(loose) > 1 else ""
        checks.append(Check("home", False, f"{loose[0]}{more}: other OS users can read it; "
                                           f"fix: chmod -R go-rwx {home.path}"))
    return checks


def _store_version(home: Home) -> int:
    store = open_store(home, check=False)
    try:
        return store.schema_version()
    finally:
        store.close()


def migrate(home: Home) -> tuple[int, int]:
    """Move the home's store to the current schema; returns (from, to)."""
    store = open_store(home, check=False)
    try:
        return store.migrate()
    finally:
        store.close()
