"""The store's tables, once for both backends, and the versioned migrations that build and move them.

Same tables and column names on SQLite and PostgreSQL, so the grid's SQL and the DuckDB history views
read either. Timestamps are seconds since the epoch (UTC), JSON columns hold TEXT, and flags stay
INTEGER 0/1 so ``has_finish = 1`` means the same on both. The column types that differ are named in
braces and filled in by the dialect (:attr:`Dialect.types`): ``{id}`` is SQLite's rowid alias or
PostgreSQL's BIGSERIAL, ``{real}`` REAL or DOUBLE PRECISION, ``{ref}`` and ``{big}`` INTEGER or
BIGINT. ``interval`` is a type name in PostgreSQL, so that column is always written quoted.

``MIGRATIONS[n]`` takes a store from version ``n - 1`` to ``n`` (one transaction per version, on both
backends); version 1 is the whole schema of the first release. Add a version by appending its
statements and raising ``base.SCHEMA_VERSION``. The ``meta`` table carries the version.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobmanager.store.dialect import Dialect


@dataclass(frozen=True)
class DDL:
    """One schema statement (types in braces), for every backend or only the one named in ``only``."""

    sql: str
    only: str | None = None


def _script(text: str, only: str | None = None) -> list[DDL]:
    """The statements of a script without triggers (no semicolon inside a statement)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return [DDL(s.strip(), only) for s in "\n".join(lines).split(";") if s.strip()]


TABLES = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS jobs (
    id              {id},
    type            TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    params          TEXT    NOT NULL,
    owner           TEXT    NOT NULL,
    case_id         TEXT,
    priority        INTEGER NOT NULL DEFAULT 0,
    state           TEXT    NOT NULL,
    retries         INTEGER NOT NULL DEFAULT 0,
    has_finish      INTEGER NOT NULL DEFAULT 0,
    finisher        TEXT,
    tasks_total     INTEGER NOT NULL,
    tasks_succeeded INTEGER NOT NULL DEFAULT 0,
    tasks_failed    INTEGER NOT NULL DEFAULT 0,
    tasks_cancelled INTEGER NOT NULL DEFAULT 0,
    error           TEXT,
    created_at      {real}    NOT NULL,
    started_at      {real},
    finished_at     {real},
    updated_at      {real}    NOT NULL,
    schedule_id     {ref}
);
CREATE INDEX IF NOT EXISTS jobs_state_id ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
CREATE INDEX IF NOT EXISTS jobs_schedule ON jobs (schedule_id, id);

CREATE TABLE IF NOT EXISTS tasks (
    id               {id},
    job_id           {ref} NOT NULL REFERENCES jobs (id),
    seq              INTEGER NOT NULL,
    name             TEXT    NOT NULL,
    params           TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 1,
    dispatch         INTEGER NOT NULL DEFAULT 0,
    agent            TEXT,
    progress_done    {real},
    progress_total   {real},
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    traceback        TEXT,
    queued_at        {real},
    started_at       {real},
    finished_at      {real},
    UNIQUE (job_id, seq)
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state);
CREATE INDEX IF NOT EXISTS tasks_agent ON tasks (agent, state);

CREATE TABLE IF NOT EXISTS events (
    id         {id},
    at         {real}    NOT NULL,
    job_id     {ref},
    task_id    {ref},
    seq        INTEGER,
    kind       TEXT    NOT NULL,
    from_state TEXT,
    to_state   TEXT,
    agent      TEXT,
    actor      TEXT,
    message    TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, id);
CREATE INDEX IF NOT EXISTS events_kind_at ON events (kind, at);

CREATE TABLE IF NOT EXISTS agents (
    name          TEXT PRIMARY KEY,
    host          TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    workers       INTEGER NOT NULL,
    worker_type   TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    queues        TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    "interval"    {real}    NOT NULL,
    started_at    {real}    NOT NULL,
    heartbeat_at  {real}    NOT NULL,
    stopped_at    {real},
    current_tasks TEXT    NOT NULL DEFAULT '[]',
    done          INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    cpu_percent   {real},
    rss_bytes     {big},
    log_path      TEXT,
    command       TEXT
);

