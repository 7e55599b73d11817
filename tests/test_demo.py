"""The README's first command runs ``jobmanager demo``: check it end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil

from jobmanager import JobManager


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_home(p: psutil.Process, home: Path) -> bool:
    try:
        return str(home) in " ".join(p.cmdline()) or str(home) in p.environ().get("JOBMANAGER_HOME", "")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def test_demo_shows_every_state_and_a_lost_agent_then_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "demo-home"
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "jobmanager", "--home", str(home), "demo", "--run-for", "12", "--port", str(port)],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert "submitted 10 demo jobs" in proc.stdout and "demo stopped" in proc.stdout
    assert f"dashboard: http://127.0.0.1:{port}/" in proc.stdout  # it answered while the demo ran
    assert not any("ipykernel_launcher" in " ".join(p.cmdline()) or "dashboard_voila" in " ".join(p.cmdline())
                   for p in psutil.process_iter() if _in_home(p, home))
    with JobManager(home, user="admin") as jm:
        states = set(jm.jobs(limit=100).state)
        assert {"completed", "completed_with_errors", "failed", "cancelled", "paused"} <= states
        assert states & {"running", "queued"}  # the long archive outlives the demo run
        assert {"Nightly smoke test", "Heartbeat check", "Quarter-end archive"} <= set(jm.schedules().name)
        agents = jm.agents().set_index("name")
        assert agents.loc["agent-flaky", "status"] == "lost"
        assert list(agents.loc[["agent-1", "agent-2"], "status"]) == ["offline", "offline"]
        # nothing is left running after a clean stop: the agents handed their tasks back
        running = [t for j in jm.jobs(tab="in-progress").id for t in jm.job(j).tasks if t.state == "running"]
        assert running == []
        # the demo's documents live in the inputs folder, the only part of the home jobs may read
        pack = jm.jobs(limit=100).set_index("name").loc["Print welcome pack"]
        assert pack.state == "completed" and (home / "inputs" / "demo-documents" / "welcome.txt").is_file()
    # private from the first write: the home, its databases, logs and outputs written by the agents
    assert home.stat().st_mode & 0o777 == 0o700
    for f in ("store.db", "queue.db", "jobmanager.toml"):
        assert (home / f).stat().st_mode & 0o777 == 0o600, f
    written = [p for p in (home / "logs").rglob("*") if p.is_file()] + \
        [p for p in (home / "artifacts").rglob("*") if p.is_file()]
    assert written and all(p.stat().st_mode & 0o077 == 0 for p in written), \
        [(str(p), oct(p.stat().st_mode)) for p in written if p.stat().st_mode & 0o077]
