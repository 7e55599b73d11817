"""The README's first command runs ``jobmanager demo``: check it end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jobmanager import JobManager


def test_demo_shows_every_state_and_a_lost_agent_then_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "demo-home"
    proc = subprocess.run(
        [sys.executable, "-m", "jobmanager", "--home", str(home), "demo", "--run-for", "12"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "submitted 10 demo jobs" in proc.stdout and "demo stopped" in proc.stdout
    with JobManager(home, user="admin") as jm:
        states = set(jm.jobs(limit=100).state)
        assert {"completed", "completed_with_errors", "failed", "cancelled", "paused"} <= states
        assert states & {"running", "queued"}  # the long archive outlives the demo run
        agents = jm.agents().set_index("name")
        assert agents.loc["agent-flaky", "status"] == "lost"
        assert list(agents.loc[["agent-1", "agent-2"], "status"]) == ["offline", "offline"]
        # nothing is left running after a clean stop: the agents handed their tasks back
        running = [t for j in jm.jobs(tab="in-progress").id for t in jm.job(j).tasks if t.state == "running"]
        assert running == []
