"""The history: DuckDB over the live SQLite store, for analysis, stats and exports.

DuckDB runs in memory and reads the store through its ``sqlite_scanner``
extension, ATTACHed READ_ONLY. The extension is LOADed by path from the
``duckdb-extension-sqlite-scanner`` package, with DuckDB's automatic extension
install/load switched off, so nothing is ever downloaded.

Currency: the scanner opens the SQLite file per scan and keeps no cache
(measured: a row committed by the store shows in the next query), so the views
are always current without re-ATTACHing.

PostgreSQL stores: ``History(url)`` ATTACHes the store READ_ONLY through DuckDB's postgres
extension instead (:func:`jobmanager.history.postgres.attach_postgres`, loaded by path the same way);
the views, the read-only guards and the mirror are the same, except the mirror's sync rule
(:meth:`History._sync_mirror_pg`: PostgreSQL's event ids do not grow in commit order).

Speed: the scanner cannot use SQLite's indexes, so each query reads whole tables
(~2 s for 10M tasks). Stats therefore run on an in-memory *mirror* of finished
jobs and their tasks, built on the first ``stats`` call and brought up to date
before every call: the store writes an event in the same transaction as every
job or task state change, and event ids grow in commit order (one writer at a
time), so the jobs named by events newer than the last sync are exactly the jobs
that changed; they are re-read with indexed SQLite lookups. The finished tasks of
jobs still in progress are read live each time.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd

from jobmanager.backends import StoreAt, as_store_at, read_connection, store_at
from jobmanager.engine.states import FINISHED, IN_PROGRESS
from jobmanager.errors import BadParams, HomeError
from jobmanager.history.grid import GRID_COLUMNS, TIME_COLUMNS, build_where, order_by, select_list
from jobmanager.home import Home
from jobmanager.store.sql import scope_sql

PERIODS = {"hour": 3600, "day": 86400}
#: percentiles are exact for groups up to this many rows and sampled above it: exact quantiles
#: over 10M tasks take ~1 s on two cores, a 100k reservoir ~0.4 s (measured, bench_history.py)
QUANTILE_SAMPLE = 100_000
#: PostgreSQL mirror sync: no store transaction stays open this long (see History._sync_mirror_pg),
#: and the writers' clocks are within PG_CLOCK_SKEW_S of this one (used once, for the first build)
PG_COMMIT_MARGIN_S = 60.0
PG_CLOCK_SKEW_S = 60.0

_TS = "make_timestamp(CAST(round({0} * 1000000) AS BIGINT))"

#: readable projections of the store's tables (alias ``s``); times are naive UTC TIMESTAMPs
VIEWS: dict[str, str] = {
    "jobs": f"""
        s.id, s.name, s.type, s.state, s.owner, s.case_id, s.priority, s.retries,
        s.tasks_total, s.tasks_succeeded, s.tasks_failed, s.tasks_cancelled, s.error,
        {_TS.format("s.created_at")} AS created_at, {_TS.format("s.started_at")} AS started_at,
        {_TS.format("s.finished_at")} AS finished_at, {_TS.format("s.updated_at")} AS updated_at,
        s.started_at - s.created_at AS wait_s, s.finished_at - s.started_at AS duration_s,
        s.has_finish::BOOLEAN AS has_finish, s.finisher, s.params""",
    "tasks": f"""
        s.id, s.job_id, s.seq, s.name, s.state, s.agent, s.attempts, s.max_attempts,
        s.progress_done, s.progress_total, s.cancel_requested::BOOLEAN AS cancel_requested, s.error,
        {_TS.format("s.queued_at")} AS queued_at, {_TS.format("s.started_at")} AS started_at,
        {_TS.format("s.finished_at")} AS finished_at,
        s.started_at - s.queued_at AS wait_s, s.finished_at - s.started_at AS duration_s,
        s.params, s.traceback""",
    "events": f"""
        s.id, {_TS.format("s.at")} AS at, s.job_id, s.task_id, s.seq, s.kind, s.from_state, s.to_state,
        s.agent, s.actor, s.message""",
    "agents": f"""
        s.name, s.state, s.host, s.pid, s.workers, s.worker_type, s.version, s.queues,
        s.interval AS interval_s, {_TS.format("s.started_at")} AS started_at,
        {_TS.format("s.heartbeat_at")} AS heartbeat_at, {_TS.format("s.stopped_at")} AS stopped_at,
        s.current_tasks, s.done, s.failed, s.cpu_percent, s.rss_bytes / 1048576.0 AS rss_mb, s.log_path""",
    "artifacts": f"""
        s.id, s.job_id, s.task_id, s.name, s.path, s.media_type, s.size,
        {_TS.format("s.created_at")} AS created_at""",
}


def store_file(home: Home) -> StoreAt:
    """What the history opens for a home's store (:func:`jobmanager.backends.store_at` decides)."""
    return store_at(home)


