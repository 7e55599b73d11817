"""The job store: one contract (:class:`JobStore`), one SQL implementation over a dialect per backend."""

from __future__ import annotations

from ..errors import HomeError
from ..home import Home
from .base import SCHEMA_VERSION, JobStore

__all__ = ["JobStore", "SCHEMA_VERSION", "open_store"]


def open_store(home: Home, *, create: bool = False) -> JobStore:
    """The store the home's configuration names (``sqlite`` is the default)."""
    url = home.store_url
    if url == "sqlite" or url.startswith("sqlite:"):
        from .sqlite import SQLiteStore

        path = home.store_path if url == "sqlite" else url.removeprefix("sqlite:///")
        return SQLiteStore(path, create=create)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres import PostgresStore
        except ImportError:
            raise HomeError("a PostgreSQL store needs psycopg 3: pip install 'psycopg[binary]'") from None
        return PostgresStore(url, create=create)
    raise HomeError(f"unsupported store {url!r}: use 'sqlite' or a postgresql://user@host/db URL")
