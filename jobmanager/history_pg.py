"""The history and the grid on a PostgreSQL store.

DuckDB 1.5.5's postgres extension ships on PyPI as ``duckdb-extension-postgres-scanner==1.5.5``
(like the sqlite one: the ``.duckdb_extension`` file for that exact DuckDB), and it LOADs by path
with automatic extension install/load switched off, so nothing is downloaded. :func:`attach_postgres`
ATTACHes the store READ_ONLY under the alias the SQLite history uses (``store``), so the views of
:data:`jobmanager.history.VIEWS` (``... FROM store.jobs s``) work unchanged.

The grid does not need DuckDB on PostgreSQL: :func:`grid_page_pg` runs the grid's own SQL
(:func:`jobmanager.grid.build_where`, same column names) with psycopg, ``%s`` for ``?`` and
ILIKE for SQLite's case-insensitive LIKE, on the store's indexes.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from .errors import BadParams, HomeError
from .grid import MAX_PAGE_SIZE, build_where, order_by, select_list, to_frame


def find_postgres_extension() -> Path:
    """The postgres_scanner file shipped by ``duckdb-extension-postgres-scanner`` for this DuckDB."""
    try:
        import duckdb
    except ImportError:
        raise HomeError("the history needs DuckDB: pip install 'jobmanager[history]'") from None
    spec = importlib.util.find_spec("duckdb_extension_postgres_scanner")
    if spec is not None and spec.origin:
        exact = Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}" / "postgres_scanner.duckdb_extension"
        if exact.is_file():
            return exact
    raise HomeError(
        f"the DuckDB postgres extension for duckdb {duckdb.__version__} is not installed: "
        f"pip install duckdb-extension-postgres-scanner=={duckdb.__version__} (or 'jobmanager[history]')"
    )


def store_schema(url: str) -> str | None:
    """The schema a store URL names with ``options=-csearch_path=...`` (None: the server's default)."""
    for option in parse_qs(urlsplit(url).query).get("options", []):
        for part in option.split():
            if part.startswith("-csearch_path="):
                return part.removeprefix("-csearch_path=").split(",")[0].strip() or None
    return None


def _quote(text: str) -> str:
    return text.replace("'", "''")


def attach_postgres(con: Any, url: str, *, alias: str = "store",
                    extension: str | os.PathLike[str] | None = None) -> None:
    """LOAD the postgres extension by path and ATTACH the store at ``url`` READ_ONLY as ``alias``.

    ``con`` is a DuckDB connection opened with ``autoinstall_known_extensions`` and
    ``autoload_known_extensions`` off (as :class:`jobmanager.history.History` does).
    """
    import duckdb

    ext = Path(extension) if extension is not None else find_postgres_extension()
    schema = store_schema(url)
    options = "TYPE postgres, READ_ONLY" + (f", SCHEMA '{_quote(schema)}'" if schema else "")
    try:
        con.execute(f"LOAD '{_quote(str(ext))}'")
        con.execute(f"ATTACH '{_quote(url)}' AS {alias} ({options})")
    except duckdb.Error as exc:
        from .store.postgres import redact

        raise HomeError(f"cannot open the history of {redact(url)}: {str(exc).splitlines()[0]}") from None


def grid_page_pg(
    url: str,
    tab: str = "completed",
    filters: dict[str, Any] | None = None,
    sort: str = "created_at",
    desc: bool = True,
    page: int = 1,
    page_size: int = 100,
    scope: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, int]:
    """:func:`jobmanager.grid.grid_page` on a PostgreSQL store: one page and the matching count."""
    import psycopg

    if not isinstance(page, int) or isinstance(page, bool) or page < 1:
        raise BadParams(f"page must be a whole number >= 1, not {page!r}")
    if not isinstance(page_size, int) or isinstance(page_size, bool) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise BadParams(f"page_size must be between 1 and {MAX_PAGE_SIZE}, not {page_size!r}")
    where = build_where({**(filters or {}), "tab": tab}, like="ILIKE", scope=scope)
    sql_where = where.sql.replace("?", "%s")
    with psycopg.connect(url, connect_timeout=10) as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # count and page from one snapshot
        with conn.transaction():
            # A plain COUNT(*) (the jobs_state_id index answers the unfiltered tabs): the PostgreSQL
            # schema has no trigger-kept job_counts table, unlike SQLite's (see grid._counted_total).
            count = conn.execute(f"SELECT COUNT(*) FROM jobs WHERE {sql_where}", where.params).fetchone()
            total = count[0] if count else 0
            rows = conn.execute(
                f"SELECT {select_list()} FROM jobs WHERE {sql_where} ORDER BY {order_by(sort, desc)}"
                " LIMIT %s OFFSET %s",
                (*where.params, page_size, (page - 1) * page_size),
            ).fetchall()
    return to_frame(rows), int(total)
