"""Browser tests of the Voila dashboard server: a real ``jobmanager dashboard`` and Debian's Chromium.

Playwright's own browser download does not work offline, so Playwright drives /usr/bin/chromium
(``bash .ci/system-deps chromium`` installs it); without it the tests that need a browser are skipped.
The server serves tests/browser/fixture_notebook.ipynb, a stand-in for the real dashboard notebook.
Screenshots go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

CHROMIUM = Path(os.environ.get("JOBMANAGER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
FIXTURE_NOTEBOOK = Path(__file__).parent / "fixture_notebook.ipynb"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, method: str = "GET", cookie: str = "") -> int:
    headers = {"Cookie": cookie} if cookie else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers), timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@dataclass
class DashboardServer:
    home: Path
    port: int
    proc: subprocess.Popen
    log: Path
    seen_kernels: set[int] = field(default_factory=set)
    #: kernel id -> the Cookie header of the browser that opened its page (kernels answer only their owner)
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kernel_pids(self) -> set[int]:
        """The ipykernel processes the server started (they run in their own sessions)."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return set()
        pids = set()
        for child in children:
            try:
                if "ipykernel_launcher" in " ".join(child.cmdline()):
                    pids.add(child.pid)
            except psutil.NoSuchProcess:
                continue
        self.seen_kernels |= pids
        return pids

    def kernel_status(self, kernel_id: str) -> int:
        return http_status(f"{self.url}api/kernels/{kernel_id}", cookie=self.cookies.get(kernel_id, ""))

    def kernel_model(self, kernel_id: str) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.url}api/kernels/{kernel_id}",
                                         headers={"Cookie": self.cookies.get(kernel_id, "")})
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.load(resp)

    def stop(self) -> None:
        self.kernel_pids()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        for pid in self.seen_kernels:  # Voila shuts its kernels down on SIGTERM; this is the safety net
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass


@pytest.fixture
def start_dashboard(home: Path, tmp_path: Path) -> Iterator[Callable[..., DashboardServer]]:
    """Start ``jobmanager dashboard`` on a free loopback port (stand-in notebook) and wait until it answers.

    ``files``: [{"path", "name"}] the notebook publishes as download links; ``tick``: the notebook updates
    a label every second (comm traffic, like a self-refreshing dashboard).
    """
    started: list[DashboardServer] = []

    def start(files: list[dict[str, str]] | None = None, tick: bool = False, cull_after: float = 60.0,
              extra: tuple[str, ...] = ()) -> DashboardServer:
        (home / "browser-fixture.json").write_text(json.dumps({"files": files or [], "tick": tick}))
        port = free_port()
        log = tmp_path / f"dashboard-{port}.log"
        cmd = [sys.executable, "-m", "jobmanager", "--home", str(home), "dashboard", "--port", str(port),
               "--no-browser", "--notebook", str(FIXTURE_NOTEBOOK), "--cull-after", str(cull_after), *extra]
        proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        server = DashboardServer(home, port, proc, log)
        started.append(server)
        deadline = time.monotonic() + 60
        while True:  # a files URL answers 403 without starting a kernel (the page would start one)
            if proc.poll() is not None:
                raise AssertionError(f"dashboard exited with {proc.returncode}:\n{server.output()}")
            try:
                if http_status(f"{server.url}voila/files/ping") == 403:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"dashboard did not answer within 60 s:\n{server.output()}")
            time.sleep(0.1)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (bash .ci/system-deps chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Page:
    """A Playwright page plus every URL it requested and every console message it logged."""

    page: Any
    requests: list[str]
    console: list[str]


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 800})
    pg = context.new_page()
    result = Page(pg, [], [])
    pg.on("request", lambda r: result.requests.append(r.url))
    pg.on("console", lambda m: result.console.append(f"{m.type}: {m.text}"))
    yield result
    screenshot(result, request.node.name)
    context.close()


def screenshot(page: Page, name: str) -> Path | None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    try:
        page.page.screenshot(path=str(path), full_page=True, timeout=10_000)
    except Exception:  # the test closed the page
        return None
    return path


def open_dashboard(page: Page, server: DashboardServer, timeout: float = 60.0) -> str:
    """Load the dashboard, wait until its widgets are drawn; return the page's kernel id."""
    page.page.goto(server.url, timeout=timeout * 1000)
    page.page.get_by_text("fixture dashboard").wait_for(timeout=timeout * 1000)
    page.page.get_by_role("button", name="Click").wait_for(timeout=timeout * 1000)
    config = json.loads(page.page.locator("#jupyter-config-data").text_content() or "{}")
    kernel_id = config["kernelId"]
    server.cookies[kernel_id] = "; ".join(f"{c['name']}={c['value']}" for c in page.page.context.cookies(server.url))
    return kernel_id


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> float:
    """Wait until ``predicate()`` is true; return the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start
