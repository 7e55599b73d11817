"""``jobmanager lab``: JupyterLab on the notebooks folder, with the home set for every notebook.

Analysts use the same app there as operators do in the dashboard: ``JobManagerApp(home, user=...)`` in a
cell, and notebooks/analysis.ipynb. The notebooks find their home in ``$JOBMANAGER_HOME`` (and their
user in ``$JOBMANAGER_USER``), which the server's kernels inherit. JupyterLab comes with the
``notebooks`` extra. Unlike the dashboard, JupyterLab runs any code its user types: it is for people who
already hold the home's files, on loopback, behind Jupyter's own token.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from jobmanager.errors import BadParams
from jobmanager.home import Home

#: the notebooks of a source checkout (dashboard.ipynb, analysis.ipynb, admin.ipynb)
REPO_NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
DEFAULT_PORT = 8888


def notebooks_dir(folder: str | os.PathLike[str] | None) -> Path:
    """``folder``, else the checkout's notebooks/ folder; one clear line when there is none."""
    if folder is not None:
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise BadParams(f"{path}: no such folder")
        return path
    if REPO_NOTEBOOKS.is_dir():
        return REPO_NOTEBOOKS
    raise BadParams(f"no notebooks folder: {REPO_NOTEBOOKS} does not exist; pass --notebooks FOLDER")


def command(home: str | os.PathLike[str] | None, *, user: str | None = None, folder: str | None = None,
            host: str = "127.0.0.1", port: int = DEFAULT_PORT, open_browser: bool = True,
            extra: tuple[str, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """JupyterLab's command line and environment (the home and user for the notebooks' kernels)."""
    import importlib.util

    if importlib.util.find_spec("jupyterlab") is None:
        raise BadParams("JupyterLab is not installed: pip install -e '.[notebooks]' (or make setup)")
    h = Home.open(home)
    root = notebooks_dir(folder)
    env = dict(os.environ)
    env["JOBMANAGER_HOME"] = str(h.path)
    if user:
        env["JOBMANAGER_USER"] = user
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    argv = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root}", f"--ServerApp.ip={host}",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if not open_browser:
        argv.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI run as root; Jupyter refuses without it
        argv.append("--allow-root")
    return [*argv, *extra], env


def serve(home: str | os.PathLike[str] | None, **kwargs: Any) -> NoReturn:
    """Replace this process with JupyterLab (Ctrl-C stops it); ``kwargs`` are :func:`command`'s."""
    argv, env = command(home, **kwargs)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)