def find_extension() -> Path:
    """The sqlite_scanner extension file shipped by ``duckdb-extension-sqlite-scanner``."""
    try:
        import duckdb
    except ImportError:
        raise HomeError("the history needs DuckDB: pip install 'jobmanager[history]'") from None
    spec = importlib.util.find_spec(os.environ.get("JOBMANAGER_SQLITE_EXTENSION_PACKAGE",
                                                   "duckdb_extension_sqlite_scanner"))
    if spec is not None and spec.origin:
        base = Path(spec.origin).parent / "extensions"
        exact = base / f"v{duckdb.__version__}" / "sqlite_scanner.duckdb_extension"
        if exact.is_file():
            return exact
    raise HomeError(
        f"the DuckDB sqlite extension for duckdb {duckdb.__version__} is not installed: "
        f"pip install duckdb-extension-sqlite-scanner=={duckdb.__version__} (or 'jobmanager[history]')"
    )


#: the views free SQL reads (``jm.sql``, ``export_report``); the README lists exactly these
SQL_VIEWS: tuple[str, ...] = tuple(VIEWS)


def scope_clauses(scope: dict[str, Any] | None) -> dict[str, tuple[str, list[Any]]]:
    """Per view, the WHERE clause (over the view's own columns) of the rows ``scope`` may see.

    ``scope`` is :meth:`jobmanager.auth.permissions.Actor.scope` plus ``agents`` (may see agents);
    None sees everything. Tasks, events and artifacts follow their job; events without a job
    and the agents view need ``agents``.
    """
    if scope is None:
        return {name: ("true", []) for name in VIEWS}
    agents = "true" if scope.get("agents") else "false"
    if scope["all"] and scope["cases"] is None:
        jobs_sql, jobs_params = "true", list[Any]()
        of_job = "true"
    else:
        jobs_sql, jobs_params = scope_sql(scope, owner="owner", case="case_id")
        of_job = f"job_id IN (SELECT id FROM jobs WHERE {jobs_sql})"
    return {
        "jobs": (jobs_sql, jobs_params),
        "tasks": (of_job, jobs_params if of_job != "true" else []),
        "artifacts": (of_job, jobs_params if of_job != "true" else []),
        "events": (f"({of_job} OR (job_id IS NULL AND {agents}))", jobs_params if of_job != "true" else []),
        "agents": (agents, []),
    }


