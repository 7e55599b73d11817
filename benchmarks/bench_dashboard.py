"""The Voila dashboard at 1k and at 1M jobs of history: page load to populated tabs, tab switches, refresh.

One run, two homes (``--small`` jobs, default 1k, made here; ``--big`` jobs, default 1M, reused from
``--big-home`` or ``/tmp/jmbench/home-<big>`` when it holds that many jobs, else generated), one
``jobmanager dashboard`` server per home, a real Chromium driven by Playwright (as tests/browser does).
Rounds alternate between the homes; each round is a fresh page, so a fresh kernel:

* ``load``: ``page.goto`` -> the sign-in form is visible;
* ``sign-in``: click "Sign in" -> "sorted by" is drawn and all four tab titles carry a count ``(N``;
  ``populated`` = load + sign-in (typing the credentials excluded);
* ``tab <name>``: click the tab -> the kernel has handled that click (the IOPub ``idle`` whose parent is
  the browser's ``comm_msg`` setting ``selected_index``; the tab re-reads itself) and the panel shows a
  grid, a table or its empty text;
* ``refresh <tab>``: click the tab's "Refresh now" button -> the kernel is idle again after that click.
  Auto-refresh is switched off (header dropdown) before the tab and refresh timings, so a background
  refresh never runs in the middle of one; the header's "updated" line is not used as the signal
  because the tab's refresh button re-reads only its grid (the header changes on ``Dashboard.refresh``).
* the kernel's RSS (the ``ipykernel_launcher`` child of the server whose connection file names the
  page's kernel id) after the round.

Then, per home, in a separate plain Python process: ``Dashboard(JobManager(home, user=admin))`` built
(it runs ``refresh(all_tabs=True)``), ``refresh()`` (the visible In Progress tab and the tab counts),
``refresh(all_tabs=True)`` (what the auto-refresh does every 15 s) and a switch to Completed, 3 times
each; and one cProfile of ``refresh(all_tabs=True)`` whose top functions are printed.

Usage: ``python benchmarks/bench_dashboard.py [--rounds 3] [--small 1000] [--big 1000000] [--big-home DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import job_count

from jobmanager import JobManager
from jobmanager.history import demodata
from jobmanager.home import Home  # noqa: E402
from jobmanager.store import open_store  # noqa: E402

CHROMIUM = Path(os.environ.get("JOBMANAGER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
BENCH_USER = "bench-admin"
PASSWORD = "bench-dashboard-password"
OTHER_TABS = ("Completed", "Scheduled", "Agents")
TIMEOUT_MS = 300_000

TITLES_COUNTED_JS = """() => {
    const titles = [...document.querySelectorAll('.lm-TabBar-tab')].map(e => e.textContent);
    return titles.length >= 4 && titles.every(t => /\\(\\d/.test(t));
}"""
#: the visible tab panel shows a drawn grid (canvas), an agents table or an empty-state text
PANEL_DRAWN_JS = """() => {
    const panels = [...document.querySelectorAll('.widget-tab-contents > .lm-Widget, .lm-TabPanel-stackedPanel > *')]
        .filter(p => p.offsetParent !== null && !p.classList.contains('lm-mod-hidden'));
    return panels.some(p => [...p.querySelectorAll('.lm-DataGrid canvas, table.jm-table, .jm-empty')]
        .some(e => e.offsetParent !== null && e.getBoundingClientRect().height > 0));
}"""


# -- homes ---------------------------------------------------------------------------------------------
def make_home(home: Path, jobs: int, in_progress: int | None = None) -> float:
    """A home holding ``jobs`` synthetic jobs (reused when it already does); returns seconds spent generating."""
    have = job_count(home)
    if have == jobs:
        return 0.0
    if have is not None:
        raise SystemExit(f"{home} holds {have} jobs, not {jobs}; remove it or pass another path")
    JobManager.init(home, admin=BENCH_USER, admin_password=PASSWORD).close()
    t = time.perf_counter()
    demodata.generate(home, jobs=jobs, days=30, seed=1, in_progress=in_progress)
    return time.perf_counter() - t


def ensure_admin(home: Path) -> float:
    """Make ``BENCH_USER`` (an administrator) sign in with ``PASSWORD``; returns seconds the store took to open
    (the first open of an older store adds missing indexes and counters: not part of any timing)."""
    t = time.perf_counter()
    store = open_store(Home.open(home))
    opened = time.perf_counter() - t
    try:
        n_users = store.accounts.count_users()
    finally:
        store.close()
    if n_users == 0:
        JobManager.init(home, admin=BENCH_USER, admin_password=PASSWORD).close()
        return opened
    conn = sqlite3.connect(f"file:{home / 'store.db'}?mode=ro", uri=True)
    try:
        admins = [r[0] for r in conn.execute(
            "SELECT username FROM group_members WHERE group_name = 'admins' ORDER BY username")]
        exists = conn.execute("SELECT 1 FROM users WHERE username = ?", (BENCH_USER,)).fetchone() is not None
    finally:
        conn.close()
    if exists:
        with JobManager(home, user=BENCH_USER) as jm:
            jm.set_password(BENCH_USER, PASSWORD)  # also clears failures and a lock-out
        return opened
    if not admins:
        raise SystemExit(f"{home}: no administrator to add {BENCH_USER} with")
    with JobManager(home, user=admins[0]) as jm:
        jm.add_user(BENCH_USER, PASSWORD, groups=["admins"])
    return opened


# -- the server --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    home: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @classmethod
    def start(cls, home: Path, log_dir: Path) -> Server:
        port = free_port()
        log = log_dir / f"dashboard-{home.name}-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "jobmanager", "--home", str(home), "dashboard",
                                     "--port", str(port), "--no-browser"],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        server = cls(home, port, proc, log)
        deadline = time.monotonic() + 90
        while True:  # a files URL answers 403 without starting a kernel
            if proc.poll() is not None:
                raise SystemExit(f"dashboard exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                urllib.request.urlopen(f"{server.url}voila/files/ping", timeout=5)
            except urllib.error.HTTPError as exc:
                if exc.code == 403:
                    return server
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"dashboard did not answer within 90 s:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)

    def kernels(self) -> dict[str, psutil.Process]:
        """kernel id -> its ipykernel process."""
        found = {}
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return found
        for child in children:
            try:
                cmd = " ".join(child.cmdline())
            except psutil.NoSuchProcess:
                continue
            m = re.search(r"ipykernel_launcher.*kernel-([0-9a-f-]+)\.json", cmd)
            if m:
                found[m.group(1)] = child
        return found

    def stop(self) -> None:
        kernels = list(self.kernels().values())
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        for k in kernels:  # Voila stops its kernels on SIGTERM; this is the safety net
            try:
                k.kill()
            except psutil.NoSuchProcess:
                pass


# -- kernel traffic: when has the kernel handled a click? ----------------------------------------------------
def parse_frame(payload: Any) -> dict[str, Any] | None:
    """A kernel websocket frame (JSON text, or the v1 binary protocol) as {channel, header, parent_header, content}."""
    try:
        if isinstance(payload, str):
            return json.loads(payload)
        b = bytes(payload)
        n = int.from_bytes(b[:8], "little")
        offsets = [int.from_bytes(b[8 * (i + 1):8 * (i + 2)], "little") for i in range(n)]
        if offsets[-1] != len(b):
            offsets.append(len(b))
        parts = [b[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
        return {"channel": parts[0].decode(), "header": json.loads(parts[1]),
                "parent_header": json.loads(parts[2]), "content": json.loads(parts[4])}
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


@dataclass
class KernelTraffic:
    """comm_msgs the page sent (msg_id, time, data) and when the kernel went idle after each."""

    sent: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)
    idle: dict[str, float] = field(default_factory=dict)
    #: parent msg_id -> the kernel's own clock (header dates) when it went busy / idle for that message
    busy_at: dict[str, float] = field(default_factory=dict)
    idle_at: dict[str, float] = field(default_factory=dict)

    def attach(self, page: Any) -> None:
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, ws: Any) -> None:
        if "/api/kernels/" in ws.url:
            ws.on("framesent", self._on_sent)
            ws.on("framereceived", self._on_received)

    def _on_sent(self, payload: Any) -> None:
        msg = parse_frame(payload)
        if msg and msg.get("header", {}).get("msg_type") == "comm_msg":
            self.sent.append((msg["header"]["msg_id"], time.perf_counter(), msg.get("content", {}).get("data", {})))

    def _on_received(self, payload: Any) -> None:
        now = time.perf_counter()
        msg = parse_frame(payload)
        if not msg or msg.get("header", {}).get("msg_type") != "status":
            return
        parent, state = msg.get("parent_header", {}).get("msg_id"), msg.get("content", {}).get("execution_state")
        if not parent or state not in ("busy", "idle"):
            return
        try:
            stamp = datetime.fromisoformat(msg["header"]["date"].replace("Z", "+00:00")).timestamp()
        except (KeyError, ValueError):
            stamp = float("nan")
        if state == "busy":
            self.busy_at[parent] = stamp
        else:
            self.idle_at[parent] = stamp
            self.idle[parent] = now

    def kernel_seconds(self, msg_id: str) -> float:
        """How long the kernel was busy with one message, by its own clock."""
        return self.idle_at.get(msg_id, float("nan")) - self.busy_at.get(msg_id, float("nan"))

    def wait_handled(self, page: Any, since: int, match: Any, what: str,
                     timeout: float = 300) -> tuple[float, float, float]:
        """Wait until the kernel is idle after the first comm_msg sent after index ``since`` that ``match``es;
        return when the page sent it and saw the kernel idle (perf_counter), and the kernel's busy seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg_id, sent, data in self.sent[since:]:
                if match(data):
                    if msg_id in self.idle:
                        return sent, self.idle[msg_id], self.kernel_seconds(msg_id)
                    break
            page.wait_for_timeout(5)
        raise SystemExit(f"timed out waiting for the kernel to handle {what}")


def is_tab_switch(data: dict[str, Any]) -> bool:
    return data.get("method") == "update" and "selected_index" in data.get("state", {})


def is_click(data: dict[str, Any]) -> bool:
    return data.get("method") == "custom" and data.get("content", {}).get("event") == "click"


def is_dropdown(data: dict[str, Any]) -> bool:
    return data.get("method") == "update" and "index" in data.get("state", {})


# -- one browser round -----------------------------------------------------------------------------------------
def browser_round(browser: Any, server: Server) -> dict[str, float]:
    r: dict[str, float] = {}
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    traffic = KernelTraffic()
    traffic.attach(page)
    kernel_id = ""
    try:
        t0 = time.perf_counter()
        page.goto(server.url, timeout=TIMEOUT_MS)
        page.get_by_placeholder("username").wait_for(timeout=TIMEOUT_MS)
        r["load"] = time.perf_counter() - t0
        page.get_by_placeholder("username").fill(BENCH_USER)
        page.get_by_placeholder("password").fill(PASSWORD)
        since = len(traffic.sent)
        t1 = time.perf_counter()
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("sorted by").first.wait_for(timeout=TIMEOUT_MS)
        page.wait_for_function(TITLES_COUNTED_JS, timeout=TIMEOUT_MS)
        r["sign-in"] = time.perf_counter() - t1
        r["populated"] = r["load"] + r["sign-in"]
        r["sign-in: kernel busy"] = traffic.wait_handled(page, since, is_click, "sign-in")[2]
        config = json.loads(page.locator("#jupyter-config-data").text_content() or "{}")
        kernel_id = config.get("kernelId", "")

        since = len(traffic.sent)  # auto-refresh off: no background refresh during the timings below
        page.get_by_label("auto-refresh").select_option(label="off")
        traffic.wait_handled(page, since, is_dropdown, "auto-refresh off")

        for name in (*OTHER_TABS, "In Progress"):
            since = len(traffic.sent)
            t = time.perf_counter()
            page.locator(".lm-TabBar-tab", has_text=name).click()
            page.wait_for_function(PANEL_DRAWN_JS, timeout=TIMEOUT_MS)
            drawn = time.perf_counter()
            _sent, handled, busy = traffic.wait_handled(page, since, is_tab_switch, f"the {name} tab")
            r[f"tab {name}"] = max(drawn, handled) - t
            r[f"tab {name}: kernel busy"] = busy

        for name in ("In Progress", "Completed"):
            if name != "In Progress":
                since = len(traffic.sent)
                page.locator(".lm-TabBar-tab", has_text=name).click()
                traffic.wait_handled(page, since, is_tab_switch, f"the {name} tab")
            button = page.locator("button[title='Refresh now']:visible").first
            since = len(traffic.sent)
            t = time.perf_counter()
            button.click()
            _sent, idle, busy = traffic.wait_handled(page, since, is_click, f"refresh of {name}")
            r[f"refresh {name}"] = idle - t
            r[f"refresh {name}: kernel busy"] = busy

        kernel = server.kernels().get(kernel_id)
        r["kernel_rss_mb"] = kernel.memory_info().rss / 2**20 if kernel else float("nan")
    finally:
        page.close(run_before_unload=True)  # Voila's beacon shuts the kernel down
        context.close()
    deadline = time.monotonic() + 15
    while kernel_id in server.kernels() and time.monotonic() < deadline:
        time.sleep(0.2)
    leftover = server.kernels().get(kernel_id)
    if leftover is not None:  # a kernel still refreshing would load the next round
        leftover.kill()
    return r


# -- in Python: Dashboard.refresh() without a browser ----------------------------------------------------------
PYTHON_SNIPPET = r"""
import cProfile, io, json, pstats, statistics, sys, time
import psutil
from jobmanager import JobManager
from jobmanager.widgets.app import Dashboard

home, user, rounds, top = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
jm = JobManager(home, user=user, interface="dashboard")
r = {"build": [], "refresh": [], "refresh_all": [], "switch_completed": []}
for _ in range(rounds):
    t = time.perf_counter(); d = Dashboard(jm, lambda: None); r["build"].append(time.perf_counter() - t)
    d.set_interval(0)
    t = time.perf_counter(); d.refresh(); r["refresh"].append(time.perf_counter() - t)
    t = time.perf_counter(); d.refresh(all_tabs=True); r["refresh_all"].append(time.perf_counter() - t)
    t = time.perf_counter(); d.tabs.selected_index = 1; r["switch_completed"].append(time.perf_counter() - t)
    d.tabs.selected_index = 0
    d._stop.set()
out = {k: statistics.median(v) for k, v in r.items()}
out["titles"] = list(d.tabs.titles)
prof = cProfile.Profile()
prof.enable(); d.refresh(all_tabs=True); prof.disable()
s = io.StringIO()
stats = pstats.Stats(prof, stream=s)
stats.sort_stats("tottime").print_stats(top)
out["profile_tottime"] = s.getvalue()
s = io.StringIO()
pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(r"jobmanager|widgets|sqlite3|duckdb", top * 2)
out["profile_cumulative"] = s.getvalue()
out["rss_mb"] = psutil.Process().memory_info().rss / 2**20
print(json.dumps(out))
"""


def python_round(home: Path, rounds: int, top: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", PYTHON_SNIPPET, str(home), BENCH_USER, str(rounds), str(top)],
                         capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parent.parent)
    if out.returncode:
        raise SystemExit(f"the in-Python run failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- report ------------------------------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def trim_profile(text: str, keep: int) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    body = lines[start:start + keep + 1]
    return "\n".join("    " + re.sub(r"/\S*/site-packages/|/work/main/", "", ln) for ln in body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--small", type=int, default=1000, help="jobs in the small home (made in --dir)")
    ap.add_argument("--big", type=int, default=1_000_000, help="jobs in the big home")
    ap.add_argument("--small-in-progress", type=int, help="unfinished jobs in a newly made small home (default: "
                    "demodata's, 1%% of the jobs: 10 at 1k, while 1M has up to 50)")
    ap.add_argument("--big-home", type=Path, help="the big home (default: /tmp/jmbench/home-<big> if it holds "
                                                  "that many jobs, else made in --dir)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/jmbench-dashboard"))
    ap.add_argument("--top", type=int, default=12, help="profile lines to print")
    ap.add_argument("--no-browser", action="store_true", help="only the in-Python timings")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)

    small = args.dir / (f"home-{args.small}" if args.small_in_progress is None
                        else f"home-{args.small}-ip{args.small_in_progress}")
    big = args.big_home
    if big is None:
        shared = Path("/tmp/jmbench") / f"home-{args.big}"
        big = shared if job_count(shared) == args.big else args.dir / f"home-{args.big}"
    homes = {"1k" if args.small == 1000 else str(args.small): small,
             "1M" if args.big == 1_000_000 else str(args.big): big}
    for (label, home), n, busy in zip(homes.items(), (args.small, args.big), (args.small_in_progress, None),
                                      strict=True):
        gen = make_home(home, n, busy)
        opened = ensure_admin(home)
        print(f"home {label}: {home} ({n} jobs{f', generated in {gen:.0f} s' if gen else ', reused'}; "
              f"store opened in {opened:.1f} s)", flush=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)

    results: dict[str, dict[str, list[float]]] = {label: {} for label in homes}
    if not args.no_browser:
        from playwright.sync_api import sync_playwright

        servers: dict[str, Server] = {}
        try:
            for label, home in homes.items():
                servers[label] = Server.start(home, args.dir)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                try:
                    browser_round(browser, servers[next(iter(homes))])  # warm-up: page cache, imports
                    for i in range(args.rounds):
                        for label in homes:
                            r = browser_round(browser, servers[label])
                            for key, value in r.items():
                                results[label].setdefault(key, []).append(value)
                            print(f"round {i + 1} {label}: " + ", ".join(
                                f"{k} {v:.0f} MB" if k.endswith("_mb") else f"{k} {v:.2f} s" for k, v in r.items()),
                                flush=True)
                finally:
                    browser.close()
        finally:
            for server in servers.values():
                server.stop()

    py = {label: python_round(home, args.rounds, args.top) for label, home in homes.items()}

    a, b = homes
    print(f"\nBrowser (Chromium, Voila), medians of {args.rounds} rounds, seconds:")
    keys = [k for k in results[a] if not k.endswith("_mb")]
    print(f"{'':34}{a:>8}{b:>8}{b + '/' + a:>8}")
    for key in keys:
        x, y = median(results[a][key]), median(results[b][key])
        print(f"{key:34}{x:8.3f}{y:8.3f}{y / x:8.2f}")
    if keys:
        print(f"{'kernel RSS (MB)':34}{median(results[a]['kernel_rss_mb']):8.0f}"
              f"{median(results[b]['kernel_rss_mb']):8.0f}")
    print(f"\nIn Python (Dashboard, no browser), medians of {args.rounds}, seconds:")
    print(f"{'':34}{a:>8}{b:>8}{b + '/' + a:>8}")
    for key in ("build", "refresh", "refresh_all", "switch_completed"):
        x, y = py[a][key], py[b][key]
        print(f"{key:34}{x:8.3f}{y:8.3f}{y / x:8.2f}")
    print(f"{'process RSS (MB)':34}{py[a]['rss_mb']:8.0f}{py[b]['rss_mb']:8.0f}")
    print(f"tab titles {a}: {py[a]['titles']}\ntab titles {b}: {py[b]['titles']}")
    if keys:
        def ratio(key: str) -> str:
            return f"{median(results[b][key]) / median(results[a][key]):.2f}"
        print(f"\nratio {b}/{a} (goal < 1.5): load-to-populated {ratio('populated')}, "
              f"refresh In Progress {ratio('refresh In Progress')} "
              f"(kernel {ratio('refresh In Progress: kernel busy')}), "
              f"refresh Completed {ratio('refresh Completed')} (kernel {ratio('refresh Completed: kernel busy')})")
    print(f"ratio {b}/{a} in Python: refresh() {py[b]['refresh'] / py[a]['refresh']:.2f}, "
          f"refresh(all_tabs=True) {py[b]['refresh_all'] / py[a]['refresh_all']:.2f}")
    print(f"\nWhere refresh(all_tabs=True) spends its time at {b} (cProfile, by own time):")
    print(trim_profile(py[b]["profile_tottime"], args.top))
    print("\n... by cumulative time (jobmanager/widgets/sqlite3 frames):")
    print(trim_profile(py[b]["profile_cumulative"], args.top))


if __name__ == "__main__":
    main()
