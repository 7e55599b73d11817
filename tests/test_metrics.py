"""``jobmanager metrics``: the real command serving Prometheus text, scraped while real agents run jobs."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from jobmanager import JobManager
from jobmanager.cli.main import cli
from jobmanager.metrics import GAP_GRACE_S, EventTail

from .conftest import agent_env, wait_for
from .test_store_contract import agent_info, make_job, store  # noqa: F401  (store: the contract's fixture)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples:
    """Every sample of one scrape, parsed by prometheus-client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def metrics(home: Path, tmp_path: Path) -> Iterator[Callable[[], int]]:
    """Start ``jobmanager metrics`` on a free port; returns the port once it answers."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> int:
        port = free_port()
        log = (tmp_path / f"metrics-{port}.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "jobmanager", "--home", str(home), "--user", "tester",
                                 "metrics", "--port", str(port)], env=agent_env(), stdout=log,
                                stderr=subprocess.STDOUT)
        procs.append(proc)

        def answers() -> bool:
            assert proc.poll() is None, (tmp_path / f"metrics-{port}.log").read_text()
            try:
                scrape(port)
            except OSError:
                return False
            return True

        wait_for(answers, what="metrics endpoint")
        return port

    yield start
    for proc in procs:
        proc.terminate()
        assert proc.wait(15) == 0  # SIGTERM stops it cleanly


def test_counters_depth_and_agents_follow_real_jobs(jm: JobManager, metrics, start_agent) -> None:
    old = jm.submit("sleep", {"tasks": 1})  # submitted before the endpoint starts: its run is counted later
    port = metrics()
    first = scrape(port)
    assert value(first, "jobmanager_store_up") == 1
    assert value(first, "jobmanager_queue_depth", queue="default", type="sleep") == 1  # gauges see it
    assert value(first, "jobmanager_agents", state="online") == 0
    assert value(first, "jobmanager_tasks_started_total", type="sleep", queue="default") is None

    job = jm.submit("sleep", {"tasks": 2, "fail_tasks": [2]})
    parked = jm.submit("sleep", {"tasks": 3}, queue="reports")
    s = scrape(port)
    assert value(s, "jobmanager_queue_depth", queue="default", type="sleep") == 3
    assert value(s, "jobmanager_queue_depth", queue="reports", type="sleep") == 3
    assert value(s, "jobmanager_queue_oldest_wait_seconds", queue="default", type="sleep") >= 0
    jm.cancel(parked)  # (whether an agent serves "reports" is not this test's business)

    start_agent("a1", 1)
    assert jm.wait(job, timeout=30).state == "completed_with_errors"
    assert jm.wait(old, timeout=30).state == "completed"

    def counted() -> Samples | None:
        s = scrape(port)
        done = value(s, "jobmanager_tasks_succeeded_total", type="sleep", queue="default")
        return s if done == 2 else None

    s = wait_for(counted, what="the succeeded counter")
    assert isinstance(s, dict)
    assert value(s, "jobmanager_tasks_started_total", type="sleep", queue="default") == 3
    assert value(s, "jobmanager_tasks_failed_total", type="sleep", queue="default") == 1
    assert value(s, "jobmanager_tasks_cancelled_total", type="sleep", queue="reports") == 3
    assert value(s, "jobmanager_task_duration_seconds_count", type="sleep", queue="default") == 3
    assert value(s, "jobmanager_task_duration_seconds_bucket", type="sleep", queue="default", le="+Inf") == 3
    assert value(s, "jobmanager_queue_depth", queue="default", type="sleep") == 0  # emptied: 0, not missing
    assert value(s, "jobmanager_queue_depth", queue="reports", type="sleep") == 0
    assert value(s, "jobmanager_agents", state="online") == 1
    assert value(s, "jobmanager_tasks_running", agent="a1") == 0

    long = jm.submit("sleep", {"tasks": 1, "seconds": 60, "steps": 600})
    wait_for(lambda: value(scrape(port), "jobmanager_tasks_running", agent="a1") == 1, what="a1 running 1")
    jm.cancel(long)
    wait_for(lambda: value(scrape(port), "jobmanager_tasks_running", agent="a1") == 0, what="a1 running 0")
    assert value(scrape(port), "jobmanager_tasks_cancelled_total", type="sleep", queue="default") == 1


def test_a_killed_agent_shows_as_lost(jm: JobManager, metrics, start_agent) -> None:
    port = metrics()
    victim = start_agent("victim", 1)
    start_agent("rescuer", 1)
    s = scrape(port)
    assert value(s, "jobmanager_agents", state="online") == 2
    assert value(s, "jobmanager_agent_heartbeat_age_seconds", agent="victim") is not None
    victim.kill()

    def lost() -> bool:
        s = scrape(port)
        return (value(s, "jobmanager_agents_lost_total") == 1 and value(s, "jobmanager_agents", state="lost") == 1
                and value(s, "jobmanager_agents", state="online") == 1)

    wait_for(lost, what="victim counted lost")
    s = scrape(port)
    assert value(s, "jobmanager_agent_heartbeat_age_seconds", agent="victim") is None


def test_the_agent_serves_metrics_too(jm: JobManager, start_agent) -> None:
    port = free_port()
    start_agent("a1", 1, "--metrics-port", str(port))
    job = jm.submit("sleep", {"tasks": 2})
    assert jm.wait(job, timeout=30).state == "completed"

    def counted() -> bool:
        s = scrape(port)
        return value(s, "jobmanager_tasks_succeeded_total", type="sleep", queue="default") == 2
    wait_for(counted, what="the agent's succeeded counter")
    s = scrape(port)
    assert value(s, "jobmanager_agents", state="online") == 1
    assert (value(s, "process_resident_memory_bytes") or 0) > 0  # the agent's own process


@pytest.mark.parametrize("args,message", [
    (["--port", "0"], "between 1 and 65535"),
    (["--port", "70000"], "between 1 and 65535"),
    (["--port", "x"], "whole number"),
    (["--port", "9999", "--host", "example.org"], "is not an IP address"),
    (["--port", "9999", "--host", "127.0.0.1;rm"], "is not an IP address"),
])
def test_bad_input_is_one_line_exit_2(home: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "metrics", *args],
                                catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len([ln for ln in result.output.splitlines() if ln.startswith("Error")]) == 1
    assert "Traceback" not in result.output


def test_a_port_in_use_and_a_user_without_view_agents_are_refused(jm: JobManager, home: Path) -> None:
    jm.add_user("ana", "ana-password-1", groups=["analysts"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "metrics", "--port", str(port)])
        assert result.exit_code == 2 and "cannot listen on 127.0.0.1 port" in result.output, result.output
    result = CliRunner().invoke(cli, ["--home", str(home), "--user", "ana", "metrics", "--port", str(free_port())])
    assert result.exit_code == 2 and "needs the view_agents permission" in result.output, result.output


def test_store_contract_metrics_reads(store) -> None:  # noqa: F811  (both backends)
    """``last_event_id``, ``events_after`` (with the job's type and queue) and ``metrics_gauges``."""
    start = store.last_event_id()
    job_id, dispatches = make_job(store, 3)
    store.register_agent(agent_info("a1"))
    d = dispatches[0]
    store.claim_task(d.task_id, d.dispatch, "a1")
    store.finish_task(d.task_id, "a1", "failed", error="boom")
    store.claim_task(dispatches[1].task_id, dispatches[1].dispatch, "a1")
    events = store.events_after(start, 100)
    assert [e["id"] for e in events] == sorted(e["id"] for e in events) and events[0]["id"] > start
    task_events = [(e["from_state"], e["to_state"], e["type"], e["queue"]) for e in events if e["kind"] == "task"]
    assert task_events == [("queued", "running", "sleep", "default"), ("running", "failed", "sleep", "default"),
                           ("queued", "running", "sleep", "default")]
    assert all(e["started_at"] is not None for e in events if e["kind"] == "task")
    assert [e["id"] for e in store.events_after(events[0]["id"], 2)] == [e["id"] for e in events[1:3]]
    assert store.last_event_id() == events[-1]["id"]
    g = store.metrics_gauges()
    assert [(r["queue"], r["type"], r["n"]) for r in g["depth"]] == [("default", "sleep", 1)]
    assert g["depth"][0]["oldest"] <= store.get_job(job_id).created_at + 1
    assert [(r["agent"], r["n"]) for r in g["running"]] == [("a1", 1)]
    assert [(a["name"], a["state"]) for a in g["agents"]] == [("a1", "online")]


def test_the_tail_reads_events_committed_out_of_id_order_once(home: Path) -> None:
    """PostgreSQL hands out event ids at insert and commits in any order: an event with a smaller id
    committed after a larger one is still counted, once; a gap a rolled-back transaction left is passed
    after the grace period."""
    from jobmanager.home import Home
    from jobmanager.store import open_store

    url = Home.open(home).store_url
    if not url.startswith(("postgresql://", "postgres://")):
        pytest.skip("SQLite's single writer commits events in id order")
    import psycopg

    insert = "INSERT INTO events (at, kind, message) VALUES (0, 'test', 'x') RETURNING id"
    pg_store = open_store(Home.open(home))
    try:
        tail = EventTail(pg_store, pg_store.last_event_id())
        with psycopg.connect(url) as slow, psycopg.connect(url, autocommit=True) as fast:
            early = slow.execute(insert).fetchone()[0]  # id taken, not committed yet
            late = fast.execute(insert).fetchone()[0]
            assert late > early
            assert [e["id"] for e in tail.poll(now=0)] == [late]
            slow.commit()
            assert [e["id"] for e in tail.poll(now=1)] == [early]
            assert tail.poll(now=2) == []
            gone = slow.execute(insert).fetchone()[0]
            slow.rollback()
            after = fast.execute(insert).fetchone()[0]
            assert [e["id"] for e in tail.poll(now=3)] == [after] and tail.low < gone
            assert tail.poll(now=3 + GAP_GRACE_S + 1) == [] and tail.low == after
    finally:
        pg_store.close()
