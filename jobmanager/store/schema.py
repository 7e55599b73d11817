"""The store's tables, version 1, in SQLite's dialect.

Timestamps are seconds since the epoch (UTC) as REAL; JSON columns hold TEXT.
The ``meta`` table carries the schema version from the first day so later
versions can migrate forward.
"""

from __future__ import annotations

SQLITE_DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS jobs (
    id              INTEGER PRIMARY KEY,
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
    created_at      REAL    NOT NULL,
    started_at      REAL,
    finished_at     REAL,
    updated_at      REAL    NOT NULL,
    schedule_id     INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state_id ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
CREATE INDEX IF NOT EXISTS jobs_schedule ON jobs (schedule_id, id);

CREATE TABLE IF NOT EXISTS tasks (
    id               INTEGER PRIMARY KEY,
    job_id           INTEGER NOT NULL REFERENCES jobs (id),
    seq              INTEGER NOT NULL,
    name             TEXT    NOT NULL,
    params           TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 1,
    dispatch         INTEGER NOT NULL DEFAULT 0,
    agent            TEXT,
    progress_done    REAL,
    progress_total   REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    traceback        TEXT,
    queued_at        REAL,
    started_at       REAL,
    finished_at      REAL,
    UNIQUE (job_id, seq)
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state);
CREATE INDEX IF NOT EXISTS tasks_agent ON tasks (agent, state);
CREATE INDEX IF NOT EXISTS tasks_agent_job ON tasks (agent, job_id);

-- Jobs per state, kept by triggers in the same transaction as every change: the dashboard's
-- unfiltered tab counts cost the same at 1M jobs as at 1k (a COUNT(*) would read every row).
CREATE TABLE IF NOT EXISTS job_counts (
    state TEXT PRIMARY KEY,
    n     INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER IF NOT EXISTS job_counts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (state, n) VALUES (NEW.state, 1) ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS job_counts_update AFTER UPDATE OF state ON jobs WHEN OLD.state <> NEW.state BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
    INSERT INTO job_counts (state, n) VALUES (NEW.state, 1) ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS job_counts_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
END;

CREATE TABLE IF NOT EXISTS events (
    id         INTEGER PRIMARY KEY,
    at         REAL    NOT NULL,
    job_id     INTEGER,
    task_id    INTEGER,
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
    interval      REAL    NOT NULL,
    started_at    REAL    NOT NULL,
    heartbeat_at  REAL    NOT NULL,
    stopped_at    REAL,
    current_tasks TEXT    NOT NULL DEFAULT '[]',
    done          INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    cpu_percent   REAL,
    rss_bytes     INTEGER,
    log_path      TEXT,
    command       TEXT
);

CREATE TABLE IF NOT EXISTS artifacts (
    id         INTEGER PRIMARY KEY,
    job_id     INTEGER NOT NULL REFERENCES jobs (id),
    task_id    INTEGER,
    name       TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    media_type TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    created_at REAL    NOT NULL,
    UNIQUE (job_id, name)
);

CREATE TABLE IF NOT EXISTS schedules (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    type          TEXT    NOT NULL,
    params        TEXT    NOT NULL,
    owner         TEXT    NOT NULL,
    case_id       TEXT,
    priority      INTEGER NOT NULL DEFAULT 0,
    trigger_kind  TEXT    NOT NULL,
    trigger_value TEXT    NOT NULL,
    timezone      TEXT    NOT NULL,
    anchor        REAL,
    misfire       TEXT    NOT NULL DEFAULT 'run_once',
    enabled       INTEGER NOT NULL DEFAULT 1,
    next_run_at   REAL,
    last_run_at   REAL,
    last_job_id   INTEGER,
    source_kind   TEXT    NOT NULL,
    source_ref    TEXT,
    created_at    REAL    NOT NULL,
    updated_at    REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (enabled, next_run_at);

-- One row per (schedule, due time): the unique key makes each firing a database fact,
-- so with several agents each due run fires exactly once.
CREATE TABLE IF NOT EXISTS schedule_runs (
    schedule_id INTEGER NOT NULL,
    due_at      REAL    NOT NULL,
    fired_at    REAL    NOT NULL,
    outcome     TEXT    NOT NULL,
    job_id      INTEGER,
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
    locked_until  REAL,
    last_login_at REAL,
    created_at    REAL    NOT NULL
);

CREATE TABLE IF NOT EXISTS groups (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_at  REAL NOT NULL
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
    id          INTEGER PRIMARY KEY,
    at          REAL    NOT NULL,
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
