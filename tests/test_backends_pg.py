"""PostgreSQL + Redis specifics: schema checks and migration, races between processes on one
database, the CLI's backend commands, and two agents in different folders sharing one Redis and
one PostgreSQL with one of them killed mid-task.

Skipped unless JOBMANAGER_TEST_PG_URL (and, for the queue, JOBMANAGER_TEST_REDIS_URL) is set.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobmanager import JobManager
from jobmanager.errors import HomeError
from jobmanager.home import CONFIG_NAME, DEFAULT_CONFIG
from jobmanager.models import NewTask
from jobmanager.store.base import SCHEMA_VERSION

from .backends import REDIS_URL, new_pg_schema, new_redis_db
from .conftest import ADMIN_PASSWORD, HEARTBEAT, agent_env, wait_for

pytestmark = pytest.mark.pg


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    return new_pg_schema(request)


def _store(url: str, create: bool = False):
    from jobmanager.store.postgres import PostgresStore

    return PostgresStore(url, create=create)


def _job(store, n: int = 1, retries: int = 0):
    return store.create_job(type="sleep", name="j", params={}, owner="ana", case=None, priority=0,
                            retries=retries, has_finish=False, tasks=[NewTask(f"t{i}") for i in range(n)],
                            actor="ana")


# -- schema ---------------------------------------------------------------------------------------------
def test_missing_store_is_not_created_without_create(pg_url: str) -> None:
    with pytest.raises(HomeError, match="no job store"):
        _store(pg_url)


def test_foreign_schema_refused(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(HomeError, match="not a Job Manager store"):
        _store(pg_url, create=True)


def test_newer_schema_refused_and_older_needs_migrate(pg_url: str) -> None:
    import psycopg

    _store(pg_url, create=True).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(HomeError, match="newer"):
        _store(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(HomeError, match="jobmanager migrate"):
        _store(pg_url)


def test_migrate_creates_and_records_the_version(pg_url: str) -> None:
    from jobmanager.store.postgres import PostgresStore

    store = PostgresStore(pg_url, check=False)
    assert store.migrate() == (0, SCHEMA_VERSION)
    assert store.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert store.schema_version() == SCHEMA_VERSION
    store.close()


def test_unreachable_server_is_a_plain_error() -> None:
    with pytest.raises(HomeError, match="cannot connect to the store postgresql://jm:\\*\\*\\*@127.0.0.1:1/x"):
        _store("postgresql://jm:secret@127.0.0.1:1/x")


# -- races on one database ------------------------------------------------------------------------------
def test_one_claim_wins_among_many_threads(pg_url: str) -> None:
    store = _store(pg_url, create=True)
    _, dispatches = _job(store, 20)
    wins: list[tuple[int, str]] = []
    lock = threading.Lock()

    def claim(agent: str) -> None:
        for d in dispatches:
            if store.claim_task(d.task_id, d.dispatch, agent) is not None:
                with lock:
                    wins.append((d.task_id, agent))

    threads = [threading.Thread(target=claim, args=(f"a{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(t for t, _ in wins) == sorted(d.task_id for d in dispatches)  # each task won exactly once
    store.close()


def test_concurrent_finishes_settle_the_job_once(pg_url: str) -> None:
    store = _store(pg_url, create=True)
    job_id, dispatches = _job(store, 16)
    for i, d in enumerate(dispatches):
        store.claim_task(d.task_id, d.dispatch, f"a{i}")
    outcomes = []

    def finish(i: int, task_id: int) -> None:
        outcomes.append(store.finish_task(task_id, f"a{i}", "succeeded"))

    threads = [threading.Thread(target=finish, args=(i, d.task_id)) for i, d in enumerate(dispatches)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job = store.get_job(job_id)
    assert (job.state, job.tasks_succeeded) == ("completed", 16)
    assert [o.job_state for o in outcomes].count("completed") == 1
    assert [e["to_state"] for e in store.events(job_id) if e["kind"] == "job"] == ["queued", "running", "completed"]
    store.close()


def _race_recover(url: str, name: str, now: float, out: multiprocessing.Queue) -> None:
    out.put(_store(url).recover_lost(name, now=now).lost)


def test_exactly_one_process_recovers_a_lost_agent(pg_url: str) -> None:
    store = _store(pg_url, create=True)
    store.register_agent({"name": "victim", "host": "h", "pid": 4242, "workers": 2, "worker_type": "thread",
                          "version": "t", "interval": 0.1})
    for _ in range(3):
        _, (d,) = _job(store, 1, retries=3)
        store.claim_task(d.task_id, 0, "victim")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    now = time.time() + 5
    procs = [ctx.Process(target=_race_recover, args=(pg_url, f"r{i}", now, out)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    tasks = [t for j in store.list_jobs() for t in store.get_tasks(j.id)]
    assert [t.state for t in tasks] == ["queued"] * 3 and all(t.dispatch == 1 for t in tasks)
    store.close()


def _race_fire(url: str, schedule: dict, out: multiprocessing.Queue) -> None:
    result = _store(url).schedules.fire(schedule, schedule["next_run_at"] + 60, agent="x", tasks=[NewTask("t")])
    out.put(None if result is None else result[0])


def test_a_due_schedule_fires_once_among_processes(pg_url: str) -> None:
    store = _store(pg_url, create=True)
    store.schedules.save({"name": "s", "type": "sleep", "params": {}, "owner": "ana", "case_id": None,
                         "priority": 0, "trigger_kind": "interval", "trigger_value": "60", "timezone": "UTC",
                         "anchor": None, "misfire": "run_once", "enabled": True, "next_run_at": time.time() - 1,
                         "source_kind": "api", "source_ref": None}, actor="ana")
    schedule = store.schedules.get("s")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_race_fire, args=(pg_url, schedule, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert len([r for r in results if r is not None]) == 1
    assert len(store.schedules.runs("s")) == 1 and len(store.list_jobs()) == 1
    store.close()


# -- CLI --------------------------------------------------------------------------------------------------
def _cli(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobmanager", *args], capture_output=True, text=True,
                          cwd=cwd, input=stdin, env=agent_env(), timeout=120)


def test_init_with_urls_doctor_and_migrate(pg_url: str, tmp_path: Path) -> None:
    if not REDIS_URL:
        pytest.skip("JOBMANAGER_TEST_REDIS_URL is not set")
    queue = new_redis_db()
    home = tmp_path / "h"
    r = _cli("--home", str(home), "init", "--store", pg_url, "--queue", queue, "--password-stdin", stdin="pw-123456\n")
    assert r.returncode == 0, r.stderr
    config = (home / CONFIG_NAME).read_text()
    assert f'store = "{pg_url}"' in config and f'queue = "{queue}"' in config
    assert not (home / "store.db").exists()
    r = _cli("--home", str(home), "doctor")
    assert r.returncode == 0 and r.stdout.count("ok") == 2, r.stdout + r.stderr
    r = _cli("--home", str(home), "migrate")
    assert r.returncode == 0 and "already current" in r.stdout
    (home / CONFIG_NAME).write_text(config.replace(queue, "redis://127.0.0.1:1/0"))
    r = _cli("--home", str(home), "doctor")
    assert r.returncode == 2 and "FAIL  queue  cannot reach Redis at redis://127.0.0.1:1/0" in r.stdout


# -- two agents, two folders, one Redis and one PostgreSQL --------------------------------------------------------
def test_two_agents_in_different_folders_share_redis_and_pg_and_survive_a_kill(pg_url: str, tmp_path: Path) -> None:
    if not REDIS_URL:
        pytest.skip("JOBMANAGER_TEST_REDIS_URL is not set")
    queue = new_redis_db()
    config = DEFAULT_CONFIG.replace('store = "sqlite"', f'store = "{pg_url}"').replace(
        'queue = "sqlite"', f'queue = "{queue}"')
    hosts = []
    for name in ("host-a", "host-b"):  # as if on two machines: own folder, own home (logs), same backends
        cwd = tmp_path / name
        (cwd / "home").mkdir(parents=True)
        (cwd / "home" / CONFIG_NAME).write_text(config)
        hosts.append(cwd)
    JobManager.init(hosts[0] / "home", admin_password=ADMIN_PASSWORD).close()
    JobManager.init(hosts[1] / "home", admin_password=ADMIN_PASSWORD).close()  # finds the same store

    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, cwd in zip(("victim", "rescuer"), hosts, strict=True):
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "jobmanager", "--home", "home", "agent", "--name", name, "--workers", "2",
             "--heartbeat", str(HEARTBEAT), "--import", "jm_test_types", "--shutdown-timeout", "5"],
            cwd=cwd, env=agent_env(), stdout=(cwd / "agent.log").open("w"), stderr=subprocess.STDOUT)
    try:
        with JobManager(hosts[0] / "home", user="admin") as jm:
            def online() -> bool:
                df = jm.agents()
                return set(df[df.status.isin(["idle", "busy"])].name) == {"victim", "rescuer"}
            wait_for(online, what="both agents online")
            job_id = jm.submit("sleep", {"tasks": 12, "seconds": 1.0, "steps": 10}, retries=1)

            def victim_busy() -> bool:
                return sum(t.state == "running" and t.agent == "victim" for t in jm.job(job_id).tasks) >= 1
            wait_for(victim_busy, what="victim running a task")
            procs["victim"].kill()  # SIGKILL mid-task: no clean-up runs
            procs["victim"].wait(10)
            job = jm.wait(job_id, timeout=90)
            assert job.state == "completed" and job.tasks_succeeded == 12
            assert jm.agents().set_index("name").loc["victim", "status"] == "lost"
            rescued = [t for t in job.tasks if t.losses == 1]  # run again without spending an attempt
            assert rescued and all(t.agent == "rescuer" and t.attempts == 1 for t in rescued)
            events = jm.events(job_id)
            started = set(events[(events.kind == "task") & (events.to_state == "running")].agent)
            assert started == {"victim", "rescuer"}  # both took work from the one queue
            assert events.message.fillna("").str.contains("agent victim lost").sum() == len(rescued)
            assert jm.queue.size() == 0
        assert (hosts[1] / "home" / "logs" / "agents" / "rescuer.log").is_file()  # logs stay on each host
        assert not (hosts[0] / "home" / "store.db").exists() and not (hosts[0] / "home" / "queue.db").exists()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()


# -- history and grid on PostgreSQL ------------------------------------------------------------------------
def test_duckdb_reads_the_pg_store_offline_and_grid_runs_on_pg(pg_url: str) -> None:
    duckdb = pytest.importorskip("duckdb")
    from jobmanager.history.grid import grid_page
    from jobmanager.history.history import VIEWS
    from jobmanager.history.postgres import attach_postgres

    store = _store(pg_url, create=True)
    job_id, dispatches = _job(store, 2)
    for d in dispatches:
        store.claim_task(d.task_id, d.dispatch, "a1")
        store.finish_task(d.task_id, "a1", "succeeded")
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    attach_postgres(con, pg_url)
    for name, projection in VIEWS.items():  # the SQLite history's views, unchanged
        con.execute(f"CREATE VIEW {name} AS SELECT {projection} FROM store.{name} s")
    assert con.execute("SELECT id, state, tasks_succeeded FROM jobs").fetchall() == [(job_id, "completed", 2)]
    assert con.execute("SELECT count(*) FROM tasks WHERE duration_s >= 0").fetchone() == (2,)
    with pytest.raises(duckdb.Error):
        con.execute("DELETE FROM store.jobs")  # READ_ONLY
    con.close()
    df, total = grid_page(pg_url, tab="completed", filters={"search": "J"})  # case-insensitive like SQLite
    assert total == 1 and list(df.id) == [job_id] and list(df.state) == ["completed"]
    assert grid_page(pg_url, tab="in-progress")[1] == 0
    store.close()
