"""Offer a file of the home (a job log, a PDF) to the dashboard's browser as a download.

No ipywidgets here: the dashboard widgets call :func:`publish` and put the URL it returns in an
``<a href=URL download=NAME>``. Two situations:

* **Voila dashboard** (``jobmanager dashboard``): the server exports ``JOBMANAGER_DOWNLOADS`` to every
  kernel. :func:`publish` hard-links (else copies) the file to ``<downloads>/<token>/<name>`` and returns the
  relative URL ``voila/files/downloads/<token>/<name>``. Voila's ``/voila/files/`` handler serves exactly
  that pattern and nothing else (its allowlist is :data:`ALLOWLIST`, its root is the folder above
  ``downloads/``), with ``Content-Disposition: attachment``. Tokens are 43 random URL-safe characters
  (256 bits) and expire after :data:`EXPIRY_SECONDS`; expired ones are deleted at publish time, at server
  start and by the server's kernel culler. Files of any size stream from disk (tens of MB are fine).
* **JupyterLab** (an analyst runs ``JobManagerApp(home)``, there is no Voila server, the variable is
  unset): files up to :data:`DATA_URL_LIMIT` bytes come back as a ``data:`` URL (base64, in the widget
  state, so it costs memory in the kernel and the browser); bigger files return ``None`` and the widget
  should show the file's path and the ``jobmanager download`` command instead.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

#: the environment variable the dashboard server sets for its kernels
ENV = "JOBMANAGER_DOWNLOADS"
#: a published file stays downloadable this long (seconds)
EXPIRY_SECONDS = 15 * 60
#: the biggest file :func:`publish` turns into a ``data:`` URL when no dashboard server is around
DATA_URL_LIMIT = 4 * 1024 * 1024
#: ``secrets.token_urlsafe(32)``: 43 characters of ``[A-Za-z0-9_-]``
TOKEN_BYTES = 32
TOKEN_PATTERN = r"[A-Za-z0-9_-]{43}"
#: the only paths (relative to Voila's root) the ``/voila/files/`` handler may serve: one file directly
#: inside a token folder; the name cannot start with a dot and holds no separator, so no ``..``
ALLOWLIST = rf"downloads/{TOKEN_PATTERN}/[^/\\.\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*"
#: the URL of a published file, relative to the dashboard page (which Voila serves at its base URL)
URL_PREFIX = "voila/files/downloads/"

_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


def downloads_dir() -> Path | None:
    """The dashboard server's downloads folder, or None outside a dashboard kernel."""
    value = os.environ.get(ENV)
    if not value:
        return None
    path = Path(value)
    return path if path.is_dir() else None


def clean_name(name: str) -> str:
    """A file name safe in a URL path segment and on any disk: no separators, no leading dot, <= 200 chars."""
    cleaned = _UNSAFE.sub("_", name).strip().lstrip(".").strip()
    if len(cleaned) > 200:
        stem, dot, ext = cleaned.rpartition(".")
        cleaned = (stem[: 199 - len(ext)] + dot + ext) if dot and len(ext) < 20 else cleaned[:200]
    return cleaned or "download"


def publish(path: Path, name: str, *, folder: Path | None = None) -> str | None:
    """Make ``path`` downloadable by the browser under the file name ``name``; return the URL for ``<a href>``.

    In a dashboard kernel (``folder`` or ``$JOBMANAGER_DOWNLOADS`` is set): the file is hard-linked (copied
    when a link is impossible, e.g. across file systems) into a fresh token folder and the returned URL is
    relative to the dashboard page, valid for :data:`EXPIRY_SECONDS`. A hard link shares the bytes of the
    source: a log still being written grows in the download too; a file replaced by rename does not.
    The caller should publish when the user asks for the file, not when the page is drawn, so the
    link has not expired when it is clicked.

    Without a dashboard server (JupyterLab): a ``data:`` URL for files up to :data:`DATA_URL_LIMIT` bytes,
    else ``None``: show the path and the ``jobmanager download`` command instead.

    Raises FileNotFoundError when ``path`` is not a file. The caller checks the user may read it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    name = clean_name(name)
    root = folder if folder is not None else downloads_dir()
    if root is None:
        return data_url(path, name) or jupyter_files_url(path, name)
    clean_expired(root)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    target_dir = root / token
    target_dir.mkdir(mode=0o700, parents=True)
    target = target_dir / name
    try:
        os.link(path, target)
    except OSError:
        shutil.copyfile(path, target)
    return f"{URL_PREFIX}{token}/{quote(name)}"


#: where big downloads go inside a JupyterLab server's root (served by its own /files/ handler)
JUPYTER_FOLDER = "jobmanager-downloads"


def _jupyter_server_for(cwd: Path) -> dict[str, Any] | None:
    """The running Jupyter server whose root holds ``cwd`` (a kernel runs in its notebook's folder)."""
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return None
    best = None
    for server in list_running_servers():
        root = Path(server.get("root_dir") or server.get("notebook_dir") or "").resolve()
        if root and cwd.resolve().is_relative_to(root) and (best is None or len(str(root)) > len(best[0])):
            best = (str(root), server)
    return best[1] if best else None


def jupyter_files_url(path: Path, name: str, *, cwd: Path | None = None) -> str | None:
    """A big file offered in JupyterLab: hard-linked under the server's root, served by its ``/files/``
    handler as an attachment (the analyst's own server and session cookie), with the same unguessable,
    expiring token folders as the dashboard. None when no server's root holds this kernel's folder."""
    server = _jupyter_server_for(cwd or Path.cwd())
    if server is None:
        return None
    server_root = server.get("root_dir") or server.get("notebook_dir")
    if not server_root:
        return None
    root = Path(server_root).resolve() / JUPYTER_FOLDER
    root.mkdir(mode=0o700, exist_ok=True)
    clean_expired(root)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    (root / token).mkdir(mode=0o700)
    target = root / token / name
    try:
        os.link(path, target)
    except OSError:
        shutil.copyfile(path, target)
    base = server.get("base_url") or "/"
    return f"{base}files/{JUPYTER_FOLDER}/{token}/{quote(name)}?download=1"


def data_url(path: Path, name: str) -> str | None:
    """``data:<type>;base64,...`` for a small file, None above :data:`DATA_URL_LIMIT`."""
    if path.stat().st_size > DATA_URL_LIMIT:
        return None
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def expired(folder: Path, max_age: float = EXPIRY_SECONDS, now: float | None = None) -> bool:
    """True when the token folder is older than ``max_age`` seconds (by its mtime) or gone.

    The dashboard's file handler asks this on every request, so a link dies on time even between
    clean-up passes.
    """
    now = time.time() if now is None else now
    try:
        return now - folder.stat().st_mtime > max_age
    except OSError:
        return True


def clean_expired(root: Path, max_age: float = EXPIRY_SECONDS, now: float | None = None) -> int:
    """Delete token folders older than ``max_age`` seconds (by the folder's mtime); return how many went.

    Only names that look like tokens are touched, so a wrong ``root`` cannot delete anything else.
    """
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not re.fullmatch(TOKEN_PATTERN, entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        except FileNotFoundError:  # another process cleaned it first
            continue
    return removed
