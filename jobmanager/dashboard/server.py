"""``jobmanager dashboard``: serve notebooks/dashboard.ipynb with Voila's standalone server.

Why the standalone server (and not Voila inside JupyterLab): it only forwards widget comm and
kernel-info messages from the browser to the kernel, so a dashboard user cannot run code; the
server extension forwards everything. Voila has no login of its own: the sign-in is in the app.

Layout under the home (Voila's root folder is ``<home>/dashboard``)::

    dashboard/
      dashboard.ipynb            a copy of the notebook, made at every start
      downloads/<token>/<name>   files offered to browsers (see jobmanager.dashboard.downloads)

Voila's ``/voila/files/`` handler serves only ``downloads/<token>/<name>`` (its allowlist), so neither
the notebook nor anything else of the home (``store.db`` is outside the root anyway) can be fetched.
This module imports no Voila: :mod:`jobmanager.dashboard.voila` is the server process.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

from jobmanager.dashboard import downloads
from jobmanager.errors import HomeError
from jobmanager.home import Home

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8866
#: seconds a kernel may live without any browser connected (closed tab, killed browser, lost network)
CULL_AFTER = 60.0
#: seconds between culling passes (also when expired download tokens are removed)
CULL_INTERVAL = 10
TEMPLATE = "jobmanager"
#: the biggest websocket message a browser may send to a dashboard kernel (widget updates are a few KB);
#: a bigger one closes the socket before it is read
MAX_MESSAGE_BYTES = 1024 * 1024

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # jobmanager/, which holds share/
#: the dashboard notebook in a source checkout: the repo root is the parent of jobmanager/
REPO_NOTEBOOK = PACKAGE_DIR.parent / "notebooks" / "dashboard.ipynb"
#: a Jupyter data dir holding the "jobmanager" Voila template (added to JUPYTER_PATH)
JUPYTER_DATA = PACKAGE_DIR / "share" / "jupyter"

#: headers on Voila's pages and API answers. The page needs inline and eval'd scripts (Voila and
#: the widget manager), but nothing from another origin: a widget that shows an external image or
#: script gets it blocked by the browser.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # download URLs carry tokens
}


def dashboard_dir(home: Home) -> Path:
    """Voila's root folder for this home."""
    return home.path / "dashboard"


def find_notebook(home: Home, notebook: str | os.PathLike[str] | None = None) -> Path:
    """The notebook to serve: ``notebook``, else the source checkout's, else ``<home>/dashboard/dashboard.ipynb``."""
    if notebook is not None:
        path = Path(notebook).expanduser().resolve()
        if not path.is_file():
            raise HomeError(f"{path}: no such notebook")
        return path
    for path in (REPO_NOTEBOOK, dashboard_dir(home) / "dashboard.ipynb"):
        if path.is_file():
            return path
    raise HomeError(f"no dashboard notebook: neither {REPO_NOTEBOOK} nor {dashboard_dir(home) / 'dashboard.ipynb'} "
                    "exists; pass --notebook PATH")


def prepare(home: Home, notebook: Path) -> Path:
    """Create ``<home>/dashboard/downloads``, drop expired downloads, copy the notebook in; return the copy."""
    root = dashboard_dir(home)
    folder = root / "downloads"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    downloads.clean_expired(folder)
    target = root / "dashboard.ipynb"
    if notebook.resolve() != target.resolve():
        shutil.copyfile(notebook, target)
    return target


def voila_args(notebook: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, open_browser: bool = True,
               cull_after: float = CULL_AFTER, cull_interval: int = CULL_INTERVAL,
               downloads_dir: Path | None = None) -> list[str]:
    """The command-line arguments of :mod:`jobmanager.dashboard.voila` (Voila's own options)."""
    downloads_dir = downloads_dir or notebook.parent / "downloads"
    args = [
        str(notebook),
        f"--Voila.ip={host}",
        f"--Voila.port={port}",
        f"--Voila.root_dir={notebook.parent}",
        # template, file allowlist, headers, kernel manager class: fixed in dashboard_voila.DashboardVoila
        # culling: Jupyter's idle culler (connected kernels are left alone) plus the disconnected culler
        f"--MappingKernelManager.cull_idle_timeout={int(max(cull_after, 1))}",
        f"--MappingKernelManager.cull_interval={cull_interval}",
        "--MappingKernelManager.cull_connected=False",
        f"--DashboardKernelManager.cull_disconnected_timeout={cull_after}",
        f"--DashboardKernelManager.downloads_dir={downloads_dir}",
    ]
    if not open_browser:
        args.append("--no-browser")
    return args


def server_env(home: Home, downloads_dir: Path) -> dict[str, str]:
    """The server's environment, which every kernel inherits: the home, the downloads folder, the template."""
    env = dict(os.environ)
    env["JOBMANAGER_HOME"] = str(home.path)
    env[downloads.ENV] = str(downloads_dir)
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(JUPYTER_DATA), env.get("JUPYTER_PATH", "")) if p)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # a debugpy warning on every kernel start
    return env


def command(home: str | os.PathLike[str] | None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
            notebook: str | os.PathLike[str] | None = None, open_browser: bool = True,
            cull_after: float = CULL_AFTER, cull_interval: int = CULL_INTERVAL) -> tuple[list[str], dict[str, str]]:
    """Prepare the home and return the server's command line and environment."""
    h = Home.open(home)
    copy = prepare(h, find_notebook(h, notebook))
    folder = copy.parent / "downloads"
    argv = [sys.executable, "-m", "jobmanager.dashboard.voila",
            *voila_args(copy, host, port, open_browser, cull_after, cull_interval, folder)]
    return argv, server_env(h, folder)


def serve(home: str | os.PathLike[str] | None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          notebook: str | os.PathLike[str] | None = None, open_browser: bool = True,
          cull_after: float = CULL_AFTER, cull_interval: int = CULL_INTERVAL) -> NoReturn:
    """Replace this process with the dashboard server (Ctrl-C or SIGTERM stop it and its kernels)."""
    argv, env = command(home, host, port, notebook, open_browser, cull_after, cull_interval)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)
