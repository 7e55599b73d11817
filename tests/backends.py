"""Which backends the tests run on, and a fresh PostgreSQL schema / Redis database per test.

- ``JOBMANAGER_TEST_PG_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5433/jm_test``): the store
  contract suite also runs on PostgreSQL, each test in a schema of its own (dropped afterwards).
- ``JOBMANAGER_TEST_BACKEND=pg-redis`` (needs the PG URL and ``JOBMANAGER_TEST_REDIS_URL``): the
  ``home`` fixture writes a fresh schema's URL and a fresh Redis database into each test home's
  jobmanager.toml, so the engine tests run real agents on PostgreSQL + Redis.

A URL that is set but unreachable fails the tests (it is never a silent skip); only an unset URL skips.
Markers: ``sqlite_only`` (the test reads SQLite files or pragmas), ``pg`` (needs the PostgreSQL URL).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

PG_URL = os.environ.get("JOBMANAGER_TEST_PG_URL", "")
REDIS_URL = os.environ.get("JOBMANAGER_TEST_REDIS_URL", "")
BACKEND = os.environ.get("JOBMANAGER_TEST_BACKEND", "sqlite")
PG_REDIS = BACKEND == "pg-redis"

sqlite_only = pytest.mark.sqlite_only
pg = pytest.mark.pg


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (libpq's ``options`` parameter)."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def new_pg_schema(request: pytest.FixtureRequest) -> str:
    """A fresh, empty schema for this test; returns a store URL that uses it. Dropped at teardown."""
    if not PG_URL:
        pytest.skip("JOBMANAGER_TEST_PG_URL is not set")
    import psycopg

    schema = "jmt_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        try:
            with psycopg.connect(PG_URL, autocommit=True, connect_timeout=10) as conn:
                conn.execute("SET lock_timeout = '10s'")
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        except psycopg.Error as exc:  # a leftover schema costs disk, not correctness
            print(f"warning: could not drop test schema {schema}: {exc}")

    request.addfinalizer(drop)
    return with_search_path(PG_URL, schema)


def new_redis_db() -> str:
    """A fresh (flushed) Redis database of the test server, as a queue URL."""
    if not REDIS_URL:
        pytest.fail("JOBMANAGER_TEST_BACKEND=pg-redis needs JOBMANAGER_TEST_REDIS_URL")
    import redis

    base = redis.Redis.from_url(REDIS_URL)
    databases = int(base.config_get("databases")["databases"])
    number = 1 + int(base.incr("jobmanager-tests:next-db")) % (databases - 1)  # db 0 keeps the counter
    base.close()
    url = REDIS_URL.rsplit("/", 1)[0] + f"/{number}"
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    conn.close()
    return url


def prepare_home(path: Path, request: pytest.FixtureRequest) -> None:
    """Before ``JobManager.init``: on pg-redis, point the home at a fresh schema and Redis database."""
    if not PG_REDIS:
        return
    if not PG_URL:
        pytest.fail("JOBMANAGER_TEST_BACKEND=pg-redis needs JOBMANAGER_TEST_PG_URL")
    from jobmanager.home import CONFIG_NAME, DEFAULT_CONFIG

    store, queue = new_pg_schema(request), new_redis_db()
    path.mkdir(parents=True, exist_ok=True)
    config = DEFAULT_CONFIG.replace('store = "sqlite"', f'store = "{store}"').replace(
        'queue = "sqlite"', f'queue = "{queue}"')
    (path / CONFIG_NAME).write_text(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``sqlite_only`` tests on PostgreSQL (a ``store`` param, or the pg-redis backend)."""
    for item in items:
        if item.get_closest_marker("sqlite_only") is None:
            continue
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("store") == "postgres" or (PG_REDIS and "store" not in params):
            item.add_marker(pytest.mark.skip(reason="SQLite-specific"))


def query_store(home: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of one read-only query on a test home's store, whichever backend it is (``?`` placeholders)."""
    from jobmanager.home import Home

    url = Home.open(home).store_url
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(url, connect_timeout=10) as conn:
            return [tuple(r) for r in conn.execute(sql.replace("?", "%s"), params).fetchall()]  # type: ignore[arg-type]
    import sqlite3

    with sqlite3.connect(Path(home) / "store.db") as conn:
        return conn.execute(sql, params).fetchall()


def write_store(home: Path, statements: list[tuple[str, tuple]]) -> None:
    """Run writes on a test home's store in one transaction, whichever backend it is (``?`` placeholders)."""
    from jobmanager.home import Home

    url = Home.open(home).store_url
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(url, connect_timeout=10) as conn, conn.transaction():
            for sql, params in statements:
                conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
        return
    import sqlite3

    conn = sqlite3.connect(Path(home) / "store.db", isolation_level=None)
    try:
        with conn:
            for sql, params in statements:
                conn.execute(sql, params)
    finally:
        conn.close()


def back_to_version_1(c: object) -> None:
    """Undo migrations 2 and later inside a store transaction ``c``, read from ``MIGRATIONS`` itself (so a
    column added there later is undone too): what a store written by the first release looked like."""
    import re

    from jobmanager.store.schema import MIGRATIONS

    tables, columns = [], []
    for ddl in [d for version in sorted(MIGRATIONS, reverse=True) if version >= 2 for d in MIGRATIONS[version]]:
        if m := re.match(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", ddl.sql):
            columns.append((m[1], m[2]))
        elif m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl.sql):
            tables.append(m[1])
    for table in tables:
        c.execute(f"DROP TABLE {table}")  # type: ignore[attr-defined]
    for table, column in columns:
        c.execute(f"ALTER TABLE {table} DROP COLUMN {column}")  # type: ignore[attr-defined]
    c.execute("DELETE FROM meta WHERE key = 'notify_cursor'")  # type: ignore[attr-defined]
    c.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")  # type: ignore[attr-defined]
