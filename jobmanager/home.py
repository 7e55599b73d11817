"""The home folder: where a Job Manager keeps its store, queue, logs and outputs.

One :class:`Home` owns the layout, so no other module builds paths by hand::

    home/
      jobmanager.toml      configuration (backends, imports, intervals)
      store.db             the job store (SQLite, WAL)
      queue.db             the Huey queue (SqliteHuey)
      logs/jobs/<job>/     one log file per task, plus finish.log
      logs/agents/         one log file per agent
      artifacts/<job>/     files the job wrote (PDFs, exports...)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadParams, HomeError, NotFound

CONFIG_NAME = "jobmanager.toml"

DEFAULT_CONFIG = """\
# Job Manager configuration. Backends are chosen by URL; "sqlite" keeps them in this folder.
store = "sqlite"
queue = "sqlite"

# Modules that register job types, imported by agents and by the service.
imports = []

# Seconds between agent heartbeats; an agent silent for 3 intervals is marked lost.
heartbeat_interval = 5.0

# Folders (besides this home) that jobs may read their inputs from: documents, notebooks, CSV files.
input_dirs = []
"""


@dataclass
class Home:
    """A Job Manager home folder and its configuration."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None) -> "Home":
        """Open an existing home (``path``, else ``$JOBMANAGER_HOME``)."""
        root = resolve_path(path)
        cfg = root / CONFIG_NAME
        if not cfg.is_file():
            raise HomeError(
                f"{root} is not a Job Manager home (no {CONFIG_NAME}); "
                f"create one with: jobmanager init --home {root}"
            )
        try:
            config = tomllib.loads(cfg.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise HomeError(f"{cfg}: not valid TOML: {exc}") from None
        return cls(root, config)

    @classmethod
    def create(cls, path: str | os.PathLike[str] | None) -> "Home":
        """Create the folder layout and a default configuration (idempotent)."""
        root = resolve_path(path)
        if root.exists() and not root.is_dir():
            raise HomeError(f"{root} exists and is not a folder")
        root.mkdir(parents=True, exist_ok=True)
        cfg = root / CONFIG_NAME
        if not cfg.exists():
            cfg.write_text(DEFAULT_CONFIG)
        home = cls.open(root)
        for sub in (home.logs_dir / "jobs", home.logs_dir / "agents", home.artifacts_dir):
            sub.mkdir(parents=True, exist_ok=True)
        return home

    # -- configuration -------------------------------------------------------------
    @property
    def heartbeat_interval(self) -> float:
        env = os.environ.get("JOBMANAGER_HEARTBEAT")
        return float(env) if env else float(self.config.get("heartbeat_interval", 5.0))

    @property
    def imports(self) -> list[str]:
        return list(self.config.get("imports", []))

    @property
    def store_url(self) -> str:
        return os.environ.get("JOBMANAGER_STORE") or str(self.config.get("store", "sqlite"))

    @property
    def queue_url(self) -> str:
        return os.environ.get("JOBMANAGER_QUEUE") or str(self.config.get("queue", "sqlite"))

    # -- layout ----------------------------------------------------------------------
    @property
    def store_path(self) -> Path:
        return self.path / "store.db"

    @property
    def queue_path(self) -> Path:
        return self.path / "queue.db"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def artifacts_dir(self) -> Path:
        return self.path / "artifacts"

    def task_log(self, job_id: int, seq: int | None) -> Path:
        """The log file of one task (``seq=None`` is the job's finishing step)."""
        name = "finish.log" if seq is None else f"task-{seq:04d}.log"
        return self.logs_dir / "jobs" / str(job_id) / name

    def agent_log(self, agent: str) -> Path:
        return self.logs_dir / "agents" / f"{safe_name(agent)}.log"

    def job_artifacts(self, job_id: int) -> Path:
        return self.artifacts_dir / str(job_id)

    @property
    def input_roots(self) -> list[Path]:
        """Folders job inputs (documents, notebooks, CSV sources) may come from: the home, plus
        ``input_dirs`` in jobmanager.toml and $JOBMANAGER_INPUT_DIRS (os.pathsep-separated)."""
        extra = list(self.config.get("input_dirs", []))
        extra += [p for p in os.environ.get("JOBMANAGER_INPUT_DIRS", "").split(os.pathsep) if p]
        return [self.path.resolve()] + [Path(p).expanduser().resolve() for p in extra]

    def check_input(self, path: Path) -> Path:
        """``path`` resolved, refused unless it lies under one of :attr:`input_roots`."""
        full = path.expanduser().resolve()
        if not any(full.is_relative_to(root) for root in self.input_roots):
            raise BadParams(f"{path} is outside the folders jobs may read (the home, and input_dirs in "
                            f"{CONFIG_NAME})")
        return full

    def relative(self, path: Path) -> str:
        return str(path.resolve().relative_to(self.path.resolve()))

    def inside(self, relative: str) -> Path:
        """Resolve a stored relative path, refusing anything outside the home."""
        full = (self.path / relative).resolve()
        if not full.is_relative_to(self.path.resolve()):
            raise NotFound(f"{relative!r} is outside the home folder")
        return full


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    if path is None or str(path) == "":
        path = os.environ.get("JOBMANAGER_HOME")
    if not path:
        raise HomeError("no home folder: pass --home PATH or set JOBMANAGER_HOME")
    return Path(path).expanduser().resolve()


def safe_name(name: str) -> str:
    """A file name made from a user-supplied name: no separators, no dot-dot."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return cleaned or "_"
