"""In JupyterLab (no dashboard server) a file of tens of MB still reaches the browser: the analyst's own
Jupyter server serves it from an unguessable token folder under its root."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from jobmanager.dashboard.downloads import publish


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyter_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "lab"
    (root / "notebooks").mkdir(parents=True)
    runtime = tmp_path / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("JOBMANAGER_DOWNLOADS", raising=False)
    port = _port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.root_dir={root}", "--IdentityProvider.token=labtoken"],
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not list(runtime.glob("jpserver-*.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "jupyter server did not start"
        time.sleep(0.2)
    yield root, port
    proc.terminate()
    proc.wait(20)


def test_big_file_is_served_by_the_analysts_jupyter_server(jupyter_server, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root, port = jupyter_server
    big = tmp_path / "job-7.log"
    big.write_bytes(os.urandom(12 * 2**20))
    monkeypatch.chdir(root / "notebooks")  # a kernel runs in its notebook's folder
    url = publish(big, "job-7.log")
    assert url is not None and url.startswith("/files/jobmanager-downloads/") and url.endswith("?download=1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{url}&token=labtoken", timeout=30) as resp:
        assert "attachment" in resp.headers.get("Content-Disposition", "")
        assert resp.read() == big.read_bytes()
    monkeypatch.chdir(tmp_path)  # a kernel outside every server's root: no link, the widget shows a command
    assert publish(big, "job-7.log") is None