CREATE TABLE IF NOT EXISTS artifacts (
    id         {id},
    job_id     {ref} NOT NULL REFERENCES jobs (id),
    task_id    {ref},
    name       TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    media_type TEXT    NOT NULL,
    size       {big} NOT NULL,
    created_at {real}    NOT NULL,
    UNIQUE (job_id, name)
);

CREATE TABLE IF NOT EXISTS schedules (
    id            {id},
    name          TEXT    NOT NULL UNIQUE,
    type          TEXT    NOT NULL,
    params        TEXT    NOT NULL,
    owner         TEXT    NOT NULL,
    case_id       TEXT,
    priority      INTEGER NOT NULL DEFAULT 0,
    trigger_kind  TEXT    NOT NULL,
    trigger_value TEXT    NOT NULL,
    timezone      TEXT    NOT NULL,
    anchor        {real},
    misfire       TEXT    NOT NULL DEFAULT 'run_once',
    enabled       INTEGER NOT NULL DEFAULT 1,
    next_run_at   {real},
    last_run_at   {real},
    last_job_id   {ref},
    source_kind   TEXT    NOT NULL,
    source_ref    TEXT,
    created_at    {real}    NOT NULL,
    updated_at    {real}    NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (enabled, next_run_at);

-- One row per (schedule, due time): the unique key makes each firing a database fact,
-- so with several agents each due run fires exactly once.
CREATE TABLE IF NOT EXISTS schedule_runs (
    schedule_id {ref} NOT NULL,
    due_at      {real}    NOT NULL,
    fired_at    {real}    NOT NULL,
    outcome     TEXT    NOT NULL,
    job_id      {ref},
    agent       TEXT,
    message     TEXT,
    PRIMARY KEY (schedule_id, due_at)
);

CREATE TABLE IF NOT EXISTS users (
    username      TEXT PRIMARY KEY,
    display_name  TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    active        INTEGER NOT NULL DEFAULT 1,
    failures      INTEGER NOT NULL DEFAULT 0,
    locked_until  {real},
    last_login_at {real},
    created_at    {real}    NOT NULL
);

CREATE TABLE IF NOT EXISTS groups (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_at  {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS group_members (
    group_name TEXT NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    username   TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    PRIMARY KEY (group_name, username)
);
CREATE TABLE IF NOT EXISTS group_permissions (
    group_name TEXT NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    permission TEXT NOT NULL,
    PRIMARY KEY (group_name, permission)
);
CREATE TABLE IF NOT EXISTS group_cases (
    group_name TEXT NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    case_id    TEXT NOT NULL,
    PRIMARY KEY (group_name, case_id)
);

-- Every action, allowed or refused: who, what, on which target, when, through which interface.
CREATE TABLE IF NOT EXISTS audit (
    id          {id},
    at          {real}    NOT NULL,
    actor       TEXT    NOT NULL,
    interface   TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target_kind TEXT,
    target      TEXT,
    allowed     INTEGER NOT NULL,
    detail      TEXT
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
"""

#: SQLite keeps the jobs per state in a table, by triggers in the same transaction as every change:
#: the dashboard's unfiltered tab counts cost the same at 1M jobs as at 1k (a COUNT(*) reads every
#: row). PostgreSQL's grid counts with COUNT(*) (see ``history_pg``).
SQLITE_JOB_COUNTS = [
    DDL("CREATE TABLE IF NOT EXISTS job_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0)", "sqlite"),
    DDL("""CREATE TRIGGER IF NOT EXISTS job_counts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (state, n) VALUES (NEW.state, 1) ON CONFLICT (state) DO UPDATE SET n = n + 1;
END""", "sqlite"),
    DDL("""CREATE TRIGGER IF NOT EXISTS job_counts_update AFTER UPDATE OF state ON jobs
WHEN OLD.state <> NEW.state BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
    INSERT INTO job_counts (state, n) VALUES (NEW.state, 1) ON CONFLICT (state) DO UPDATE SET n = n + 1;
END""", "sqlite"),
    DDL("""CREATE TRIGGER IF NOT EXISTS job_counts_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
END""", "sqlite"),
]

#: version -> the statements that take a store from version - 1 to version
MIGRATIONS: dict[int, list[DDL]] = {
    1: [
        *_script(TABLES),
        DDL("CREATE INDEX IF NOT EXISTS tasks_agent_job ON tasks (agent, job_id)", "sqlite"),
        DDL("CREATE INDEX IF NOT EXISTS jobs_finisher ON jobs (finisher) WHERE finisher IS NOT NULL", "postgresql"),
        *SQLITE_JOB_COUNTS,
    ],
    # The engine for production (issue 14): queues and concurrency limits, time limits, a lost agent's
    # tasks re-run without spending an attempt (up to ``max_losses``), and notifications. A job's
    # options are copied from its type (and the job's or schedule's overrides) when it is stored, so
    # what the engine enforces is a fact of the job row, not of whichever code an agent runs.
    2: _script("""
ALTER TABLE jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN soft_limit {real};
ALTER TABLE jobs ADD COLUMN hard_limit {real};
ALTER TABLE jobs ADD COLUMN max_losses INTEGER NOT NULL DEFAULT 3;
ALTER TABLE jobs ADD COLUMN rerun_safe INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN notify TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN losses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN waiting TEXT;
ALTER TABLE tasks ADD COLUMN warning TEXT;
ALTER TABLE schedules ADD COLUMN options TEXT NOT NULL DEFAULT '{{}}';

-- At most max_running running tasks of the jobs that match (type and/or queue; NULL = any),
-- counted per case when per_case = 1. A database fact, so it holds across every agent.
CREATE TABLE IF NOT EXISTS limits (
    name        TEXT PRIMARY KEY,
    type        TEXT,
    queue       TEXT,
    per_case    INTEGER NOT NULL DEFAULT 0,
    max_running INTEGER NOT NULL,
    created_at  {real} NOT NULL,
    updated_at  {real} NOT NULL
);

-- One row per notification to deliver (the outbox): written from the events the engine records,
-- sent by an agent's notifier thread with retries, never by a worker.
CREATE TABLE IF NOT EXISTS notifications (
    id           {id},
    event_id     {ref},
    job_id       {ref},
    agent_name   TEXT,
    trigger      TEXT    NOT NULL,
    channel      TEXT    NOT NULL,
    target       TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      {real}    NOT NULL,
    sender       TEXT,
    last_error   TEXT,
    created_at   {real}    NOT NULL,
    delivered_at {real},
    UNIQUE (event_id, channel, target)
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (state, next_at);
CREATE INDEX IF NOT EXISTS notifications_job ON notifications (job_id, id);
-- The notifiers' cursor: events up to this id are routed. An upgraded store starts after its history.
INSERT INTO meta (key, value) SELECT 'notify_cursor', CAST(COALESCE(MAX(id), 0) AS TEXT) FROM events WHERE 1 = 1
    ON CONFLICT (key) DO NOTHING;
"""),
    # Task logs as parts of worker threads' files (issue 18): each attempt's part, one token an attempt.
    # Written first by claims (``<file>:<offset>:<n>``), now by outcomes (``<file>@<time>@<start>-<end>``);
    # both are read (jobmanager/engine/tasklogs.py).
    3: _script("""
ALTER TABLE tasks ADD COLUMN log_slices TEXT;
"""),
    # One index of the tasks an agent holds or held, instead of two, and only of those (issue 18): a task
    # that never ran (no agent yet) is not in it, so its first claim inserts one entry where it deleted and
    # inserted one in each of tasks_agent (agent, state) and tasks_agent_job (agent, job_id): three pages
    # fewer in that claim's commit (a task handed back or retried keeps its agent, and moves in the index).
    # It serves both of their queries: an agent's running tasks (recovery, reconcile) and
    # the jobs an agent ran (the grid's agent filter). Idempotent: SQLite's repair runs it again.
    4: _script("""
DROP INDEX IF EXISTS tasks_agent_job;
DROP INDEX IF EXISTS tasks_agent;
CREATE INDEX IF NOT EXISTS tasks_held ON tasks (agent, state, job_id) WHERE agent IS NOT NULL;
"""),
}


def statements(version: int, dialect: Dialect) -> list[str]:
    """The statements that take a store on ``dialect`` from ``version - 1`` to ``version``."""
    return [dialect.ddl(s.sql) for s in MIGRATIONS[version] if s.only in (None, dialect.name)]
