"""The history on a PostgreSQL store.

DuckDB 1.5.5's postgres extension ships on PyPI as ``duckdb-extension-postgres-scanner==1.5.5``
(like the sqlite one: the ``.duckdb_extension`` file for that exact DuckDB), and it LOADs by path
with automatic extension install/load switched off, so nothing is downloaded. :func:`attach_postgres`
ATTACHes the store READ_ONLY under the alias the SQLite history uses (``store``), so the views of
:data:`jobmanager.history.history.VIEWS` (``... FROM store.jobs s``) work unchanged.

The grid needs no DuckDB on either backend: :func:`jobmanager.history.grid.grid_page` runs its own SQL
on :func:`jobmanager.backends.read_connection`, in the store's dialect (ILIKE for SQLite's
case-insensitive LIKE), on the store's indexes.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jobmanager.backends import redact
from jobmanager.errors import HomeError


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
    ``autoload_known_extensions`` off (as :class:`jobmanager.history.history.History` does).
    """
    import duckdb

    ext = Path(extension) if extension is not None else find_postgres_extension()
    schema = store_schema(url)
    options = "TYPE postgres, READ_ONLY" + (f", SCHEMA '{_quote(schema)}'" if schema else "")
    try:
        con.execute(f"LOAD '{_quote(str(ext))}'")
        con.execute(f"ATTACH '{_quote(url)}' AS {alias} ({options})")
    except duckdb.Error as exc:
        raise HomeError(f"cannot open the history of {redact(url)}: {str(exc).splitlines()[0]}") from None
