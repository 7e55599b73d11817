"""The home folder: where a Job Manager keeps its store, queue, logs and outputs.

One :class:`Home` owns the layout, so no other module builds paths by hand::

    home/                  0700: only the OS user owning the home may enter (files are 0600)
      jobmanager.toml      configuration (backends, imports, intervals, input folders), validated on open
      store.db             the job store (SQLite, WAL)
      queue.db             the Huey queue (SqliteHuey)
      inputs/              files jobs may read (documents, CSV sources); inputs/cases/<case>/ per case
      notebooks/           notebooks jobs may run (the default of notebook_dirs)
      logs/threads/        one append-only file per agent worker thread, for every task it runs (each
                           attempt's part of it is recorded with its outcome) and its index of starts
      logs/jobs/<job>/     the job's finishing step's finish.log; homes from before also its task logs
      logs/agents/         one log file per agent
      artifacts/<job>/     files the job wrote (PDFs, exports...)

Job inputs come only from :meth:`Home.resolve_input`: the inputs folder, ``input_dirs`` and the job's
case folders (``case_input_dirs``); notebooks only from ``notebook_dirs``. Nothing else of the home
(logs, artifacts, databases, config, the dashboard's copy) is ever an input, whatever is configured.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from jobmanager.errors import BadParams, HomeError, NotFound, PermissionDenied
from jobmanager.notify.config import NotifySettings

CONFIG_NAME = "jobmanager.toml"
INPUTS = "inputs"
NOTEBOOKS = "notebooks"
#: umask of every process that writes a home: folders 0700, files 0600
PRIVATE_UMASK = 0o077

DEFAULT_CONFIG = """\
# Job Manager configuration. Backends are chosen by URL; "sqlite" keeps them in this folder.
store = "sqlite"
queue = "sqlite"

# Modules that register job types, imported by agents and by the service.
imports = []

# Seconds between agent heartbeats; an agent silent for 3 intervals is marked lost.
heartbeat_interval = 5.0

# Agents write finished tasks in batches: at most this many milliseconds after a task ends (0: as soon
# as the writer is free), or as soon as this many tasks have gathered. An agent killed before a
# task's outcome is written runs the task again (no attempt spent).
completer_flush_ms = 50
completer_batch = 100

# While tasks are short (under prefetch_short_ms), an agent's dequeue takes up to prefetch_batch queue
# messages at once (1: one at a time) and claims their tasks in one transaction; a claimed task not
# started within prefetch_hold_ms goes back.
prefetch_batch = 8
prefetch_hold_ms = 50
prefetch_short_ms = 5

# Folders jobs may read their inputs from (documents, CSV sources), shared by every job, besides
# this home's inputs/ folder. Absolute paths, e.g. input_dirs = ["/srv/docs"].
input_dirs = []

# Folders only the jobs of one case may read (plus inputs/cases/<case>/ in this home), e.g.
# [case_input_dirs]
# "ACME-12" = ["/srv/acme"]