class History:
    """DuckDB views over one store file: ``jobs``, ``tasks``, ``events``, ``agents``, ``artifacts``."""

    def __init__(self, store_path: StoreAt | str | os.PathLike[str], *, extension: str | os.PathLike[str] | None = None,
                 duckdb_config: dict[str, Any] | None = None) -> None:
        """``store_path``: where the store is (:func:`store_file`), a SQLite store file, or a PostgreSQL URL."""
        self.at = as_store_at(store_path)
        self.pg_url: str | None = self.at.url
        self.store_path = self.at.path if self.at.path is not None else Path()
        if self.pg_url is None and not self.store_path.is_file():
            raise HomeError(f"no job store at {self.store_path}")
        ext: Path | None = None
        if self.pg_url is None:
            ext = Path(extension) if extension is not None else find_extension()
            if not ext.is_file():
                raise HomeError(f"the DuckDB sqlite extension is missing: {ext} does not exist")
        import duckdb

        config = {**(duckdb_config or {}), "autoinstall_known_extensions": False,
                  "autoload_known_extensions": False}
        self._lock = threading.RLock()
        self.con = duckdb.connect(":memory:", config=config)
        if self.pg_url is not None:
            from jobmanager.history.postgres import attach_postgres

            try:  # LOADs the postgres extension by path and ATTACHes the store READ_ONLY as ``store``
                attach_postgres(self.con, self.pg_url, extension=extension)
            except BaseException:
                self.con.close()
                raise
        else:
            assert ext is not None
            try:
                self.con.execute(f"LOAD '{_quote(str(ext))}'")
                self.con.execute(f"ATTACH '{_quote(str(self.store_path))}' AS store (TYPE sqlite, READ_ONLY)")
            except duckdb.Error as exc:
                self.con.close()
                raise HomeError(f"cannot open the history of {self.store_path}: {str(exc).splitlines()[0]}") from None
        for name, projection in VIEWS.items():
            self.con.execute(f"CREATE VIEW {name} AS SELECT {projection} FROM store.{name} s")
        #: each view's columns, in order (what :func:`jobmanager.history.sandbox.plan` may select)
        self.columns: dict[str, list[str]] = {
            name: [d[0] for d in self.con.execute(f"SELECT * FROM {name} LIMIT 0").description] for name in VIEWS}
        # Defence in depth for free SQL: no file reads/writes beyond the attached store, no setting changes.
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")
        self._mirror_mark: float | None = None
        self._pg_marks: list[tuple[float, int]] = []  # PostgreSQL: (monotonic time, max event id) per sync

    def close(self) -> None:
        with self._lock:
            self.con.close()

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ad-hoc SQL ----------------------------------------------------------------------------
    def sql(self, query: str, params: list[Any] | dict[str, Any] | None = None,
            scope: dict[str, Any] | None = None) -> pd.DataFrame:
        """Run one SELECT over the views, in a sandbox holding only ``scope``'s rows (see
        :mod:`jobmanager.history.sandbox`); ``params`` are bound (``?`` or ``$name``)."""
        from jobmanager.history import sandbox as history_sandbox

        needed = history_sandbox.plan(query, self.columns)
        return history_sandbox.run(query, params, self.scoped_tables(needed, scope))

    def scoped_tables(self, needed: dict[str, list[str]], scope: dict[str, Any] | None) -> dict[str, Any]:
        """The rows of some views that ``scope`` may see, only the ``needed`` columns, as Arrow tables."""
        clauses = scope_clauses(scope)
        tables = {}
        with self._lock:
            for view, columns in needed.items():
                where, params = clauses[view]
                select = ", ".join(f'"{c}"' for c in columns)  # names from the views themselves
                result = self.con.execute(f"SELECT {select} FROM {view} WHERE {where}", params)
                tables[view] = result.arrow().read_all()
        return tables

    # -- jobs ------------------------------------------------------------------------------------
    def jobs(self, scope: dict[str, Any] | None = None, **filters: Any) -> pd.DataFrame:
        """Every job matching the grid's filters (all tabs unless ``tab`` is given), newest first."""
        where = build_where(filters, like="ILIKE", tasks_table="store.tasks", prefix="s.", scope=scope)
        with self._lock:
            return self.con.execute(
                f"SELECT {VIEWS['jobs']} FROM store.jobs s WHERE {where.sql} ORDER BY s.created_at DESC, s.id DESC",
                where.params,
            ).df()

    def grid_rows(self, sort: str = "created_at", desc: bool = True, scope: dict[str, Any] | None = None,
                  **filters: Any) -> pd.DataFrame:
        """All rows the grid would show for ``filters``, with the grid's columns (for exports)."""
        where = build_where(filters, like="ILIKE", tasks_table="store.tasks", prefix="s.", scope=scope)
        with self._lock:
            df = self.con.execute(
                f"SELECT {select_list('s.')} FROM store.jobs s WHERE {where.sql} ORDER BY {order_by(sort, desc, 's.')}",
                where.params,
            ).df()
        for col in TIME_COLUMNS:
            df[col] = pd.to_datetime(df[col].astype("float64"), unit="s")
        return df[list(GRID_COLUMNS)]

    # -- stats -------------------------------------------------------------------------------------
    def stats(self, by: str | tuple[str, ...] = "type", period: str = "day",
              since: Any = None, scope: dict[str, Any] | None = None) -> dict[str, pd.DataFrame]:
        """Throughput, failure rate, duration and queue-wait percentiles (p50/p95) of finished work.

        ``by='type'`` counts finished jobs (duration = started -> finished, wait = created -> started);
        ``by='agent'`` counts finished tasks (wait = queued -> started). Returns
        ``{"summary": one row per key, "throughput": one row per period and key}``. Only the jobs
        ``scope`` (:meth:`jobmanager.auth.permissions.Actor.scope`; None: all) may see are counted.
        """
        key = by[0] if isinstance(by, tuple) and len(by) == 1 else by
        if key not in ("type", "agent"):
            raise BadParams(f"stats by {by!r}: choose 'type' or 'agent'")
        if period not in PERIODS:
            raise BadParams(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
        cut = -1e18 if since is None else build_where({"since": since}).params[0]
        seen, seen_params = scope_clauses(scope)["jobs"]  # over owner and case_id, which the mirror keeps
        with self._lock:
            self._sync_mirror()
            if key == "type":
                source = "(SELECT type AS key, state IN ('failed', 'completed_with_errors') AS failed," \
                         f" state = 'cancelled' AS cancelled, finished_at, wait, dur FROM _m_jobs WHERE {seen})"
                args = [*seen_params, cut]
            else:
                of_job = "" if seen == "true" else f" WHERE job_id IN (SELECT id FROM _m_jobs WHERE {seen})"
                source = "(SELECT agent AS key, failed, false AS cancelled, finished_at, wait, dur FROM _m_tasks" \
                         f"{of_job} UNION ALL SELECT agent, failed, false, finished_at, wait, dur FROM _l_tasks" \
                         f" WHERE {seen})"
                args = [*(seen_params if of_job else []), *seen_params, cut]
            summary = self.con.execute(f"""
                SELECT "{key}", finished, failed, cancelled, failure_rate, d[1] AS p50_s, d[2] AS p95_s,
                       w[1] AS wait_p50_s, w[2] AS wait_p95_s
                FROM (SELECT key AS "{key}", count(*) AS finished, count(*) FILTER (WHERE failed) AS failed,
                             count(*) FILTER (WHERE cancelled) AS cancelled,
                             count(*) FILTER (WHERE failed) / count(*) AS failure_rate,
                             reservoir_quantile(dur, [0.5, 0.95], {QUANTILE_SAMPLE}) AS d,
                             reservoir_quantile(wait, [0.5, 0.95], {QUANTILE_SAMPLE}) AS w
                      FROM {source} WHERE finished_at >= ? GROUP BY key)
                ORDER BY "{key}" NULLS LAST""", args).df()
            step = PERIODS[period]
            throughput = self.con.execute(f"""
                SELECT make_timestamp(bucket * {step} * 1000000) AS period, key AS "{key}", finished, failed,
                       failed / finished AS failure_rate, wait_mean_s
                FROM (SELECT CAST(floor(finished_at / {step}) AS BIGINT) AS bucket, key, count(*) AS finished,
                             count(*) FILTER (WHERE failed) AS failed, avg(wait) AS wait_mean_s
                      FROM {source} WHERE finished_at >= ? GROUP BY bucket, key)
                ORDER BY period, key NULLS LAST""", args).df()
        return {"summary": summary, "throughput": throughput}

    def refresh(self) -> None:
        """Forget the stats mirror; the next ``stats`` call rebuilds it from scratch."""
        with self._lock:
            self._mirror_mark = None

    # -- the stats mirror ----------------------------------------------------------------------------
    def _sync_mirror(self) -> None:
        if self.pg_url is not None:
            self._sync_mirror_pg()
            return
        with read_connection(self.at) as conn:
            mark = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
            if self._mirror_mark is None:
                self._build_mirror()
            elif mark > self._mirror_mark:
                changed = [r[0] for r in conn.execute(
                    "SELECT DISTINCT job_id FROM events WHERE id > ? AND job_id IS NOT NULL",
                    (self._mirror_mark,)).fetchall()]
                self._replace_jobs(conn, changed)
            self._mirror_mark = mark
            live_tasks = self._live_tasks(conn)
        self._load_live(live_tasks)

    def _sync_mirror_pg(self) -> None:
        """The mirror sync on PostgreSQL, where event ids do NOT grow in commit order.

        A sequence hands out ids when rows are inserted and transactions commit in any order,
        so an event with a smaller id than the largest one a sync saw can commit after that
        sync. The rule: each sync records (its time, the largest event id its snapshot saw),
        and a sync re-reads the jobs named by every event with an id above the mark of the
        newest sync taken at least ``PG_COMMIT_MARGIN_S`` before the *previous* sync. An
        event this sync sees and the previous one did not committed after the previous sync;
        as no store transaction stays open for the margin (they are all short), its id was
        allocated after that older sync's snapshot, so it is above that sync's mark and gets
        re-read. Re-reading a job twice is harmless (its mirror rows are replaced), so the
        margin costs only a few more indexed lookups. The first build has no older sync: its
        bound is the largest id of the events written (by the writers' clocks) before the
        margin plus ``PG_CLOCK_SKEW_S``, found by walking the primary key backwards.
        """
        with read_connection(self.at) as conn:  # one snapshot for all reads
            mark = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
            now = time.monotonic()  # the snapshot is taken by the first query
            if self._mirror_mark is None:
                row = conn.execute(
                    "SELECT id FROM events WHERE at < ? ORDER BY id DESC LIMIT 1",
                    (time.time() - PG_COMMIT_MARGIN_S - PG_CLOCK_SKEW_S,)).fetchone()
                self._build_mirror()  # (DuckDB reads a snapshot at least as new as this one)
                self._pg_marks = [(float("-inf"), row[0] if row else 0), (now, mark)]
            else:
                previous = self._pg_marks[-1][0]
                old = [i for i, (t, _) in enumerate(self._pg_marks) if t <= previous - PG_COMMIT_MARGIN_S]
                first = old[-1] if old else 0
                changed = [r[0] for r in conn.execute(
                    "SELECT DISTINCT job_id FROM events WHERE id > ? AND job_id IS NOT NULL",
                    (self._pg_marks[first][1],)).fetchall()]
                self._replace_jobs(conn, changed)
                self._pg_marks = [*self._pg_marks[first:], (now, mark)]
            self._mirror_mark = mark
            live_tasks = self._live_tasks(conn)
        self._load_live(live_tasks)

    def _live_tasks(self, conn: Any) -> pd.DataFrame:
        """The finished tasks of jobs in progress, with their job's owner and case (for the scope)."""
        live = pd.DataFrame(conn.execute(
            f"SELECT id, owner, case_id FROM jobs WHERE state IN ({','.join('?' * len(IN_PROGRESS))})",
            IN_PROGRESS).fetchall(), columns=["job_id", "owner", "case_id"])
        tasks = _done_tasks(conn, live.job_id.tolist(), self.at.dialect.no_index("state"))
        live = live.astype({"job_id": "uint32", "owner": "object", "case_id": "object"})
        return tasks.merge(live, on="job_id", how="left")

    def _load_live(self, live_tasks: pd.DataFrame) -> None:
        self.con.execute("DELETE FROM _l_tasks")
        self.con.register("_live_df", live_tasks)
        try:
            self.con.execute("INSERT INTO _l_tasks SELECT * FROM _live_df")
        finally:
            self.con.unregister("_live_df")

    def _build_mirror(self) -> None:
        fin = ",".join(f"'{s}'" for s in FINISHED)  # constants, not user input
        self.con.execute(f"""CREATE OR REPLACE TABLE _m_jobs AS
            SELECT id::UINTEGER AS id, type, state, finished_at, (started_at - created_at)::FLOAT AS wait,
                   (finished_at - started_at)::FLOAT AS dur, owner, case_id
            FROM store.jobs WHERE state IN ({fin})""")
        self.con.execute("""CREATE OR REPLACE TABLE _m_tasks AS
            SELECT t.job_id::UINTEGER AS job_id, t.agent, t.state = 'failed' AS failed, t.finished_at,
                   (t.started_at - t.queued_at)::FLOAT AS wait, (t.finished_at - t.started_at)::FLOAT AS dur
            FROM store.tasks t SEMI JOIN _m_jobs j ON j.id = t.job_id
            WHERE t.state IN ('succeeded', 'failed')""")
        self.con.execute("CREATE OR REPLACE TABLE _l_tasks AS SELECT *, ''::VARCHAR AS owner,"
                         " ''::VARCHAR AS case_id FROM _m_tasks LIMIT 0")

    def _replace_jobs(self, conn: Any, ids: list[int]) -> None:
        """Re-read jobs that changed: drop their mirror rows, add them back if they are finished."""
        jobs = []
        state = self.at.dialect.no_index("state")
        for chunk in _chunks(ids):
            jobs += conn.execute(
                "SELECT id, type, state, finished_at, started_at - created_at, finished_at - started_at, owner,"
                f" case_id FROM jobs"
                f" WHERE id IN ({','.join('?' * len(chunk))}) AND {state} IN ({','.join('?' * len(FINISHED))})",
                (*chunk, *FINISHED)).fetchall()
        jobs_df = pd.DataFrame(jobs, columns=["id", "type", "state", "finished_at", "wait", "dur", "owner", "case_id"])
        tasks_df = _done_tasks(conn, [r[0] for r in jobs], self.at.dialect.no_index("state"))
        self.con.register("_changed", pd.DataFrame({"id": ids}))
        self.con.register("_jobs_df", jobs_df)
        self.con.register("_tasks_df", tasks_df)
        try:
            self.con.execute("DELETE FROM _m_jobs WHERE id IN (SELECT id FROM _changed)")
            self.con.execute("DELETE FROM _m_tasks WHERE job_id IN (SELECT id FROM _changed)")
            self.con.execute("INSERT INTO _m_jobs SELECT * FROM _jobs_df")
            self.con.execute("INSERT INTO _m_tasks SELECT * FROM _tasks_df")
        finally:
            for name in ("_changed", "_jobs_df", "_tasks_df"):
                self.con.unregister(name)


def _done_tasks(conn: Any, job_ids: list[int], state: str) -> pd.DataFrame:
    """The finished tasks of some jobs, in the mirror's columns (indexed lookups by job_id); ``state`` is
    the state column with the index hidden (the dialect's :meth:`no_index`)."""
    rows: list[tuple[Any, ...]] = []
    for chunk in _chunks(job_ids):
        rows += conn.execute(
            "SELECT job_id, agent, state = 'failed', finished_at, started_at - queued_at, finished_at - started_at"
            f" FROM tasks WHERE job_id IN ({','.join('?' * len(chunk))}) AND {state} IN ('succeeded', 'failed')",
            chunk).fetchall()
    df = pd.DataFrame(rows, columns=["job_id", "agent", "failed", "finished_at", "wait", "dur"])
    return df.astype({"job_id": "uint32", "failed": "bool", "finished_at": "float64", "wait": "float32",
                      "dur": "float32"})


def _chunks(ids: list[int], size: int = 500) -> list[list[int]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _quote(text: str) -> str:
    """A path inside a SQL string literal (LOAD and ATTACH take no bound parameters)."""
    return text.replace("'", "''")
