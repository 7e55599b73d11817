"""The store's tables in PostgreSQL's dialect, and the migrations that move a store forward.

Same tables and column names as :mod:`schema` (SQLite), so the grid's SQL and the
DuckDB history views read either. Ids are BIGSERIAL, timestamps are seconds since
the epoch as DOUBLE PRECISION (SQLite's REAL), JSON columns hold TEXT, and flags
stay INTEGER 0/1 so ``has_finish = 1`` means the same on both. ``interval`` is a
type name in PostgreSQL, so that column is always written quoted.

``MIGRATIONS[n]`` takes a store from version ``n - 1`` to ``n``; version 1 is the
whole schema of the first release. Add a version by appending its statements here
and raising ``base.SCHEMA_VERSION``.
"""

from __future__ import annotations

PG_DDL_V1 = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS jobs (
    id              BIGSERIAL PRIMARY KEY,
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
    created_at      DOUBLE PRECISION NOT NULL,
    started_at      DOUBLE PRECISION,
    finished_at     DOUBLE PRECISION,
    updated_at      DOUBLE PRECISION NOT NULL,
    schedule_id     BIGINT
);
CREATE INDEX IF NOT EXISTS jobs_state_id ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
CREATE INDEX IF NOT EXISTS jobs_schedule ON jobs (schedule_id, id);
CREATE INDEX IF NOT EXISTS jobs_finisher ON jobs (finisher) WHERE finisher IS NOT NULL;

CREATE TABLE IF NOT EXISTS tasks (
    id               BIGSERIAL PRIMARY KEY,
    job_id           BIGINT  NOT NULL REFERENCES jobs (id),
    seq              INTEGER NOT NULL,
    name             TEXT    NOT NULL,
    params           TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 1,
    dispatch         INTEGER NOT NULL DEFAULT 0,
    agent            TEXT,
    progress_done    DOUBLE PRECISION,
    progress_total   DOUBLE PRECISION,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    traceback        TEXT,
    queued_at        DOUBLE PRECISION,
    started_at       DOUBLE PRECISION,
    finished_at      DOUBLE PRECISION,
    UNIQUE (job_id, seq)
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state);
CREATE INDEX IF NOT EXISTS tasks_agent ON tasks (agent, state);

CREATE TABLE IF NOT EXISTS events (
    id         BIGSERIAL PRIMARY KEY,
    at         DOUBLE PRECISION NOT NULL,
    job_id     BIGINT,
    task_id    BIGINT,
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
    "interval"    DOUBLE PRECISION NOT NULL,
    started_at    DOUBLE PRECISION NOT NULL,
    heartbeat_at  DOUBLE PRECISION NOT NULL,
    stopped_at    DOUBLE PRECISION,
    current_tasks TEXT    NOT NULL DEFAULT '[]',
    done          INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    cpu_percent   DOUBLE PRECISION,
    rss_bytes     BIGINT,
    log_path      TEXT,
    command       TEXT
);

CREATE TABLE IF NOT EXISTS artifacts (
    id         BIGSERIAL PRIMARY KEY,
    job_id     BIGINT  NOT NULL REFERENCES jobs (id),
    task_id    BIGINT,
    name       TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    media_type TEXT    NOT NULL,
    size       BIGINT  NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (job_id, name)
);

CREATE TABLE IF NOT EXISTS schedules (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    type          TEXT    NOT NULL,
    params        TEXT    NOT NULL,
    owner         TEXT    NOT NULL,
    case_id       TEXT,
    priority      INTEGER NOT NULL DEFAULT 0,
    trigger_kind  TEXT    NOT NULL,
    trigger_value TEXT    NOT NULL,
    timezone      TEXT    NOT NULL,
    anchor        DOUBLE PRECISION,
    misfire       TEXT    NOT NULL DEFAULT 'run_once',
    enabled       INTEGER NOT NULL DEFAULT 1,
    next_run_at   DOUBLE PRECISION,
    last_run_at   DOUBLE PRECISION,
    last_job_id   BIGINT,
    source_kind   TEXT    NOT NULL,
    source_ref    TEXT,
    created_at    DOUBLE PRECISION NOT NULL,
    updated_at    DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (enabled, next_run_at);

-- One row per (schedule, due time): the primary key makes each firing a database fact.
CREATE TABLE IF NOT EXISTS schedule_runs (
    schedule_id BIGINT  NOT NULL,
    due_at      DOUBLE PRECISION NOT NULL,
    fired_at    DOUBLE PRECISION NOT NULL,
    outcome     TEXT    NOT NULL,
    job_id      BIGINT,
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
    locked_until  DOUBLE PRECISION,
    last_login_at DOUBLE PRECISION,
    created_at    DOUBLE PRECISION NOT NULL
);

CREATE TABLE IF NOT EXISTS groups (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_at  DOUBLE PRECISION NOT NULL
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

CREATE TABLE IF NOT EXISTS audit (
    id          BIGSERIAL PRIMARY KEY,
    at          DOUBLE PRECISION NOT NULL,
    actor       TEXT    NOT NULL,
    interface   TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target_kind TEXT,
    target      TEXT,
    allowed     INTEGER NOT NULL,
    detail      TEXT
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at)
"""


def statements(ddl: str) -> list[str]:
    """The statements of a DDL script (no semicolons inside the statements here)."""
    lines = [line for line in ddl.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


#: version -> the statements that take a store from version - 1 to version
MIGRATIONS: dict[int, list[str]] = {
    1: statements(PG_DDL_V1),
}
