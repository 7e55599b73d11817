"""Files published by the dashboard kernel download through the browser; nothing else is served."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
from pathlib import Path

import pytest
from fpdf import FPDF

from jobmanager.dashboard import downloads

from .conftest import open_dashboard

BIG = 30 * 1024 * 1024


def _files(tmp_path: Path) -> tuple[Path, Path]:
    big = tmp_path / "job-17.log"
    with big.open("wb") as fh:  # text-like but not compressible to nothing
        for _ in range(BIG // (1024 * 1024)):
            fh.write(os.urandom(512 * 1024).hex().encode())
    assert big.stat().st_size == BIG
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=14)
    pdf.cell(text="Job 17 report")
    small = tmp_path / "report.pdf"
    pdf.output(str(small))
    return big, small


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (no client-side normalisation of ``..``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def test_download_big_log_and_pdf(start_dashboard, page, tmp_path: Path) -> None:
    big, small = _files(tmp_path)
    server = start_dashboard(files=[{"path": str(big), "name": "Job 17 – log.txt"},
                                    {"path": str(small), "name": "report 17.pdf"}])
    open_dashboard(page, server)
    links = page.page.locator("a.jm-download")
    assert links.count() == 2
    saved = {}
    for i, (src, name) in enumerate([(big, "Job 17 – log.txt"), (small, "report 17.pdf")]):
        started = time.monotonic()
        with page.page.expect_download(timeout=120_000) as info:
            links.nth(i).click()
        download = info.value
        target = tmp_path / "saved" / download.suggested_filename
        download.save_as(target)
        took = time.monotonic() - started
        saved[name] = (target, took)
        assert download.failure() is None
        assert download.suggested_filename == name
        assert target.stat().st_size == src.stat().st_size
        assert _sha(target) == _sha(src)
    print(f"30 MB download through Chromium: {saved['Job 17 – log.txt'][1]:.2f} s")

    href = links.nth(1).get_attribute("href")
    assert href and href.startswith(downloads.URL_PREFIX)
    resp = page.page.request.get(server.url + href)
    assert resp.status == 200
    assert resp.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in resp.headers["content-security-policy"]
    assert resp.headers["cache-control"] == "no-store"


@pytest.mark.sqlite_only  # checks the SQLite store file is never served
def test_only_published_files_are_served(start_dashboard, page, tmp_path: Path) -> None:
    _, small = _files(tmp_path)
    server = start_dashboard(files=[{"path": str(small), "name": "report.pdf"}])
    open_dashboard(page, server)
    href = page.page.locator("a.jm-download").first.get_attribute("href")
    token = re.fullmatch(rf"{downloads.URL_PREFIX}({downloads.TOKEN_PATTERN})/report.pdf", href or "").group(1)
    port = server.port
    assert _raw_get(port, f"/{href}")[0] == 200
    other = token[:-1] + ("A" if token[-1] != "A" else "B")
    store = (server.home / "store.db").read_bytes()[:16]
    refused = [
        f"/voila/files/downloads/{other}/report.pdf",          # another token
        f"/voila/files/downloads/{token}/other.pdf",           # another name
        f"/voila/files/downloads/{token}",                     # the token folder
        "/voila/files/downloads/",
        "/voila/files/dashboard.ipynb",                        # the notebook
        f"/voila/files/downloads/{token}/../../dashboard.ipynb",
        f"/voila/files/downloads/{token}/%2e%2e/%2e%2e/dashboard.ipynb",
        f"/voila/files/downloads/{token}/..%2f..%2f..%2fstore.db",
        "/voila/files/../store.db",                            # the store
        "/voila/files/%2e%2e/store.db",
        "/voila/files/store.db",
        "/voila/files/../jobmanager.toml",
        f"/voila/files/downloads/{token}/.hidden",
    ]
    for path in refused:
        status, body = _raw_get(port, path)
        assert status in (403, 404), f"{path} answered {status}"
        assert store not in body and b"nbformat" not in body, path


def test_expired_tokens_are_removed_at_start(home: Path, start_dashboard) -> None:
    folder = home / "dashboard" / "downloads"
    folder.mkdir(parents=True)
    old = folder / ("o" * 43)
    fresh = folder / ("f" * 43)
    for d in (old, fresh):
        d.mkdir()
        (d / "x.txt").write_text("x")
    past = time.time() - downloads.EXPIRY_SECONDS - 60
    os.utime(old, (past, past))
    start_dashboard()
    assert not old.exists()
    assert fresh.exists()
