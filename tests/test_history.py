"""The history layer: DuckDB views over the live store, the SQLite grid, stats, SQL, exports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from jobmanager import BadParams, HomeError, JobManager, PermissionDenied
from jobmanager.cli.main import cli
from jobmanager.history import demodata
from jobmanager.history.grid import GRID_COLUMNS
from jobmanager.history.history import History, find_extension

from .backends import write_store

HOSTILE = "'; drop table jobs; --"
H = 3600.0
BASE = (1_700_000_000.0 // 86400) * 86400  # a midnight UTC, so hour and day buckets are known


@pytest.fixture
def hjm(home: Path) -> Iterator[JobManager]:
    manager = JobManager(home, user="tester")
    yield manager
    manager.close()


@pytest.fixture
def demo(hjm: JobManager) -> JobManager:
    demodata.generate(hjm.home, jobs=400, days=7, seed=3)
    return hjm


def _add_job(home: Path, job_id: int, type_: str, state: str, created: float, started: float | None,
             finished: float | None, tasks: list[tuple[str | None, str, float | None, float | None]],
             *, owner: str = "alice", case: str | None = None, name: str = "job", error: str | None = None) -> None:
    """One job with tasks (agent, state, started, finished), counters derived, plus its events."""
    count = {s: sum(t[1] == s for t in tasks) for s in ("succeeded", "failed", "cancelled")}
    writes: list[tuple[str, tuple]] = [(
            "INSERT INTO jobs (id, type, name, params, owner, case_id, state, tasks_total, tasks_succeeded,"
            " tasks_failed, tasks_cancelled, error, created_at, started_at, finished_at, updated_at)"
            " VALUES (?,?,?,'{}',?,?,?,?,?,?,?,?,?,?,?,?)",
            (job_id, type_, name, owner, case, state, len(tasks), count["succeeded"], count["failed"],
             count["cancelled"], error, created, started, finished, finished or created))]
    for seq, (agent, tstate, tstart, tend) in enumerate(tasks, 1):
        writes.append((
                "INSERT INTO tasks (job_id, seq, name, params, state, attempts, agent, queued_at, started_at,"
                " finished_at) VALUES (?,?,?,'{}',?,1,?,?,?,?)",
                (job_id, seq, f"task {seq}", tstate, agent, created, tstart, tend)))
    writes.append(("INSERT INTO events (at, job_id, kind, to_state) VALUES (?,?,'job',?)", (created, job_id, state)))
    write_store(home, writes)


@pytest.fixture
def known(hjm: JobManager) -> JobManager:
    """A small history with known figures."""
    db = hjm.home.path
    # sleep: waits 10 and 30, durations 20 and 60; one of two failed
    _add_job(db, 1, "sleep", "completed", BASE + 0, BASE + 10, BASE + 30,
             [("a1", "succeeded", BASE + 10, BASE + 20), ("a1", "succeeded", BASE + 20, BASE + 30)], name="night run")
    _add_job(db, 2, "sleep", "failed", BASE + H, BASE + H + 30, BASE + H + 90,
             [("a2", "failed", BASE + H + 30, BASE + H + 90)], owner="bob", case="C1", error="1 of 1 tasks failed")
    # print_to_pdf: wait 2, duration 100, one task per agent, the a2 one failed
    _add_job(db, 3, "print_to_pdf", "completed_with_errors", BASE + 86400, BASE + 86402, BASE + 86502,
             [("a1", "succeeded", BASE + 86402, BASE + 86452), ("a2", "failed", BASE + 86402, BASE + 86502)],
             case="C2", name="Print letters", error="1 of 2 tasks failed (first: task 2: TimeoutError)")
    _add_job(db, 4, "sleep", "running", BASE + 2 * 86400, BASE + 2 * 86400 + 1, None,
             [("a1", "succeeded", BASE + 2 * 86400 + 1, BASE + 2 * 86400 + 5), ("a2", "running", BASE + 2 * 86400 + 1,
                                                                                None)])
    return hjm


# -- opening DuckDB: no downloads, clear errors ---------------------------------------------------------------
@pytest.mark.sqlite_only
def test_extension_is_loaded_by_path_without_network(home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-extensions"
    empty.mkdir()
    with History(home / "store.db", duckdb_config={
        "extension_directory": str(empty), "custom_extension_repository": "http://127.0.0.1:9/nowhere",
    }) as h:
        settings = h.con.execute(
            "SELECT current_setting('autoinstall_known_extensions'), current_setting('autoload_known_extensions')"
        ).fetchone()
        assert settings == (False, False)
        assert h.sql("SELECT count(*) AS n FROM jobs").n[0] == 0  # the scanner is loaded and attached
    assert list(empty.iterdir()) == []  # nothing installed or downloaded there
    assert find_extension().is_file()


@pytest.mark.sqlite_only
def test_missing_extension_is_a_clear_home_error(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HomeError, match="sqlite extension is missing"):
        History(home / "store.db", extension=tmp_path / "nope.duckdb_extension")
    import jobmanager.history.history as history

    monkeypatch.setattr(history.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(HomeError, match="pip install duckdb-extension-sqlite-scanner=="):
        find_extension()
    monkeypatch.setenv("JOBMANAGER_SQLITE_EXTENSION_PACKAGE", "no_such_package")  # seen by the history process
    jm = JobManager(home, user="tester")
    with pytest.raises(HomeError, match="not installed"):
        jm.sql("SELECT 1")
    jm.close()


def test_missing_store_is_a_home_error(tmp_path: Path) -> None:
    with pytest.raises(HomeError, match="no job store"):
        History(tmp_path / "absent.db")


# -- views and currency ------------------------------------------------------------------------------------
def test_views_have_readable_columns(known: JobManager) -> None:
    jobs = known.sql("SELECT * FROM jobs ORDER BY id")
    assert list(jobs.id) == [1, 2, 3, 4]
    assert str(jobs.created_at.dtype).startswith("datetime64")
    assert jobs.created_at[0] == pd.Timestamp(BASE, unit="s")
    assert list(jobs.wait_s[:3]) == [10, 30, 2] and list(jobs.duration_s[:3]) == [20, 60, 100]
    assert pd.isna(jobs.duration_s[3]) and jobs.state[3] == "running"
    assert {"case_id", "owner", "error", "tasks_failed"} <= set(jobs.columns)
    tasks = known.sql("SELECT * FROM tasks WHERE job_id = 1 ORDER BY seq")
    assert list(tasks.duration_s) == [10, 10] and list(tasks.wait_s) == [10, 20] and list(tasks.agent) == ["a1"] * 2
    for view in ("events", "agents", "artifacts"):
        known.sql(f"SELECT * FROM {view}")
    assert known.sql("SELECT count(*) AS n FROM events").n[0] == 4


def test_history_is_current(hjm: JobManager) -> None:
    job = hjm.submit("sleep", {"tasks": 2}, name="fresh")
    assert hjm.sql("SELECT state FROM jobs WHERE id = ?", [job]).state[0] == "queued"
    before = hjm.stats()["summary"]
    hjm.cancel(job)  # through the store, from this process
    assert hjm.sql("SELECT state FROM jobs WHERE id = ?", [job]).state[0] == "cancelled"
    assert hjm.history(state="cancelled").id.tolist() == [job]
    after = hjm.stats()["summary"]
    assert before.empty and after.set_index("type").loc["sleep", "cancelled"] == 1
    write_store(hjm.home.path, [("UPDATE jobs SET name = 'renamed' WHERE id = ?", (job,))])  # another writer
    assert hjm.sql("SELECT name FROM jobs WHERE id = ?", [job]).name[0] == "renamed"
    assert hjm.grid(search="renamed")[1] == 1


# -- grid ---------------------------------------------------------------------------------------------------
def _all(jm: JobManager) -> pd.DataFrame:
    return jm.sql("SELECT * FROM jobs")


def test_grid_tabs_paging_and_total(demo: JobManager) -> None:
    everything = _all(demo)
    done = everything[everything.state.isin(["completed", "completed_with_errors", "failed", "cancelled"])]
    page1, total = demo.grid("completed", page=1, page_size=50)
    page2, total2 = demo.grid("completed", page=2, page_size=50)
    assert total == total2 == len(done)
    assert list(page1.columns) == list(GRID_COLUMNS)
    expected = done.sort_values(["created_at", "id"], ascending=False).id.tolist()
    assert page1.id.tolist() + page2.id.tolist() == expected[:100]
    last, _ = demo.grid("completed", page=(total // 50) + 1, page_size=50)
    assert len(last) == total % 50 or (total % 50 == 0 and last.empty)
    running, n_running = demo.grid("in-progress", page_size=1000)
    assert n_running == len(everything) - len(done) > 0
    assert set(running.state) <= {"queued", "running", "paused"}
    by_id, _ = demo.grid("completed", sort="id", desc=False, page_size=5)
    assert by_id.id.tolist() == sorted(done.id)[:5]
    by_duration, _ = demo.grid("completed", sort="duration_s", page_size=3)
    assert by_duration.duration_s.tolist() == sorted(done.duration_s, reverse=True)[:3]


@pytest.mark.parametrize("key", ["state", "type", "case", "owner"])
def test_grid_filters_by_column(demo: JobManager, key: str) -> None:
    everything = _all(demo)
    done = everything[everything.state.isin(["completed", "completed_with_errors", "failed", "cancelled"])]
    column = {"case": "case_id"}.get(key, key)
    value = done[column].dropna().value_counts().index[1]
    rows, total = demo.grid("completed", page_size=10_000, **{key: value})
    assert total == (done[column] == value).sum() == len(rows) > 0
    assert set(rows["case" if key == "case" else key]) == {value}


def test_grid_filter_by_agent(demo: JobManager) -> None:
    tasks = demo.sql("SELECT DISTINCT t.job_id FROM tasks t JOIN jobs j ON j.id = t.job_id"
                     " WHERE t.agent = 'agent-win-01' AND j.state IN ('completed', 'completed_with_errors',"
                     " 'failed', 'cancelled')")
    rows, total = demo.grid("completed", agent="agent-win-01", page_size=10_000)
    assert total == len(tasks) > 0 and set(rows.id) == set(tasks.job_id)


def test_grid_time_range_and_search(demo: JobManager) -> None:
    everything = _all(demo)
    done = everything[everything.state.isin(["completed", "completed_with_errors", "failed", "cancelled"])]
    created = done.created_at.sort_values()
    mid = created.iloc[len(done) // 2 - 1] + (created.iloc[len(done) // 2] - created.iloc[len(done) // 2 - 1]) / 2
    _, since_total = demo.grid("completed", since=mid.isoformat())
    _, until_total = demo.grid("completed", until=mid.isoformat())
    assert since_total == (done.created_at >= mid).sum() and since_total + until_total == len(done)
    finished = done.finished_at.sort_values()
    fmid = finished.iloc[len(done) // 3 - 1] + (finished.iloc[len(done) // 3] - finished.iloc[len(done) // 3 - 1]) / 2
    _, f_total = demo.grid("completed", since=fmid.timestamp(), time_field="finished")
    assert f_total == (done.finished_at >= fmid).sum()
    rows, total = demo.grid("completed", search="LETTERS", page_size=10_000)
    assert total == done.name.str.contains("letters", case=False).sum() > 0
    _, err_total = demo.grid("completed", search="timeouterror")
    assert err_total == done.error.fillna("").str.contains("TimeoutError").sum() > 0
    with pytest.raises(BadParams, match="not a time"):
        demo.grid(since="yesterday-ish")
    with pytest.raises(BadParams, match="time_field"):
        demo.grid(since=0, time_field="updated")


def test_hostile_values_match_nothing(demo: JobManager) -> None:
    for key in ("type", "case", "owner", "agent", "search"):
        rows, total = demo.grid("completed", **{key: HOSTILE})
        assert total == 0 and rows.empty
        assert demo.history(**{key: HOSTILE}).empty
    assert demo.grid("completed", search="%")[1] == 0 and demo.grid("completed", search="_")[1] == 0
    assert demo.sql("SELECT count(*) AS n FROM jobs").n[0] == 400  # the table is still there


def test_sort_allow_list_and_bad_params(demo: JobManager) -> None:
    for sort in ("name; DROP TABLE jobs", "params", "id DESC", "1"):
        with pytest.raises(BadParams, match="cannot sort by"):
            demo.grid(sort=sort)
    with pytest.raises(BadParams, match="unknown state"):
        demo.grid(state=HOSTILE)
    with pytest.raises(BadParams, match="unknown tab"):
        demo.grid(HOSTILE)
    with pytest.raises(BadParams, match="unknown filter"):
        demo.grid(colour="red")
    with pytest.raises(BadParams, match="page"):
        demo.grid(page=0)
    with pytest.raises(BadParams, match="page_size"):
        demo.grid(page_size=10**6)
    # a state outside the tab: nothing, not an error
    assert demo.grid("in-progress", state="completed")[1] == 0


# -- SQL ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("statement", [
    "INSERT INTO jobs (id) VALUES (1)", "UPDATE store.jobs SET name = 'x'", "DELETE FROM store.jobs",
    "CREATE TABLE t AS SELECT 1", "DROP VIEW jobs", "ATTACH 'other.db' AS o", "COPY jobs TO 'out.csv'",
    "INSTALL httpfs", "LOAD httpfs", "PRAGMA enable_profiling", "SET threads = 1", "SELECT 1; DROP VIEW jobs",
    "CALL pragma_version()", "EXPORT DATABASE 'x'", "DETACH store",
])
def test_writing_statements_are_refused(known: JobManager, statement: str) -> None:
    with pytest.raises(BadParams, match="read-only|exactly one"):
        known.sql(statement)
    assert known.sql("SELECT count(*) AS n FROM jobs").n[0] == 4


def test_sql_params_and_errors(known: JobManager) -> None:
    assert known.sql("SELECT id FROM jobs WHERE owner = ? ORDER BY id", ["alice"]).id.tolist() == [1, 3, 4]
    assert known.sql("SELECT id FROM jobs WHERE owner = $o", {"o": HOSTILE}).empty
    with pytest.raises(BadParams, match="SQL error"):
        known.sql("SELECT nope FROM jobs")
    with pytest.raises(BadParams, match="SQL error"):
        known.sql("SELEC 1")
    with pytest.raises(BadParams, match="give a SQL query"):
        known.sql("  ")
    with pytest.raises(BadParams, match="disabled by configuration|reads only the views"):  # no files via SQL
        known.sql("SELECT * FROM read_text(?)", [str(known.home.path / "jobmanager.toml")])


# -- stats ----------------------------------------------------------------------------------------------------
def test_stats_by_type(known: JobManager) -> None:
    out = known.stats(by="type", period="day")
    s = out["summary"].set_index("type")
    assert list(s.index) == ["print_to_pdf", "sleep"]  # the running job is not finished
    assert s.loc["sleep", "finished"] == 2 and s.loc["sleep", "failed"] == 1 and s.loc["sleep", "failure_rate"] == 0.5
    assert s.loc["sleep", "p50_s"] == 20 and s.loc["sleep", "wait_p50_s"] == 10  # lower of (20, 60) and (10, 30)
    assert s.loc["print_to_pdf", "p95_s"] == 100 and s.loc["print_to_pdf", "failure_rate"] == 1.0
    t = out["throughput"]
    assert list(t.columns) == ["period", "type", "finished", "failed", "failure_rate", "wait_mean_s"]
    assert t.period.tolist() == [pd.Timestamp(BASE, unit="s")] * 1 + [pd.Timestamp(BASE + 86400, unit="s")]
    assert t.finished.tolist() == [2, 1] and t.wait_mean_s.tolist() == [20, 2]
    hourly = known.stats(by="type", period="hour")["throughput"]
    assert hourly.period.tolist() == [pd.Timestamp(BASE, unit="s"), pd.Timestamp(BASE + H, unit="s"),
                                      pd.Timestamp(BASE + 86400, unit="s")]
    assert known.stats(since=BASE + 86400)["summary"].type.tolist() == ["print_to_pdf"]


def test_stats_by_agent_include_running_jobs(known: JobManager) -> None:
    s = known.stats(by=("agent",))["summary"].set_index("agent")
    assert s.loc["a1", "finished"] == 4 and s.loc["a1", "failed"] == 0  # 2 + 1 + the done task of running job 4
    assert s.loc["a2", "finished"] == 2 and s.loc["a2", "failure_rate"] == 1.0
    assert s.loc["a1", "p50_s"] == 10 and s.loc["a2", "p95_s"] == 60  # lower of (4, 10, 10, 50); (60, 100)
    with pytest.raises(BadParams, match="choose 'type' or 'agent'"):
        known.stats(by="owner")
    with pytest.raises(BadParams, match="period"):
        known.stats(period="week")


def test_stats_follow_retries_of_finished_jobs(known: JobManager) -> None:
    assert known.stats()["summary"].set_index("type").loc["sleep", "finished"] == 2
    write_store(known.home.path, [  # job 2 is retried: back in progress, so out of the finished figures
        ("UPDATE jobs SET state = 'queued', finished_at = NULL WHERE id = 2", ()),
        ("INSERT INTO events (at, job_id, kind, to_state) VALUES (0, 2, 'job', 'queued')", ()),
    ])
    assert known.stats()["summary"].set_index("type").loc["sleep", "finished"] == 1


# -- exports ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt,suffix,reader", [
    ("csv", "csv", pd.read_csv), ("parquet", "parquet", pd.read_parquet), ("excel", "xlsx", pd.read_excel),
])
def test_exports_read_back(demo: JobManager, tmp_path: Path, fmt: str, suffix: str, reader) -> None:
    path = demo.export(tmp_path / f"jobs.{suffix}", fmt, tab="completed", type="sleep")
    back = reader(path)
    grid, total = demo.grid("completed", type="sleep", page_size=10_000)
    assert list(back.columns) == list(GRID_COLUMNS) and len(back) == total > 0
    assert back.id.tolist() == grid.id.tolist()
    assert (pd.to_datetime(back.created_at) - grid.created_at).abs().max() < pd.Timedelta("1ms")


def test_export_errors(demo: JobManager, tmp_path: Path) -> None:
    with pytest.raises(BadParams, match="unknown export format"):
        demo.export(tmp_path / "x.json", "json")
    with pytest.raises(BadParams, match="does not exist"):
        demo.export(tmp_path / "missing" / "x.csv")


# -- permissions -----------------------------------------------------------------------------------------------
def test_case_scoped_user_sees_only_their_jobs(known: JobManager) -> None:
    admin = JobManager(known.home, user="admin")
    admin.add_group("c1")
    admin.grant("c1", "view_all_jobs")
    admin.add_case("c1", "C1")
    admin.add_user("ana", "password-123", groups=["c1"])
    ana = JobManager(known.home, user="ana")
    assert sorted(ana.history().id) == [1, 2, 4]  # C1 and the jobs without a case, not C2
    assert sorted(ana.grid("completed")[0].id) == [1, 2]
    # stats and SQL count only what ana may see: no job of C2, no agents (no view_agents)
    assert ana.stats()["summary"].type.tolist() == ["sleep"]
    assert ana.stats(by="agent")["summary"].set_index("agent").finished.to_dict() == {"a1": 3, "a2": 1}
    assert sorted(ana.sql("SELECT id FROM jobs").id) == [1, 2, 4]
    assert set(ana.sql("SELECT job_id FROM tasks").job_id) == {1, 2, 4}
    assert set(ana.sql("SELECT job_id FROM events").job_id) == {1, 2, 4}
    assert ana.sql("SELECT * FROM agents").empty
    with pytest.raises(PermissionDenied):
        JobManager(known.home, user="nobody").sql("SELECT * FROM jobs")
    ana.close()
    admin.close()


# -- CLI ----------------------------------------------------------------------------------------------------------
def test_cli_demo_data_sql_and_export(home: Path, tmp_path: Path) -> None:
    run = CliRunner().invoke
    base = ["--home", str(home), "--user", "tester"]
    result = run(cli, [*base, "demo-data", "--jobs", "50", "--days", "2"])
    assert result.exit_code == 0, result.output
    assert "50 jobs" in result.output
    result = run(cli, [*base, "sql", "SELECT type, count(*) AS n FROM jobs GROUP BY type ORDER BY type"])
    assert result.exit_code == 0 and "sleep" in result.output
    result = run(cli, [*base, "sql", "DELETE FROM store.jobs"])
    assert result.exit_code == 2 and "read-only" in result.output
    out = tmp_path / "jobs.parquet"
    result = run(cli, [*base, "export", str(out), "--tab", "completed", "--search", "report"])
    assert result.exit_code == 0, result.output
    assert list(pd.read_parquet(out).columns) == list(GRID_COLUMNS)
    result = run(cli, [*base, "export", str(tmp_path / "x.csv"), "--state", "bogus"])
    assert result.exit_code == 2 and "unknown state" in result.output
