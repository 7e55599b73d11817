"""Issue 12, item 2 (and the sql part of item 12): free SQL reads only the views' rows of the caller's scope.

User SQL runs in a fresh DuckDB holding only those rows (jobmanager/history/sandbox.py): no store attached,
no extension, no files, configuration locked. Every attack below worked on the old code (an operator read
every password hash with ``sqlite_query``; EXPLAIN ANALYZE ran DDL); each is now one line, exit status 2 on
the CLI, written to the audit trail as refused with the reason, and nothing changed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from jobmanager import BadParams, JobManager
from jobmanager.cli.main import cli
from jobmanager.history.history import SQL_VIEWS

from .backends import write_store

README = Path(__file__).parent.parent / "README.md"
HASH_MARKERS = ("$scrypt", "$argon2", "password_hash", "admin-password-1")

ATTACKS = [
    "SELECT username, password_hash FROM sqlite_query('store', 'SELECT * FROM users')",
    "SELECT * FROM sqlite_scan('{home}/store.db', 'users')",
    "SELECT * FROM postgres_query('store', 'SELECT * FROM users')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "EXPLAIN ANALYZE CREATE OR REPLACE VIEW agents AS SELECT 1 AS x",
    "EXPLAIN SELECT * FROM jobs",
    "ATTACH '{home}/store.db' AS s2",
    "COPY (SELECT * FROM jobs) TO '{tmp}/copied.csv'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA database_list",
    "CALL pragma_version()",
    "SELECT 1; SELECT 2",
    "SELECT * FROM duckdb_settings()",
    "SELECT getenv('HOME')",
    "SELECT current_setting('threads')",
    "SELECT * FROM read_text('{home}/jobmanager.toml')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM store.users",
    "SELECT * FROM users",
    "SELECT * FROM audit",
    "SELECT * FROM schedules",
    "SELECT * FROM '{home}/store.db'",
    "SELECT * FROM query('SELECT 1')",
    "DESCRIBE jobs",
    "SELECT * FROM memory.main.jobs",
]


@pytest.fixture
def people(home: Path) -> Path:
    """An operator (demo's operators: every case, no admin), an analyst of case ACME-12, and jobs of three
    kinds: ACME-12, GLOBEX-3 and no case; one artifact row for each."""
    with JobManager(home, user="admin") as admin:
        admin.add_user("op", "operator-password-1", groups=["operators"])
        admin.add_user("ana", "analyst-password-1", groups=["analysts"])
        admin.add_case("analysts", "ACME-12")
        ids = [admin.submit("sleep", {"tasks": 2}, name=f"job {c}", case=c) for c in ("ACME-12", "GLOBEX-3", None)]
    write_store(home, [("INSERT INTO artifacts (job_id, name, path, media_type, size, created_at)"
                        " VALUES (?, ?, ?, 'text/plain', 1, 0)", (i, f"out-{i}.txt", f"artifacts/{i}/out-{i}.txt"))
                       for i in ids])
    return home


def _attack(template: str, home: Path, tmp_path: Path) -> str:
    return template.format(home=home, tmp=tmp_path)


def _refusals(home: Path) -> pd.DataFrame:
    with JobManager(home, user="admin") as admin:
        log = admin.audit_log(limit=1000)
    return log[(log.action == "sql") & ~log.allowed]


@pytest.mark.parametrize("template", ATTACKS)
def test_attack_is_refused_in_one_line_and_audited_python(people: Path, tmp_path: Path, template: str) -> None:
    query = _attack(template, people, tmp_path)
    with JobManager(people, user="op") as op:
        before = op.sql("SELECT count(*) AS n FROM jobs").n[0]
        with pytest.raises(BadParams) as err:
            op.sql(query)
        message = str(err.value)
        assert "\n" not in message and message
        assert not any(m in message for m in HASH_MARKERS)
        assert op.sql("SELECT count(*) AS n FROM jobs").n[0] == before == 3  # nothing changed
        assert "heartbeat_at" in op.sql("SELECT * FROM agents").columns  # the view is still the view
    assert not (tmp_path / "copied.csv").exists()
    refused = _refusals(people)
    row = refused[refused.target == query]
    assert len(row) == 1 and row.iloc[0].actor == "op" and row.iloc[0].detail == message


@pytest.mark.parametrize("template", [ATTACKS[0], ATTACKS[3], ATTACKS[4], ATTACKS[6], ATTACKS[13], ATTACKS[15]])
def test_attack_is_refused_in_one_line_and_audited_cli(people: Path, tmp_path: Path, template: str) -> None:
    query = _attack(template, people, tmp_path)
    result = CliRunner().invoke(cli, ["--home", str(people), "--user", "op", "sql", query])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output and not any(m in result.output for m in HASH_MARKERS)
    refused = _refusals(people)
    assert (refused[refused.target == query].interface == "cli").all() and len(refused[refused.target == query]) == 1


def test_no_view_holds_a_password_hash(people: Path) -> None:
    with JobManager(people, user="admin") as admin:
        for view in SQL_VIEWS:
            text = admin.sql(f"SELECT * FROM {view}").to_csv()
            assert not any(m in text for m in HASH_MARKERS), view


def test_a_case_scoped_analyst_sees_only_own_case_rows_in_every_view(people: Path) -> None:
    with JobManager(people, user="admin") as admin:
        everything = admin.sql("SELECT id, case_id FROM jobs")
        all_events = admin.sql("SELECT count(*) AS n FROM events").n[0]
    visible = set(everything[everything.case_id.isna() | (everything.case_id == "ACME-12")].id)
    assert len(visible) == 2 and len(everything) == 3
    with JobManager(people, user="ana") as ana:
        assert set(ana.sql("SELECT id FROM jobs").id) == visible
        assert set(ana.sql("SELECT case_id FROM jobs").case_id.dropna()) == {"ACME-12"}
        for view in ("tasks", "events", "artifacts"):
            got = set(ana.sql(f"SELECT DISTINCT job_id FROM {view}").job_id)
            assert got == visible, view
        assert ana.sql("SELECT count(*) AS n FROM events").n[0] < all_events
        assert ana.sql("SELECT * FROM agents").empty  # analysts hold no view_agents
        # a join, a CTE and a subquery see the same scoped rows
        joined = ana.sql("WITH t AS (SELECT job_id FROM tasks) SELECT DISTINCT j.case_id FROM jobs j"
                         " JOIN t ON t.job_id = j.id WHERE j.id IN (SELECT job_id FROM artifacts)")
        assert set(joined.case_id.dropna()) == {"ACME-12"}
        assert set(ana.history().id) == visible
        assert set(ana.stats()["summary"].type) <= {"sleep"}  # nothing finished yet, and no error
        # the scope is the rows, not a filter the query could lift
        assert ana.sql("SELECT count(*) AS n FROM jobs WHERE case_id = 'GLOBEX-3' OR true").n[0] == 2


def test_stats_count_only_the_analysts_cases(people: Path) -> None:
    now = 1_700_000_000.0
    write_store(people, [
        ("UPDATE jobs SET state = 'completed', started_at = ?, finished_at = ? WHERE case_id = 'GLOBEX-3'",
         (now, now + 5)),
        ("UPDATE jobs SET type = 'print_to_pdf', state = 'failed', started_at = ?, finished_at = ?"
         " WHERE case_id = 'ACME-12'", (now, now + 7)),
        ("INSERT INTO events (at, job_id, kind, to_state) SELECT ?, id, 'job', state FROM jobs", (now + 8,)),
    ])
    with JobManager(people, user="admin") as admin:
        assert admin.stats()["summary"].type.tolist() == ["print_to_pdf", "sleep"]
    with JobManager(people, user="ana") as ana:
        summary = ana.stats()["summary"]
        assert summary.type.tolist() == ["print_to_pdf"] and summary.finished.tolist() == [1]


def test_sql_views_in_the_readme_are_the_views_that_exist() -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"analysts get views ((?:`\w+`(?:, |,\s*\n| and )?)+)", text)
    assert match, "the README's history section names the views as: analysts get views `a`, `b`, ..."
    assert re.findall(r"`(\w+)`", match.group(1)) == list(SQL_VIEWS)


def test_export_report_of_an_analyst_carries_only_their_rows_and_no_hash(people: Path, start_agent) -> None:
    start_agent("a1")
    with JobManager(people, user="ana") as ana:
        good = ana.submit("export_report", {"query": "SELECT j.id, j.case_id, j.owner, t.seq FROM jobs j"
                                                     " JOIN tasks t ON t.job_id = j.id ORDER BY j.id, t.seq"})
        bad = ana.submit("export_report", {"query": ATTACKS[0], "name": "hashes"})
        assert ana.wait(good, timeout=60).state == "completed", ana.job(good).tasks[0].error
        text = ana.open_artifact(good, "report.csv").read_text()
        df = pd.read_csv(ana.open_artifact(good, "report.csv"))
        assert set(df.case_id.dropna()) == {"ACME-12"} and (df.case_id == "ACME-12").sum() == 2
        assert df.case_id.isna().any() and set(df.owner) <= {"admin", "ana"}
        assert not any(m in text for m in HASH_MARKERS)
        job = ana.wait(bad, timeout=60)
        assert job.state == "failed" and "sqlite_query() is refused" in job.tasks[0].error
        assert ana.artifacts(bad).empty
    refused = _refusals(people)
    assert ((refused.actor == "ana") & (refused.interface == "agent") & (refused.target == ATTACKS[0])).any()


def test_export_report_from_a_source_file_runs_in_the_sandbox(people: Path, start_agent, tmp_path: Path) -> None:
    source = tmp_path / "numbers.csv"
    source.write_text("n\n1\n2\n3\n")
    start_agent("a1")
    with JobManager(people, user="op") as op:
        ok = op.submit("export_report", {"query": "SELECT sum(n) AS total FROM source", "source": str(source)})
        leak = op.submit("export_report", {"query": "SELECT * FROM source, read_text('/etc/hostname')",
                                           "source": str(source)})
        assert op.wait(ok, timeout=60).state == "completed", op.job(ok).tasks[0].error
        assert pd.read_csv(op.open_artifact(ok, "report.csv")).total.tolist() == [6]
        job = op.wait(leak, timeout=60)
        assert job.state == "failed" and "read_text() is refused" in job.tasks[0].error


PRUNING = [
    "SELECT j.id, t.seq, t.state FROM jobs j JOIN tasks t ON t.job_id = j.id ORDER BY 1, 2",
    "SELECT count(*) AS n FROM jobs NATURAL JOIN tasks",
    "SELECT count(*) AS n FROM jobs JOIN tasks USING (id)",
    "SELECT to_json(j) AS row FROM jobs j ORDER BY j.id",
    "WITH x AS (SELECT id, state FROM jobs) SELECT x FROM x ORDER BY x.id",
    "SELECT COLUMNS('^s.*') FROM jobs ORDER BY id",
    "SELECT * EXCLUDE (params) FROM jobs ORDER BY id",
    "SELECT owner, count(*) AS n FROM jobs GROUP BY ALL ORDER BY ALL",
    "SELECT (SELECT count(*) FROM tasks) AS n, (SELECT max(seq) FROM tasks t WHERE t.job_id = jobs.id) AS m"
    " FROM jobs ORDER BY id",
    "SELECT * FROM (SELECT job_id, count(*) AS n FROM tasks GROUP BY job_id) s JOIN jobs ON jobs.id = s.job_id"
    " ORDER BY s.job_id",
    "SELECT r.range AS i FROM range(3) r",
]


@pytest.mark.parametrize("query", PRUNING)
def test_the_sandbox_answers_as_the_store_attached_connection_did(people: Path, query: str) -> None:
    """Only the columns a query names are copied into the sandbox: the answers do not change."""
    from jobmanager.history.history import History, store_file
    from jobmanager.home import Home

    with History(store_file(Home.open(people))) as h:
        before = h.con.execute(query).df()  # the old way: the connection with the store attached
        after = h.sql(query)  # the sandbox, everything in scope
    pd.testing.assert_frame_equal(after, before)
