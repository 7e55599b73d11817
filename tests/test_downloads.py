"""jobmanager.dashboard.downloads without a browser: token folders, expiry, the JupyterLab fallback."""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from jobmanager.dashboard import downloads
from jobmanager.dashboard import server as dashboard_server


def test_publish_links_into_a_token_folder(tmp_path: Path) -> None:
    src = tmp_path / "job.log"
    src.write_text("hello\n")
    folder = tmp_path / "downloads"
    folder.mkdir()
    url = downloads.publish(src, "Job 1 log.txt", folder=folder)
    assert url is not None
    match = re.fullmatch(rf"{downloads.URL_PREFIX}({downloads.TOKEN_PATTERN})/(.+)", url)
    assert match, url
    token, name = match.group(1), unquote(match.group(2))
    assert name == "Job 1 log.txt"
    target = folder / token / name
    assert target.read_text() == "hello\n"
    assert target.stat().st_ino == src.stat().st_ino  # a hard link, no copy
    assert re.fullmatch(downloads.ALLOWLIST, f"downloads/{token}/{name}")
    assert downloads.publish(src, "Job 1 log.txt", folder=folder) != url  # a fresh token every time


@pytest.mark.parametrize("name", ["../../store.db", "..", ".hidden", "a/b\\c", "x\x00y", ""])
def test_names_cannot_escape_the_token_folder(tmp_path: Path, name: str) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"1")
    url = downloads.publish(src, name, folder=tmp_path / "d")
    assert url is not None
    rel = unquote(url.removeprefix("voila/files/"))
    assert re.fullmatch(downloads.ALLOWLIST, rel), rel
    target = (tmp_path / "d" / rel.removeprefix("downloads/")).resolve()
    assert target.is_file() and target.parent.parent == (tmp_path / "d").resolve()


def test_allowlist_refuses_everything_else() -> None:
    token = "a" * 43
    for path in ["dashboard.ipynb", "../store.db", f"downloads/{token}", f"downloads/{token}/../x",
                 f"downloads/{token}/a/b", f"downloads/{'a' * 42}/x", f"downloads/{token}/..", "downloads/x/y"]:
        assert not re.fullmatch(downloads.ALLOWLIST, path), path


def test_expired_tokens_are_cleaned(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"1")
    folder = tmp_path / "d"
    url = downloads.publish(src, "f.txt", folder=folder)
    token = url.split("/")[3]
    keep = folder / "not-a-token"
    keep.mkdir()
    past = time.time() - downloads.EXPIRY_SECONDS - 1
    os.utime(folder / token, (past, past))
    os.utime(keep, (past, past))
    downloads.publish(src, "g.txt", folder=folder)  # publishing cleans
    assert not (folder / token).exists()
    assert keep.exists()  # only token-shaped folders are touched
    assert src.exists()


def test_jupyterlab_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(downloads.ENV, raising=False)
    small = tmp_path / "r.pdf"
    small.write_bytes(b"%PDF-1.4 tiny")
    url = downloads.publish(small, "r.pdf")
    assert url == "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4 tiny").decode()
    big = tmp_path / "big.log"
    with big.open("wb") as fh:
        fh.truncate(downloads.DATA_URL_LIMIT + 1)
    assert downloads.publish(big, "big.log") is None
    with pytest.raises(FileNotFoundError):
        downloads.publish(tmp_path / "missing", "x")


def test_dashboard_kernels_get_the_downloads_folder(home: Path) -> None:
    nb = home / "dashboard" / "dashboard.ipynb"
    nb.parent.mkdir()
    nb.write_text("{}")
    argv, env = dashboard_server.command(home, port=9999, notebook=nb, open_browser=False)
    assert env["JOBMANAGER_HOME"] == str(home.resolve())
    assert env[downloads.ENV] == str(home.resolve() / "dashboard" / "downloads")
    assert "--Voila.ip=127.0.0.1" in argv and "--no-browser" in argv
    assert f"--Voila.root_dir={home.resolve() / 'dashboard'}" in argv


def test_expired_is_checked_per_folder(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"1")
    folder = tmp_path / "d"
    url = downloads.publish(src, "f.txt", folder=folder)
    token_dir = folder / url.split("/")[3]
    assert not downloads.expired(token_dir)
    past = time.time() - downloads.EXPIRY_SECONDS - 1
    os.utime(token_dir, (past, past))
    assert downloads.expired(token_dir)
    assert downloads.expired(folder / ("b" * 43))  # gone counts as expired


def test_allowlist_refuses_control_characters() -> None:
    token = "a" * 43
    for name in ["x\x00y", "\x00", "a\nb", "a\x7f", "\x1b]0;t\x07"]:
        assert not re.fullmatch(downloads.ALLOWLIST, f"downloads/{token}/{name}"), repr(name)
    assert re.fullmatch(downloads.ALLOWLIST, f"downloads/{token}/Job 1 log (é).txt")
