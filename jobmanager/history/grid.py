"""The dashboard grid's page query, on plain indexed SQLite.

Measured (``benchmarks/bench_history.py``): a page of 100 jobs plus the total
count is a few milliseconds on SQLite at 1M jobs because the store's indexes
(``jobs_state_id``, ``jobs_created``, ``jobs_finished``) answer it, while DuckDB's
sqlite scanner cannot use SQLite indexes and reads the whole table (~2 s at 1M).
So the grid reads the store directly; stats, history and exports use DuckDB
(:mod:`jobmanager.history.history`).

The filter builder is shared with the history: every value is a bound ``?``
parameter; only allow-listed column names are ever put into the SQL text.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import Any

import pandas as pd

from jobmanager import validate
from jobmanager.backends import StoreAt, as_store_at, read_connection
from jobmanager.engine.states import JOB_STATES, tab_states
from jobmanager.errors import BadParams
from jobmanager.store.connection import Connection
from jobmanager.store.sql import scope_sql

#: what the grid shows (and what exports write), as SQL over the store's ``jobs`` table;
#: ``{p}`` is the table qualifier (``""`` or ``"j."``)
GRID_COLUMNS: dict[str, str] = {
    "id": "{p}id",
    "name": "{p}name",
    "type": "{p}type",
    "queue": "{p}queue",
    "state": "{p}state",
    "owner": "{p}owner",
    "case": "{p}case_id",
    "priority": "{p}priority",
    "tasks_total": "{p}tasks_total",
    "tasks_succeeded": "{p}tasks_succeeded",
    "tasks_failed": "{p}tasks_failed",
    "tasks_cancelled": "{p}tasks_cancelled",
    "created_at": "{p}created_at",
    "started_at": "{p}started_at",
    "finished_at": "{p}finished_at",
    "wait_s": "{p}started_at - {p}created_at",
    "duration_s": "{p}finished_at - {p}started_at",
    "error": "{p}error",
}
TIME_COLUMNS = ("created_at", "started_at", "finished_at")
#: columns the grid may sort by (user input is looked up here, never pasted)
SORTABLE = tuple(GRID_COLUMNS)
FILTER_KEYS = ("tab", "state", "type", "case", "owner", "agent", "since", "until", "time_field", "search")
MAX_PAGE_SIZE = 10_000
#: sorts the store has an index for (jobs_created, jobs_finished, the primary key)
INDEXED_SORTS = ("id", "created_at", "finished_at")
#: above this many matches a page walks the sort index rather than sorting every match
WALK_SORT_INDEX_ABOVE = 5_000


@dataclass
class Where:
    sql: str
    params: list[Any]


def _epoch(value: Any, what: str) -> float:
    """A time filter as epoch seconds: a number, a datetime/Timestamp, or an ISO string (naive = UTC)."""
    if isinstance(value, bool):
        raise BadParams(f"{what}: expected a time, not {value!r}")
    if isinstance(value, int | float):
        return float(value)
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise BadParams(f"{what}: {value!r} is not a time (use ISO format, e.g. 2024-05-01T12:00)") from None
    if ts is pd.NaT:
        raise BadParams(f"{what}: {value!r} is not a time")
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.timestamp()


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` literally anywhere (with ESCAPE '\\')."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def build_where(
    filters: dict[str, Any], *, like: str = "LIKE", tasks_table: str = "tasks", prefix: str = "",
    scope: dict[str, Any] | None = None,
) -> Where:
    """The WHERE clause of a job query from user filters, with bound parameters.

    ``like`` is ``LIKE`` for SQLite (case-insensitive for ASCII) and ``ILIKE`` for DuckDB;
    ``prefix`` qualifies the jobs columns (``"s."``); ``scope`` is :meth:`Actor.scope`,
    the jobs the acting user may see.
    """
    unknown = set(filters) - set(FILTER_KEYS)
    if unknown:
        raise BadParams(f"unknown filter {validate.shown(sorted(unknown)[0])}: choose from {', '.join(FILTER_KEYS)}")
    f = {k: v for k, v in filters.items() if v is not None and v != ""}
    for key in ("tab", "type", "case", "owner", "agent", "time_field"):  # text compared as a whole: a name
        if key in f:
            f[key] = validate.name(f[key], key)
    if "search" in f:  # matched with LIKE: a length limit keeps the pattern simple for every engine
        f["search"] = validate.search(f["search"])
    clauses: list[str] = []
    params: list[Any] = []
    if scope is not None:
        clause, values = scope_sql(scope, owner=f"{prefix}owner", case=f"{prefix}case_id")
        clauses.append(clause)
        params += values
    states: tuple[str, ...] | None = tab_states(f["tab"]) if "tab" in f else None
    if "state" in f:
        if not isinstance(f["state"], str | list | tuple):
            raise BadParams(f"state must be a state or a list of states, not {validate.shown(f['state'])}")
        wanted = (f["state"],) if isinstance(f["state"], str) else tuple(f["state"])
        bad = [s for s in wanted if not isinstance(s, str) or s not in JOB_STATES]
        if bad:
            raise BadParams(f"unknown state {bad[0]!r}: choose one of {', '.join(JOB_STATES)}")
        states = wanted if states is None else tuple(s for s in wanted if s in states)
    if states is not None:
        if not states:
            clauses.append("1 = 0")
        else:
            clauses.append(f"{prefix}state IN ({','.join('?' * len(states))})")
            params += list(states)
    for key, column in (("type", "type"), ("case", "case_id"), ("owner", "owner")):
        if key in f:
            clauses.append(f"{prefix}{column} = ?")
            params.append(str(f[key]))
    if "agent" in f:
        clauses.append(f"{prefix}id IN (SELECT job_id FROM {tasks_table} WHERE agent = ?)")
        params.append(str(f["agent"]))
    field = f.get("time_field", "created")
    if field not in ("created", "finished"):
        raise BadParams(f"time_field must be 'created' or 'finished', not {field!r}")
    for key, op in (("since", ">="), ("until", "<")):
        if key in f:
            clauses.append(f"{prefix}{field}_at {op} ?")
            params.append(_epoch(f[key], key))
    if "search" in f:
        pattern = _like(str(f["search"]))
        clauses.append(f"({prefix}name {like} ? ESCAPE '\\' OR {prefix}error {like} ? ESCAPE '\\')")
        params += [pattern, pattern]
    return Where(" AND ".join(clauses) or "1 = 1", params)


def order_by(sort: str, desc: bool, prefix: str = "") -> str:
    if sort not in SORTABLE:
        raise BadParams(f"cannot sort by {sort!r}: choose one of {', '.join(SORTABLE)}")
    direction = "DESC" if desc else "ASC"
    expr = GRID_COLUMNS[sort].format(p=prefix)
    tie = "" if sort == "id" else f", {prefix}id {direction}"
    return f"{expr} {direction} NULLS LAST{tie}"


def select_list(prefix: str = "") -> str:
    return ", ".join(f'{expr.format(p=prefix)} AS "{name}"' for name, expr in GRID_COLUMNS.items())


def to_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """Rows in GRID_COLUMNS order as a DataFrame; times as naive UTC timestamps."""
    df = pd.DataFrame.from_records(rows, columns=list(GRID_COLUMNS))
    for col in TIME_COLUMNS:
        df[col] = pd.to_datetime(df[col].astype("float64"), unit="s")
    for col in ("wait_s", "duration_s"):
        df[col] = df[col].astype("float64")
    return df


def _counted_total(conn: Connection, tab: str, filters: dict[str, Any],
                   scope: dict[str, Any] | None) -> int | None:
    """A tab's total from the trigger-kept ``job_counts`` (constant time at any size), when nothing but the
    tab (and perhaps a state) narrows it and the user sees every job; else None (count the matches)."""
    used = {k for k, v in filters.items() if v not in (None, "") and k != "tab"}
    if used - {"state"} or (scope is not None and not (scope["all"] and scope["cases"] is None)):
        return None
    states = set(tab_states(tab))
    if "state" in used:
        wanted = {filters["state"]} if isinstance(filters["state"], str) else set(filters["state"])
        states &= wanted
    try:
        rows = conn.execute("SELECT state, n FROM job_counts").fetchall()
    except sqlite3.OperationalError:  # a SQLite store from before the counters
        return None
    return int(sum(n for state, n in rows if state in states))


def grid_page(
    store: StoreAt | str | os.PathLike[str],
    tab: str = "completed",
    filters: dict[str, Any] | None = None,
    sort: str = "created_at",
    desc: bool = True,
    page: int = 1,
    page_size: int = 100,
    scope: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, int]:
    """One page of the grid (1-based ``page``) and the number of matching jobs ``scope`` may see.

    ``store`` is where the store is (:func:`jobmanager.backends.store_at`), or a SQLite store file, or
    a PostgreSQL store URL; the count and the page come from one snapshot.
    """
    validate.integer(page, "page", 1, validate.MAX_ID // MAX_PAGE_SIZE)
    validate.integer(page_size, "page_size", 1, MAX_PAGE_SIZE)
    if not isinstance(sort, str):
        raise BadParams(f"cannot sort by {validate.shown(sort)}: choose one of {', '.join(SORTABLE)}")
    at = as_store_at(store)
    dialect = at.dialect
    where = build_where({**(filters or {}), "tab": tab}, like=dialect.ilike, scope=scope)
    order = order_by(sort, desc)
    with read_connection(at) as conn:  # the count and the page from one snapshot
        # PostgreSQL's schema has no trigger-kept job_counts: a plain COUNT(*) on the jobs_state_id index
        total = _counted_total(conn, tab, filters or {}, scope) if dialect.job_counts else None
        if total is None:
            total = conn.execute(f"SELECT COUNT(*) FROM jobs WHERE {where.sql}", where.params).fetchone()[0]
        where_sql = where.sql
        if total > WALK_SORT_INDEX_ABOVE and sort in INDEXED_SORTS:
            # Many matches: walk the sort column's index and stop after one page, instead of letting
            # SQLite fetch every match through jobs_state_id and sort them all (unary + hides the index).
            where_sql = where_sql.replace("state IN (", f"{dialect.no_index('state')} IN (", 1)
        rows = conn.execute(
            f"SELECT {select_list()} FROM jobs WHERE {where_sql} ORDER BY {order} LIMIT ? OFFSET ?",
            (*where.params, page_size, (page - 1) * page_size),
        ).fetchall()
    return to_frame(rows), int(total)



def matching_ids(
    store: StoreAt | str | os.PathLike[str],
    tab: str,
    filters: dict[str, Any] | None = None,
    scope: dict[str, Any] | None = None,
    limit: int = 1000,
) -> list[int]:
    """The ids (lowest first, at most ``limit``) of the jobs the grid shows for ``tab`` and ``filters`` to
    ``scope``: the grid's own WHERE clause (:func:`build_where`), for the bulk actions (:mod:`jobmanager.bulk`)."""
    validate.integer(limit, "limit", 1, MAX_PAGE_SIZE * 10)
    at = as_store_at(store)
    where = build_where({**(filters or {}), "tab": tab}, like=at.dialect.ilike, scope=scope)
    with read_connection(at) as conn:
        rows = conn.execute(f"SELECT id FROM jobs WHERE {where.sql} ORDER BY id LIMIT ?",
                            (*where.params, limit)).fetchall()
    return [int(r[0]) for r in rows]
