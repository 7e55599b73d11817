"""``jobmanager demo``: the main job. A home with jobs in every state and live agents.

It creates (or reuses) a home, starts agents as real processes, submits demo jobs
that end in every state (one is left running, one queued behind it, one paused),
kills one extra agent so the Agents view has a lost agent to troubleshoot, prints
where to look, and stops everything cleanly on Ctrl-C (or after ``run_for`` s).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from jobmanager.service import JobManager

#: the demo's users (documented in the README): name -> (password, group)
DEMO_USERS = {
    "admin": ("admin-demo", "admins"),
    "operator": ("operator-demo", "operators"),
    "analyst": ("analyst-demo", "analysts"),
}
#: sample documents for the print_to_pdf demo jobs (shipped as package data)
DEMO_DOCUMENTS = Path(__file__).parent / "demo_documents"


DEMO_SCHEDULES = """\
# Schedules declared in a file: agents load it at start-up (and `jobmanager schedule sync`).
[[schedule]]
name = "Nightly smoke test"
type = "sleep"
cron = "0 2 * * 1-5"
tz = "Europe/Berlin"
params = { tasks = 5, seconds = 0.5 }

[[schedule]]
name = "Heartbeat check"
type = "sleep"
every = "30m"
params = { tasks = 1 }
"""


def _start_agent(home: Path, name: str, workers: int = 2) -> subprocess.Popen[bytes]:
    log = open(home / "logs" / "agents" / f"{name}.stdout", "ab")  # noqa: SIM115 - lives as long as the agent
    return subprocess.Popen(
        [sys.executable, "-m", "jobmanager", "--home", str(home), "agent", "--name", name,
         "--workers", str(workers), "--shutdown-timeout", "3"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def _start_dashboard(home: Path, port: int) -> subprocess.Popen[bytes] | None:
    """``jobmanager dashboard`` in its own process group; None when the UI extra is not installed."""
    try:
        import voila  # noqa: F401
    except ImportError:
        print("(the dashboard needs the 'dashboard' extra: pip install -e '.[all]')")
        return None
    log = open(home / "logs" / "dashboard.log", "ab")  # noqa: SIM115 - lives as long as the server
    return subprocess.Popen(
        [sys.executable, "-m", "jobmanager", "--home", str(home), "dashboard", "--no-browser", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url + "voila/files/ping", timeout=2)
    except urllib.error.HTTPError as exc:
        return exc.code == 403
    except OSError:
        return False
    return True


def _wait_online(jm: JobManager, names: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        df = jm.agents()
        if set(names) <= set(df[df.status.isin(["idle", "busy"])].name):
            return
        time.sleep(0.1)
    raise RuntimeError(f"agents {names} did not come online; see {jm.home.logs_dir / 'agents'}")


def submit_demo_jobs(jm: JobManager) -> dict[str, int]:
    """Jobs that end in every state; returns their ids by name."""
    s = jm.submit
    # a copy in the home's inputs folder (jobs read nothing else of the home), so an operator can fix
    # the broken documents and retry without touching the package
    docs = jm.home.inputs_dir / "demo-documents"
    shutil.copytree(DEMO_DOCUMENTS, docs, dirs_exist_ok=True)
    ids = {
        "Nightly smoke test": s("sleep", {"tasks": 5, "seconds": 0.5}, name="Nightly smoke test"),
        "Flaky import": s("sleep", {"tasks": 6, "seconds": 0.3, "fail_tasks": [2, 5]}, name="Flaky import",
                          case="ACME-12"),
        "Broken export": s("sleep", {"tasks": 2, "fail_tasks": [1, 2]}, name="Broken export", case="ACME-12"),
        "Retried and fixed": s("sleep", {"tasks": 3, "fail_tasks": [3], "fail_attempts": 1}, retries=1,
                               name="Retried and fixed"),
        # real documents shipped with the package; the second job has broken ones to fix and retry
        "Print welcome pack": s("print_to_pdf", {
            "documents": ["welcome.txt", "release-notes.md", "inventory.csv", "chart.png", "checklist.txt"],
            "base_dir": str(docs), "title": "Welcome pack"}, name="Print welcome pack"),
        "Print scanned archive": s("print_to_pdf", {
            "documents": ["welcome.txt", "scan.png", "legacy-notes.txt", "meeting-minutes.txt", "inventory.csv"],
            "base_dir": str(docs), "title": "Scanned archive"}, name="Print scanned archive",
            case="ACME-12"),
    }
    for job_id in list(ids.values()):  # the quick ones finish before the long ones take the workers
        jm.wait(job_id, timeout=60)
    ids |= {
        "Cancelled batch": s("sleep", {"tasks": 20, "seconds": 5}, name="Cancelled batch", case="GLOBEX-3"),
        "Paused reindex": s("sleep", {"tasks": 10, "seconds": 3}, name="Paused reindex", priority=2),
        "Quarterly archive": s("sleep", {"tasks": 60, "seconds": 20, "steps": 40}, name="Quarterly archive",
                               case="GLOBEX-3", priority=1),
        "Low-priority cleanup": s("sleep", {"tasks": 10, "seconds": 10}, name="Low-priority cleanup",
                                  priority=-5),
    }
    jm.cancel(ids["Cancelled batch"])
    schedules_file = jm.home.path / "schedules.toml"
    if not schedules_file.exists():
        schedules_file.write_text(DEMO_SCHEDULES)
    jm.sync_schedules_file()
    if "Quarter-end archive" not in set(jm.schedules().name):
        jm.create_schedule("Quarter-end archive", "sleep", {"tasks": 3}, source="dashboard",
                           at="2030-03-31T23:00", tz="Europe/London")
    jm.pause(ids["Paused reindex"])
    return ids


def run_demo(home: str | os.PathLike[str], *, n_agents: int = 2, run_for: float | None = None,
             dashboard_port: int | None = 8866) -> None:
    jm = JobManager.init(home, admin="admin", admin_password=DEMO_USERS["admin"][0])
    existing = set(jm.users().username)
    for name, (password, group) in DEMO_USERS.items():
        if name not in existing:
            jm.add_user(name, password, groups=[group])
    jm.add_case("analysts", "ACME-12")
    path = jm.home.path
    print(f"Job Manager demo: home {path}")
    agents: list[subprocess.Popen[bytes]] = []
    server: subprocess.Popen[bytes] | None = None
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        names = [f"agent-{i + 1}" for i in range(n_agents)]
        agents = [_start_agent(path, name) for name in names]
        flaky = _start_agent(path, "agent-flaky", 1)
        _wait_online(jm, [*names, "agent-flaky"])
        os.kill(flaky.pid, signal.SIGKILL)  # leaves a lost agent to troubleshoot
        flaky.wait()
        ids = submit_demo_jobs(jm)
        print(f"started {n_agents} agents ({', '.join(names)}); agent-flaky was killed to show a lost agent")
        print(f"submitted {len(ids)} demo jobs; watch them with:")
        print(f"  jobmanager --home {path} jobs")
        print(f"  jobmanager --home {path} agents")
        print(f"  jobmanager --home {path} show {ids['Flaky import']}")
        if dashboard_port:
            server = _start_dashboard(path, dashboard_port)
            url = f"http://127.0.0.1:{dashboard_port}/"
            deadline = time.monotonic() + 60
            while server is not None and not _answers(url) and time.monotonic() < deadline:
                if server.poll() is not None:
                    print(f"the dashboard did not start; see {path / 'logs' / 'dashboard.log'}", file=sys.stderr)
                    server = None
                    break
                time.sleep(0.2)
            if server is not None:
                print(f"dashboard: {url}  (sign in as one of the users below)")
        print("users: " + ", ".join(f"{n} / {p} ({g})" for n, (p, g) in DEMO_USERS.items()))
        print("Ctrl-C stops the agents and the demo.", flush=True)
        end = None if run_for is None else time.monotonic() + run_for
        while not stop.wait(0.5):
            if end is not None and time.monotonic() >= end:
                break
            for name, a in list(zip(names, agents, strict=True)):
                code = a.poll()
                if code is None:
                    continue
                if code == 0:  # a requested stop (Stop (drain) in the Agents tab): the rest keeps running
                    print(f"agent {name} stopped (drained on request); the demo keeps running", flush=True)
                else:
                    print(f"agent {name} exited with status {code}; the demo keeps running "
                          f"(see {path / 'logs' / 'agents' / (name + '.stdout')})", file=sys.stderr, flush=True)
                names.remove(name)
                agents.remove(a)
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        for a in agents:
            if a.poll() is None:
                a.send_signal(signal.SIGTERM)
        for a in agents:
            try:
                a.wait(15)
            except subprocess.TimeoutExpired:
                a.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        jm.close()
        print("demo stopped; the home and its history stay in", path)