# Folders notebook jobs may run notebooks from (default: this home's notebooks/ folder), e.g.
# notebook_dirs = ["/srv/notebooks"]
"""

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _folder(value: str) -> str:
    if not value.strip() or "\x00" in value:
        raise ValueError(f"{value!r} is not a folder")
    if not Path(value).expanduser().is_absolute():
        raise ValueError(f"{value!r} is not an absolute folder (start it with / or ~)")
    return value


class Settings(BaseModel):
    """The schema of jobmanager.toml: unknown keys and wrong types are refused when the home opens."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    store: str = Field("sqlite", description="a string: 'sqlite' or postgresql://user@host/db")
    queue: str = Field("sqlite", description="a string: 'sqlite' or redis://host:port/db")
    imports: list[str] = Field(default_factory=list, description='a list of module names, e.g. ["mypkg.jobs"]')
    heartbeat_interval: float = Field(5.0, gt=0, le=3600,
                                      description="a number of seconds between 0 and 3600, e.g. 5.0")
    completer_flush_ms: float = Field(50.0, ge=0, le=10000,
                                      description="a number of milliseconds between 0 and 10000, e.g. 50")
    completer_batch: int = Field(100, ge=1, le=1000, description="a whole number between 1 and 1000, e.g. 100")
    prefetch_batch: int = Field(8, ge=1, le=100, description="a whole number between 1 and 100, e.g. 8")
    prefetch_hold_ms: float = Field(50.0, ge=5, le=4000,
                                    description="a number of milliseconds between 5 and 4000, e.g. 50")
    prefetch_short_ms: float = Field(5.0, gt=0, le=1000,
                                     description="a number of milliseconds above 0, at most 1000, e.g. 5")
    input_dirs: list[str] = Field(default_factory=list, description='a list of absolute folders, e.g. ["/srv/docs"]')
    case_input_dirs: dict[str, list[str]] = Field(
        default_factory=dict, description='a table of case = list of absolute folders, e.g. "ACME-12" = ["/srv/acme"]')
    notebook_dirs: list[str] | None = Field(None, description='a list of absolute folders, e.g. ["/srv/notebooks"]')
    notify: NotifySettings = Field(default_factory=NotifySettings,
                                   description="a table: [notify], [notify.smtp], [notify.webhook], [[notify.rules]]")

    @field_validator("imports")
    @classmethod
    def _modules(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _MODULE.match(name):
                raise ValueError(f"{name!r} is not a module name")
        return names

    @field_validator("input_dirs", "notebook_dirs")
    @classmethod
    def _folders(cls, folders: list[str] | None) -> list[str] | None:
        return None if folders is None else [_folder(f) for f in folders]

    @field_validator("case_input_dirs")
    @classmethod
    def _case_folders(cls, table: dict[str, list[str]]) -> dict[str, list[str]]:
        for case, folders in table.items():
            if not case.strip():
                raise ValueError("a case name is empty")
            for f in folders:
                _folder(f)
        return table


def validate_settings(raw: dict[str, Any], where: str) -> Settings:
    """``raw`` checked against :class:`Settings`; a problem is one HomeError line naming the key and ``where``."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "config"
        model, info = _field_at(err["loc"])
        if err["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields)
            raise HomeError(f"{where}: unknown key {key!r} (known keys: {known})") from None
        msg = err["msg"].removeprefix("Value error, ")
        hint = f"; expected {info.description}" if info is not None and info.description else ""
        got = err.get("input")
        if err["loc"][:2] == ("notify", "rules"):  # the rule checks name the bad value themselves
            raise HomeError(f"{where}: {key}: {msg}") from None
        if isinstance(got, dict) or str(err["loc"][-1]) in ("password", "secret"):  # never echo a secret
            raise HomeError(f"{where}: {key}: {msg}{hint}") from None
        shown = repr(got) if len(repr(got)) <= 60 else repr(got)[:57] + "..."
        raise HomeError(f"{where}: {key}: {msg} (got {type(got).__name__} {shown}){hint}") from None


def _field_at(loc: tuple[Any, ...]) -> tuple[type[BaseModel], Any]:
    """The model that holds the key at ``loc`` (Settings or a nested table) and that key's field, if any."""
    model: type[BaseModel] = Settings
    info = None
    for i, part in enumerate(loc):
        info = model.model_fields.get(str(part))
        if info is None:
            break
        sub = info.annotation
        if i + 1 < len(loc) and isinstance(sub, type) and issubclass(sub, BaseModel):
            model = sub
        else:
            break
    return model, info


def _env_settings(settings: Settings) -> tuple[float, list[str]]:
    """The heartbeat and extra input folders after $JOBMANAGER_HEARTBEAT / $JOBMANAGER_INPUT_DIRS."""
    heartbeat = settings.heartbeat_interval
    env = os.environ.get("JOBMANAGER_HEARTBEAT", "").strip()
    if env:
        try:
            value = float(env)
        except ValueError:
            raise HomeError(f"$JOBMANAGER_HEARTBEAT: {_shown(env)!r} is not a number of seconds") from None
        heartbeat = validate_settings({"heartbeat_interval": value}, "$JOBMANAGER_HEARTBEAT").heartbeat_interval
    dirs = [p for p in os.environ.get("JOBMANAGER_INPUT_DIRS", "").split(os.pathsep) if p]
    extra = validate_settings({"input_dirs": dirs}, "$JOBMANAGER_INPUT_DIRS").input_dirs
    return heartbeat, extra


def _shown(name: str) -> str:
    """A user-given file name fit for a one-line message (no control characters)."""
    return "".join(c if c.isprintable() else "?" for c in name)[:300]


@dataclass
class Home:
    """A Job Manager home folder and its (validated) configuration."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    _heartbeat: float = 5.0
    _env_input_dirs: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None) -> "Home":
        """Open an existing home (``path``, else ``$JOBMANAGER_HOME``); its configuration is checked here."""
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
        except OSError as exc:
            raise HomeError(f"{cfg}: cannot read: {exc.strerror or exc}") from None
        settings = validate_settings(config, str(cfg))
        heartbeat, env_dirs = _env_settings(settings)
        return cls(root, config, settings, heartbeat, env_dirs)

    @classmethod
    def create(cls, path: str | os.PathLike[str] | None) -> "Home":
        """Create the folder layout and a default configuration (idempotent), private to the OS user.

        Folders are made 0700 and files 0600 from the start (the store holds password hashes, the
        config may hold a database password); an existing home of ours is tightened, never loosened."""
        root = resolve_path(path)
        if root.exists() and not root.is_dir():
            raise HomeError(f"{root} exists and is not a folder")
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _tighten(root)
        cfg = root / CONFIG_NAME
        if not cfg.exists():
            create_private(cfg, DEFAULT_CONFIG)
        home = cls.open(root)
        for sub in (home.logs_dir / "jobs", home.logs_dir / "agents", home.thread_logs, home.artifacts_dir,
                    home.inputs_dir, home.path / NOTEBOOKS):
            sub.parent.mkdir(mode=0o700, exist_ok=True)
            sub.mkdir(mode=0o700, exist_ok=True)
        for p in home.private_files():
            _tighten(p)
        return home

    # -- configuration -------------------------------------------------------------
    @property
    def heartbeat_interval(self) -> float:
        return self._heartbeat

    @property
    def imports(self) -> list[str]:
        return list(self.settings.imports)

    @property
    def store_url(self) -> str:
        return os.environ.get("JOBMANAGER_STORE") or self.settings.store

    @property
    def queue_url(self) -> str:
        return os.environ.get("JOBMANAGER_QUEUE") or self.settings.queue

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

    @property
    def inputs_dir(self) -> Path:
        """The home's own inputs folder: every job may read it (except inputs/cases/ of other cases)."""
        return self.path / INPUTS

    @property
    def thread_logs(self) -> Path:
        """The worker threads' log files: every task's log is a part of one (jobmanager/engine/tasklogs.py)."""
        return self.logs_dir / "threads"

    def job_logs(self, job_id: int) -> Path:
        """The folder of a job's finishing step's log (and its task logs in layouts before thread files)."""
        return self.logs_dir / "jobs" / str(int(job_id))

    def task_log(self, job_id: int, seq: int | None) -> Path:
        """The job's finishing step's log (``seq=None``), or a task's own log file in the layout before
        per-thread files (still read for tasks that ran then; see :mod:`jobmanager.engine.tasklogs`)."""
        name = "finish.log" if seq is None else f"task-{seq:04d}.log"
        return self.logs_dir / "jobs" / str(job_id) / name

    def agent_log(self, agent: str) -> Path:
        return self.logs_dir / "agents" / f"{safe_name(agent)}.log"

    def job_artifacts(self, job_id: int) -> Path:
        return self.artifacts_dir / str(job_id)

    def private_files(self) -> list[Path]:
        """The home's files that must never be readable by other OS users (those that exist)."""
        names = [CONFIG_NAME, "store.db", "queue.db", "schedules.toml"]
        names += [f"{db}{suffix}" for db in ("store.db", "queue.db") for suffix in ("-wal", "-shm", "-journal")]
        return [self.path / n for n in names if (self.path / n).exists()]

    def loose_modes(self) -> list[str]:
        """What other OS users may read or enter in this home (for ``jobmanager doctor``)."""
        found = []
        for p in [self.path, self.logs_dir, self.artifacts_dir, *self.private_files()]:
            try:
                mode = p.stat().st_mode
            except OSError:
                continue
            if mode & 0o077:
                found.append(f"{p} is {stat.filemode(mode)} ({mode & 0o777:04o})")
        return found

    # -- job inputs ------------------------------------------------------------------
    def _store_files(self) -> list[Path]:
        """A SQLite store kept outside the home (``store = "sqlite:///path"``): never an input either."""
        from jobmanager.backends import store_at

        try:
            at = store_at(self)
        except HomeError:
            return []
        if at.path is None:
            return []
        db = at.path.expanduser().resolve()
        return [db.with_name(db.name + s) for s in ("", "-wal", "-shm", "-journal")]

    def _roots(self, folders: list[str]) -> list[Path]:
        return [Path(f).expanduser().resolve() for f in folders]

    def notebook_dirs(self) -> list[Path]:
        """Folders notebook jobs may run notebooks from (``notebook_dirs``, default ``<home>/notebooks``)."""
        configured = self.settings.notebook_dirs
        return self._roots(configured) if configured is not None else [(self.path / NOTEBOOKS).resolve()]

    def input_folders(self, case: str | None) -> tuple[list[Path], list[Path], list[Path]]:
        """(shared folders, this case's folders, other cases' folders) for a job of ``case``."""
        inputs = self.inputs_dir.resolve()
        shared = [inputs, *self._roots(self.settings.input_dirs + self._env_input_dirs)]
        own: list[Path] = []
        others: list[Path] = [inputs / "cases"]  # every case's home folder, minus the job's own below
        for name, folders in self.settings.case_input_dirs.items():
            (own if name == case else others).extend(self._roots(folders))
        if case:
            own.append(inputs / "cases" / safe_name(case))
        return shared, own, others

    @property
    def input_roots(self) -> list[Path]:
        """Folders every job may read inputs from (jobs of a case also read that case's folders)."""
        return self.input_folders(None)[0]

    def resolve_input(self, name: str | os.PathLike[str], *, case: str | None, base_dir: str | None = None,
                      kind: Literal["input", "notebook"] = "input", must_exist: bool = False) -> Path:
        """The real path of a job's input ``name``, or one refusal line naming it.

        Relative names start from ``base_dir`` (else ``<home>/inputs``, or the first notebook folder).
        Symlinks and ``..`` are resolved first, then: nothing of the home but ``inputs/`` (and
        ``notebooks/`` for notebooks) is ever readable; a folder bound to a case is read only by that
        case's jobs; inputs come from the shared folders and the job's case folders, notebooks from
        the notebook folders only.
        """
        given = _shown(str(name))
        path = Path(name).expanduser()
        if not path.is_absolute():
            default = self.notebook_dirs()[0] if kind == "notebook" else self.inputs_dir
            path = Path(base_dir).expanduser() / path if base_dir else default / path
        try:
            full = path.resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
            raise BadParams(f"{given}: not a usable path ({exc})") from None
        home = self.path.resolve()
        if kind == "notebook":
            allowed_home = (home / NOTEBOOKS,)
            roots = self.notebook_dirs()
        else:
            allowed_home = (home / INPUTS,)
            roots = []
        if (full.is_relative_to(home) and not any(full.is_relative_to(a) for a in allowed_home)) or any(
                full.is_relative_to(f) for f in self._store_files()):
            where = allowed_home[0]
            raise PermissionDenied(
                f"{given}: a Job Manager home's own files (logs, artifacts, databases, config, dashboard) "
                f"are never job inputs; put {'notebooks' if kind == 'notebook' else 'inputs'} in {where}")
        if kind == "notebook":
            if not any(full.is_relative_to(r) for r in roots):
                dirs = ", ".join(str(r) for r in roots)
                raise PermissionDenied(f"{given}: notebooks run only from the notebook folders ({dirs}; "
                                       f"notebook_dirs in {CONFIG_NAME})")
        else:
            shared, own, others = self.input_folders(case)
            if not any(full.is_relative_to(r) for r in own):
                if any(full.is_relative_to(r) for r in others):
                    raise PermissionDenied(f"{given}: is in an input folder of another case; a job of "
                                           f"{f'case {case}' if case else 'no case'} reads only the shared "
                                           f"input folders and its own case's")
                if not any(full.is_relative_to(r) for r in shared):
                    raise PermissionDenied(f"{given}: outside the folders jobs may read ({home / INPUTS}, "
                                           f"input_dirs and case_input_dirs in {CONFIG_NAME})")
        if must_exist and not full.is_file():
            raise BadParams(f"{given}: file not found" if not full.exists() else f"{given}: is not a file")
        return full

    def check_input(self, path: Path, case: str | None = None) -> Path:
        """``path`` resolved, refused unless a job of ``case`` may read it (see :meth:`resolve_input`)."""
        return self.resolve_input(path, case=case)

    def relative(self, path: Path) -> str:
        return str(path.resolve().relative_to(self.path.resolve()))

    def inside(self, relative: str) -> Path:
        """Resolve a stored relative path, refusing anything outside the home."""
        full = (self.path / relative).resolve()
        if not full.is_relative_to(self.path.resolve()):
            raise NotFound(f"{relative!r} is outside the home folder")
        return full


def private_umask() -> int:
    """Make files this process creates private (0600/0700); returns the previous umask."""
    return os.umask(PRIVATE_UMASK)


def create_private(path: Path, text: str = "") -> None:
    """Create ``path`` readable by its owner only, unless it exists. SQLite creates its -wal and -shm
    files with the database file's mode, so a database made this way stays private whatever the umask."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _tighten(path: Path) -> None:
    """Drop group/other bits of a file or folder we own (never loosens, never touches others' files)."""
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            path.chmod(stat.S_IMODE(st.st_mode) & ~0o077)
    except OSError:
        pass


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
