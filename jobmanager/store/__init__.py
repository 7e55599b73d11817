"""The job store: one contract (:class:`JobStore`), one SQL implementation over a dialect per backend."""

from __future__ import annotations

from jobmanager.home import Home
from jobmanager.store.base import SCHEMA_VERSION, JobStore

__all__ = ["JobStore", "SCHEMA_VERSION", "open_store"]


def open_store(home: Home, *, create: bool = False) -> JobStore:
    """The store the home's configuration names (``sqlite`` is the default); :mod:`jobmanager.backends` decides."""
    from jobmanager.backends import open_store as _open

    return _open(home, create=create)
