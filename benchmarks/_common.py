"""Helpers shared by the engine benchmarks (not part of the test run).

Every benchmark starts its agents and consumers as separate processes, the way
they run in production, and measures them from the outside: wall time with
``time.time()`` (the store's timestamps use the same clock on the same machine)
and CPU time from ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

PYTHON = sys.executable
JOBMANAGER = str(Path(PYTHON).with_name("jobmanager"))
CLK_TCK = os.sysconf("SC_CLK_TCK")

@contextmanager
def scratch_folders(keep: bool = False) -> Iterator[list[Path]]:
    """A list a run appends its rounds' temporary folders to; all are removed when the run ends (or kept, and
    named), not one after each round.

    Why: on ext4 a file created within a minute or so of many deletions costs several times the kernel time,
    as the inode allocator reads inode tables to skip recently deleted inodes. With each round's home removed
    before the next round, ``recently_deleted`` and the block reads under it took 10-20 % of a managed agent's
    CPU with 200 jobs of 10 (perf, this 2-core VM), against about 2 % after a quiet minute: a cost of the
    benchmark's own clean-up, which the raw Huey variants, creating no files, never paid."""
    folders: list[Path] = []
    try:
        yield folders
    finally:
        for folder in folders:
            if keep:
                print(f"#   kept {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)


def scratch(folders: list[Path], prefix: str) -> Path:
    """A new temporary folder, removed with the others at the end of the run (:func:`scratch_folders`)."""
    folders.append(Path(tempfile.mkdtemp(prefix=prefix)))
    return folders[-1]


#: starts an agent with an explicit Polling (the CLI always uses the agent's default)
AGENT_SNIPPET = """
import sys
from jobmanager.engine.agent import Agent, Polling
from jobmanager.home import Home
home, name, workers, d, m, b = sys.argv[1], sys.argv[2], int(sys.argv[3]), *map(float, sys.argv[4:7])
wake = sys.argv[7:8] != ["poll"]
agent = Agent(Home.open(home), name=name, workers=workers, polling=Polling(d, m, b, wake=wake))
agent.prepare()
agent.run()
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start_agent_cli(home: Path, name: str, workers: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``jobmanager --home H agent --workers W --name N [extra]`` with its output in ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [JOBMANAGER, "--home", str(home), "agent", "--workers", str(workers), "--name", name, *extra],
            stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
        )


def start_agent_polling(
    home: Path, name: str, workers: int, polling: tuple[float, float, float], log: Path, wake: bool = True
) -> subprocess.Popen[bytes]:
    """An agent with ``Polling(initial_delay, max_delay, backoff)``, from a small snippet; ``wake=False``:
    its idle workers are never woken by a send (they only poll)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [PYTHON, "-c", AGENT_SNIPPET, str(home), name, str(workers), *map(str, polling),
             "wake" if wake else "poll"],
            stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
        )


def wait_registered(jm: object, name: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until ``jm.agents()`` lists ``name`` online, then a moment for the consumer to start polling."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agent {name} exited with {proc.returncode} before registering")
        df = jm.agents()  # type: ignore[attr-defined]
        row = df[df["name"] == name]
        if not row.empty and row.iloc[0]["status"] in ("idle", "busy") and int(row.iloc[0]["pid"]) == proc.pid:
            time.sleep(0.5)
            return
        time.sleep(0.1)
    raise RuntimeError(f"agent {name} did not register within {timeout:g} s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Stop a process this benchmark started (by its pid only)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank-with-interpolation percentile (``p`` in 0..100)."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def machine() -> str:
    import platform
    import sqlite3

    return (f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, load avg {os.getloadavg()[0]:.2f}")


def job_count(home: Path) -> int | None:
    """How many jobs a benchmark home's SQLite store holds (None: no store, or not readable): kept homes are
    reused when they already hold the wanted number."""
    db = home / "store.db"
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        conn.close()
