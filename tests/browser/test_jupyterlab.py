"""The same app in a real JupyterLab: ``jobmanager lab`` serves a notebook whose cells build
``JobManagerApp(home, user=...)`` (signed in) and ``JobManagerApp(home)`` (the sign-in form), and
Chromium runs them: both render, and the form signs in with Enter.

A real ``jupyter lab`` server (token auth, --no-browser, a free port, a temporary root folder); it is
killed at the end with its kernels.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from jobmanager import JobManager

from .conftest import ARTIFACTS, Page, free_port, http_status
from .test_dashboard import eventually

pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (the notebooks extra)")


def _note_kernel_ready(frame: str | bytes, ready: list[bool]) -> None:
    """Record that the page's kernel answered kernel_info (its connection is usable)."""
    text = frame if isinstance(frame, str) else frame.decode("latin-1")
    if '"msg_type": "kernel_info_reply"' in text:
        ready.append(True)


def _notebook(path: Path) -> None:
    cells = [
        "import os\nfrom jobmanager.widgets import JobManagerApp\n"
        "JobManagerApp(os.environ['JOBMANAGER_HOME'], user='tester')",
        "JobManagerApp(os.environ['JOBMANAGER_HOME'])",
    ]
    nb = {"cells": [{"id": f"cell-{i}", "cell_type": "code", "metadata": {}, "source": src, "outputs": [],
                     "execution_count": None} for i, src in enumerate(cells)],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


def test_app_renders_and_signs_in_inside_jupyterlab(home: Path, tmp_path: Path, page: Page) -> None:
    JobManager(home, user="admin").submit("sleep", {"tasks": 1}, name="seen from JupyterLab")
    root = tmp_path / "lab-root"
    root.mkdir()
    _notebook(root / "app.ipynb")
    token, port = secrets.token_hex(16), free_port()
    env = dict(os.environ, JUPYTER_TOKEN=token, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"))
    log = tmp_path / "lab.log"
    proc = subprocess.Popen([sys.executable, "-m", "jobmanager", "--home", str(home), "lab", "--no-browser",
                             "--port", str(port), "--notebooks", str(root)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if http_status(f"{url}api/status?token={token}") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"JupyterLab did not answer:\n{log.read_text()}"
            time.sleep(0.2)
        assert http_status(f"{url}api/status") == 403  # token auth is on
        p = page.page
        p.set_viewport_size({"width": 1440, "height": 900})
        ready: list[bool] = []
        p.on("websocket", lambda ws: ws.on("framereceived", lambda frame: _note_kernel_ready(frame, ready)))
        p.goto(f"{url}lab/tree/app.ipynb?token={token}", timeout=60_000)
        cells = p.locator(".jp-Notebook .jp-CodeCell")
        cells.first.wait_for(timeout=60_000)
        # Run only once the page holds a connected kernel. JupyterLab draws the notebook (and its
        # execution indicator says "idle") before it has even created the session; a run requested
        # then finds no kernel and is dropped without a word. The first kernel_info_reply on the
        # page's kernel channel is the moment its kernel connection is ready.
        deadline = time.monotonic() + 60
        while not ready:
            assert time.monotonic() < deadline, "the notebook's kernel did not connect within 60 s"
            p.wait_for_timeout(100)  # lets Playwright deliver the websocket events
        p.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        p.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        # cell 1: signed in as tester, the tabs with their counts and the job
        first = cells.nth(0).locator(".jp-OutputArea")
        eventually(page, lambda: first.get_by_text("sorted by").count() > 0, "the app in cell 1", timeout=90)
        eventually(page, lambda: first.locator(".lm-TabBar-tab", has_text="In Progress (1)").count() == 1,
                   "In Progress (1) in JupyterLab", timeout=60)
        assert first.get_by_text("tester").count() > 0
        # cell 2: the sign-in form; Enter in the password field signs in
        second = cells.nth(1).locator(".jp-OutputArea")
        second.get_by_placeholder("username").wait_for(timeout=90_000)
        second.get_by_placeholder("username").fill("tester")
        second.get_by_placeholder("password").fill("tester-password")
        second.get_by_placeholder("password").press("Enter")
        second.get_by_text("sorted by").first.wait_for(timeout=60_000)
        eventually(page, lambda: second.locator(".lm-TabBar-tab", has_text="In Progress (1)").count() == 1,
                   "signed in through the form in JupyterLab", timeout=60)
        p.screenshot(path=str(ARTIFACTS / "jupyterlab-app.png"), full_page=True)
    finally:
        kids = []
        try:
            kids = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for kid in kids:  # kernels run in their own sessions
            try:
                kid.kill()
            except psutil.NoSuchProcess:
                pass
