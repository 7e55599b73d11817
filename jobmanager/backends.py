"""Choosing and checking the backends: ``init --store/--queue``, ``doctor`` and ``migrate``.

The store is ``sqlite`` (store.db in the home, the default) or ``postgresql://user@host/db``;
the queue is ``sqlite`` (queue.db) or ``redis://host:port/db``. Both live in the home's
jobmanager.toml; ``JOBMANAGER_STORE`` / ``JOBMANAGER_QUEUE`` override them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import BadParams, HomeError
from .home import CONFIG_NAME, Home
from .queue_redis import is_redis_url, ping
from .queue_redis import redact as redact_redis
from .store.base import SCHEMA_VERSION

PG_SCHEMES = ("postgresql://", "postgres://")


def is_pg_url(url: str) -> bool:
    return url.startswith(PG_SCHEMES)


def redact(url: str) -> str:
    return redact_redis(url)


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
    url = home.store_url
    if is_pg_url(url):
        try:
            from .store.postgres import PostgresStore
        except ImportError:
            raise HomeError("psycopg 3 is not installed: pip install 'psycopg[binary]'") from None
        store = PostgresStore(url, check=False)
        try:
            return store.schema_version()
        finally:
            store.close()
    from .store import open_store

    try:
        s = open_store(home)
    except HomeError as exc:
        match = re.search(r"schema version (\d+)", str(exc))
        if match:
            return int(match.group(1))
        raise
    try:
        return s.schema_version()
    finally:
        s.close()


def migrate(home: Home) -> tuple[int, int]:
    """Move the home's store to the current schema; returns (from, to)."""
    url = home.store_url
    if is_pg_url(url):
        from .store.postgres import PostgresStore

        store = PostgresStore(url, check=False)
        try:
            return store.migrate()
        finally:
            store.close()
    version = _store_version(home)  # SQLite: version 1 is the only one so far
    if version > SCHEMA_VERSION:
        raise HomeError(f"the store has schema version {version}, newer than this jobmanager ({SCHEMA_VERSION})")
    if version < SCHEMA_VERSION:  # pragma: no cover - no SQLite migration exists yet
        raise HomeError(f"no SQLite migration from version {version} to {SCHEMA_VERSION} in this jobmanager")
    return version, version
