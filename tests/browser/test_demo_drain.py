"""Stop (drain) of one agent in the Agents tab of a running ``jobmanager demo``: the dashboard asks first,
naming the agent and what it runs now; the agent drains and exits 0; the demo says so and keeps running
(the other agent and the dashboard stay up)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import Page, free_port
from .test_dashboard import eventually, open_tab


def test_drain_one_agent_keeps_the_demo_running(tmp_path: Path, page: Page) -> None:
    port = free_port()
    out = tmp_path / "demo.out"
    proc = subprocess.Popen([sys.executable, "-m", "jobmanager", "--home", str(tmp_path / "demo-home"), "demo",
                             "--port", str(port)], stdout=out.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "Ctrl-C stops" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.5)
        p = page.page
        p.goto(f"http://127.0.0.1:{port}/", timeout=90_000)
        p.get_by_placeholder("username").wait_for(timeout=90_000)
        p.get_by_placeholder("username").fill("operator")
        p.get_by_placeholder("password").fill("operator-demo")
        p.get_by_placeholder("password").press("Enter")
        p.get_by_text("sorted by").first.wait_for(timeout=60_000)
        open_tab(page, "Agents")
        pick = p.locator("select:visible").last  # the Agent dropdown under the table
        pick.select_option("agent-1")
        p.get_by_role("button", name="Stop (drain)").click()
        confirm = p.locator(".jm-confirm:visible")
        confirm.wait_for(timeout=15_000)
        text = confirm.inner_text()
        assert "Stop agent agent-1?" in text
        assert "It is running job" in text or "It is idle" in text  # what it runs now, by name
        assert "agent-1 stopped" not in out.read_text()  # nothing happens before the yes
        p.get_by_role("button", name="Stop agent-1").click()
        eventually(page, lambda: "agent agent-1 stopped" in out.read_text(), "the demo reports the drain",
                   timeout=90)
        assert proc.poll() is None, out.read_text()
        assert "exited unexpectedly" not in out.read_text()
        # the dashboard and the other agent stay: the page is live (no disconnected banner) and agent-2 busy/idle
        eventually(page, lambda: "agent-1" in p.locator(".jm-table:visible").first.inner_text()
                   and "offline" in p.locator(".jm-table:visible").first.inner_text(), "agent-1 offline")
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert not p.locator("#jm-offline").is_visible()
            assert proc.poll() is None
            p.wait_for_timeout(500)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
