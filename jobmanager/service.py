"""The service: the one door to a Job Manager.

Notebooks, the CLI and the dashboard are thin clients of :class:`JobManager`.
Every method acts as the user the object was opened for and passes through
:meth:`JobManager._allow` before doing anything, so permission checks have one
place to live whatever interface called.
"""

from __future__ import annotations

import functools
import getpass
import inspect
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pandas as pd

from jobmanager import bulk as bulk_rule
from jobmanager import jobtypes, validate
from jobmanager.auth.passwords import (
    LOCKOUT_S,
    MAX_FAILURES,
    check_password_strength,
    generate_password,
    hash_password,
    needs_rehash,
    verify_password,
)
from jobmanager.auth.permissions import DEFAULT_GROUPS, PERMISSIONS, Actor, allowed, needs
from jobmanager.engine import tasklogs
from jobmanager.engine.engine import Engine
from jobmanager.engine.queue import Queue
from jobmanager.engine.states import FINISHED, JOB_STATES, AgentState, tab_states
from jobmanager.errors import BadParams, JobManagerError, NotFound, NotVisible, PermissionDenied, Timeout
from jobmanager.home import Home, safe_name
from jobmanager.models import Job, NewJob
from jobmanager.notify.channels import shown_url
from jobmanager.schedules.schedules import (
    _same_trigger,
    build_spec,
    caller_source,
    check_runs_as,
    sync_file,
    trigger_of,
)
from jobmanager.schedules.triggers import Trigger, local_label
from jobmanager.store import JobStore, open_store
from jobmanager.store.audit import AuditRecord
from jobmanager.store.limits import describe_limit

if TYPE_CHECKING:
    from jobmanager.history.activity import Activity, ActivityReader
    from jobmanager.history.process import HistoryProcess

#: the largest max_running a concurrency limit may have
MAX_LIMIT = 100_000

JOB_COLUMNS = [
    "id", "name", "type", "queue", "state", "progress", "owner", "case", "priority", "tasks_total",
    "tasks_succeeded", "tasks_failed", "tasks_cancelled", "created_at", "started_at", "finished_at", "error",
]


def _ts(value: float | None) -> pd.Timestamp | None:
    return None if value is None else pd.Timestamp(value, unit="s", tz="UTC")


SCHEDULE_COLUMNS = [
    "name", "type", "description", "enabled", "next_run", "next_run_at", "last_run_at", "last_job_id",
    "last_job_state", "runs_as", "owner", "case", "misfire", "source_kind", "source_ref", "timezone",
]


_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or set(name) - _NAME_CHARS:
        raise BadParams(f"invalid {kind} name {name!r}: 1-64 letters, digits, '.', '_', '-', '@'")
    return name


#: the one answer to every refused sign-in (unknown user, wrong password, locked, disabled), so the
#: answer never tells which accounts exist; the audit trail records the real reason
SIGN_IN_REFUSED = "wrong username or password, or the account is locked or disabled"

_DUMMY: list[str] = []


def _dummy_hash() -> str:
    """A real argon2id hash to verify against when the user's own hash must not be checked.

    Unknown users and locked accounts cost the same hash work as a real check, so the time an
    answer takes does not tell names apart either.
    """
    if not _DUMMY:
        _DUMMY.append(hash_password("not-a-password-of-anyone"))
    return _DUMMY[0]


def create_default_groups(store: JobStore) -> None:
    """admins, operators and analysts with the permissions of :data:`DEFAULT_GROUPS`."""
    existing = {g["name"] for g in store.accounts.list_groups()}
    for name, (perms, cases) in DEFAULT_GROUPS.items():
        if name in existing:
            continue
        store.accounts.create_group(name, f"default {name} group")
        for perm in perms:
            store.accounts.group_link("group_permissions", name, perm, True)
        for case in cases:
            store.accounts.group_link("group_cases", name, case, True)


class JobManager:
    """Open a home and act in it as ``user``.

    >>> jm = JobManager("~/jobs")
    >>> job_id = jm.submit("sleep", {"tasks": 3, "seconds": 1})
    >>> jm.wait(job_id).state
    'completed'
    """

    def __init__(self, home: str | os.PathLike[str] | Home | None = None, *, user: str | None = None,
                 imports: tuple[str, ...] = (), interface: str = "python") -> None:
        self.home = home if isinstance(home, Home) else Home.open(home)
        self.user = user or os.environ.get("JOBMANAGER_USER") or getpass.getuser()
        self.interface = interface
        self.initial_password: str | None = None
        self.store: JobStore = open_store(self.home)
        self._imports = tuple(self.home.imports) + tuple(imports)
        self._queue: Queue | None = None
        #: the store transitions that send queue messages go through the engine (commit, then send)
        self.engine = Engine(self.store, lambda: self.queue)
        self._history: HistoryProcess | None = None
        self._activity: ActivityReader | None = None  # keeps the hours that are over (history/activity.py)

    @classmethod
    def init(cls, home: str | os.PathLike[str] | None, *, admin: str = "admin",
             admin_password: str | None = None) -> "JobManager":
        """Create a home (or reuse one) and open it as its administrator.

        A new home gets the default groups and an administrator ``admin``; the
        password is ``admin_password``, else $JOBMANAGER_ADMIN_PASSWORD, else a
        generated one-time password left in ``jm.initial_password`` to print once.
        """
        h = Home.create(home)
        store = open_store(h, create=True)
        Queue(h).close()
        password = None
        if store.accounts.count_users() == 0:
            password = admin_password or os.environ.get("JOBMANAGER_ADMIN_PASSWORD") or generate_password()
            create_default_groups(store)
            store.accounts.create_user(admin, "Administrator", hash_password(password))
            store.accounts.group_link("group_members", "admins", admin, True)
            store.audit.record(admin, "cli", "init", "home", str(h.path), True, "home created")
        store.close()
        jm = cls(h, user=admin)
        jm.initial_password = None if admin_password else password
        return jm

    @property
    def queue(self) -> Queue:
        if self._queue is None:
            self._queue = Queue(self.home)
        return self._queue

    def close(self) -> None:
        self.store.close()
        if self._queue is not None:
            self._queue.close()
        if self._history is not None:
            self._history.close()
            self._history = None

    def __enter__(self) -> "JobManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JobManager({str(self.home.path)!r}, user={self.user!r})"

    # -- permissions -------------------------------------------------------------------------
    @property
    def actor(self) -> Actor:
        """Who is acting, read fresh from the store (a revoked grant takes effect at once)."""
        try:
            user = self.store.accounts.get_user(self.user)
        except NotFound:
            return Actor(self.user, interface=self.interface)
        if not user["active"]:
            return Actor(self.user, interface=self.interface)
        perms, cases = self.store.accounts.grants_of(self.user)
        return Actor(self.user, frozenset(perms), frozenset(cases), self.interface)

    def _allow(self, action: str, job: Job | None = None, *, target: tuple[str, str] | None = None,
               case: str | None = None, quiet: bool = False) -> Actor:
        """The single permission check every method passes through.

        Refusals raise PermissionDenied (NotVisible for a job the user may not see)
        and are written to the audit trail at once, with the reason. Every allowed
        action other than a read is written when the public method returns, with its
        outcome: "needs <permission>" when it succeeded, "failed: <reason>" when it
        then failed (bad input, wrong state), so the trail never shows a failed
        action as done (see :func:`_audited`); a submit's is written by the
        transaction that stores its jobs (:class:`_AuditedByCommit`).
        """
        actor = self.actor
        if job is not None:
            ok = allowed(actor, action, job.owner, job.case)
            target = ("job", str(job.id))
        else:
            ok = allowed(actor, action, None, case)
            if not ok and case is not None and actor.can(needs(action)):
                target = ("case", case)
        kind, name = target or (None, None)
        if not ok:
            message = self._refusal(actor, action, job, target)
            self.store.audit.record(self.user, self.interface, _public_method(), kind, name, False, message)
            raise (NotVisible if job is not None and message == _no_job(job.id) else PermissionDenied)(message)
        if not (quiet or action in ("view", "view_schedules", "view_agents")):
            _audit_when_done(self.store, (self.user, self.interface, _public_method(), kind, name),
                             f"needs {needs(action)}")
        return actor

    def _refusal(self, actor: Actor, action: str, job: Job | None, target: tuple[str, str] | None) -> str:
        try:
            user = self.store.accounts.get_user(self.user)
        except NotFound:
            return f"no Job Manager user {self.user!r}; sign in as a user an administrator created"
        if not user["active"]:
            return f"user {self.user!r} is disabled"
        what = f" {target[0]} {target[1]}" if target else ""
        need = needs(action)
        if job is not None and not actor.sees_job(job.owner, job.case):
            return _no_job(job.id)  # the same words as for a job that does not exist
        if target and target[0] == "case":
            return f"{self.user} may not {action.replace('_', ' ')} in case {target[1]}: none of your groups holds it"
        if action == "view":
            return f"{self.user} may not see jobs: needs the view_own_jobs or view_all_jobs permission"
        return f"{self.user} may not {action.replace('_', ' ')}{what}: needs the {need} permission"

    def _visible_job(self, job_id: Any, action: str = "view", *, with_tasks: bool = False,
                     quiet: bool = False) -> Job:
        """The job ``job_id`` once ``action`` on it is allowed.

        A job that does not exist and a job the user may not see both raise
        NotVisible("no job N you may see"), so a refusal never tells whether a job
        exists; only users who see every job hear plainly that it does not.
        """
        jid = validate.job_id(job_id)
        actor = self._allow("view")
        try:
            job = self.store.get_job(jid, with_tasks=with_tasks)
        except NotFound:
            scope = actor.scope()
            if scope["all"] and scope["cases"] is None:
                raise
            raise NotVisible(_no_job(jid)) from None
        self._allow(action, job, quiet=quiet)
        return job

    # -- submitting ----------------------------------------------------------------------------
    def _allow_submit(self, type: str | None, case: str | None, *, quiet: bool = False) -> jobtypes.JobType:
        """The right to submit a job of ``type`` in ``case``, the rule written once (``JobType.submit_actions``):
        submit_jobs, and the type's own ``requires`` (``run_notebooks`` for notebooks). Used by submit and
        by every schedule create, edit, enable and run-now; a schedule's runs re-check it for the user it
        runs as (:func:`jobmanager.schedules.schedules.check_runs_as`). Returns the job type. ``quiet``: no
        audit row when allowed (a caller that writes its own); a refusal is always written."""
        self._allow("submit", case=case, target=("job type", str(type)), quiet=quiet)
        jobtypes.discover(self._imports)
        jt = jobtypes.get(type)
        for action in jt.submit_actions()[1:]:
            try:
                self._allow(action, case=case, target=("job type", jt.name), quiet=True)
            except PermissionDenied:
                raise PermissionDenied(f"{self.user} may not submit {jt.name} jobs: they need the "
                                       f"{needs(action)} permission") from None
        return jt

    def job_types(self) -> list[str]:
        jobtypes.discover(self._imports)
        return jobtypes.registered()

    def submit(
        self,
        type: str,
        params: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        priority: int = 0,
        case: str | None = None,
        retries: int | None = None,
        queue: str | None = None,
        soft_limit: float | None = None,
        hard_limit: float | None = None,
        notify: Sequence[dict[str, Any] | str] | None = None,
    ) -> int:
        """Validate, plan and store a job; returns its id once it is committed.

        ``queue``, ``soft_limit`` and ``hard_limit`` (seconds per task attempt) override the job type's.
        ``notify`` adds notification rules to the type's: ``[{"on": ["failed"], "to": "mailto:ops@x.org"}]``
        or ``["failed,completed_with_errors:https://hooks.example.org/jm"]`` (see :mod:`jobmanager.notify.rules`).

        The queue messages are sent after the commit. If the queue cannot be
        written, the job is still stored and an agent's sweep re-sends them: that
        is a QueueNotReached warning, not an error (the store is the truth).
        """
        job = self._new_job(type, params, name=name, priority=priority, case=case, retries=retries, queue=queue,
                            soft_limit=soft_limit, hard_limit=hard_limit, notify=notify)
        audit = _AuditedByCommit(self.store)
        return self.engine.submit([job], audit.records, committed=audit.committed)[0]

    def submit_many(self, jobs: Sequence[dict[str, Any]]) -> list[int]:
        """Submit many jobs at once; returns their ids, in order, once all of them are committed.

        Each item holds :meth:`submit`'s arguments by name: ``{"type": "sleep", "params": {"tasks": 3},
        "name": "night run", "priority": 5}``. Every item is checked as :meth:`submit` checks it before
        anything is stored: one item refused refuses the call, with a message naming it (``job 3 of 200:
        ...``), and nothing is stored. The jobs are stored in one transaction and their queue messages sent
        in one write, so many small jobs cost far less than as many ``submit`` calls (benchmarks/README.md).
        At most :data:`jobmanager.validate.MAX_SUBMIT_MANY` jobs a call. The audit trail gets one row.
        """
        items = validate.submissions(jobs, _SUBMIT_KEYS)
        allowed: dict[tuple[str, str | None], jobtypes.JobType] = {}
        new: list[NewJob] = []
        planned = size = 0
        try:
            for i, item in enumerate(items):
                try:
                    new.append(self._new_job(**item, allowed=allowed))
                except JobManagerError as exc:
                    refused = type(exc)(f"job {i + 1} of {len(items)}: {exc}")
                    refused.item = i
                    raise refused from None
                planned += len(new[-1].tasks)
                size += len(json.dumps(new[-1].params))
                if planned > validate.MAX_SUBMIT_MANY_TASKS:
                    raise BadParams(f"jobs 1 to {i + 1} of {len(items)} plan {planned} tasks, at most "
                                    f"{validate.MAX_SUBMIT_MANY_TASKS} in one call; submit them in parts")
                if size > validate.MAX_SUBMIT_MANY_BYTES:
                    raise BadParams(f"the parameters of jobs 1 to {i + 1} of {len(items)} are {size} bytes as JSON,"
                                    f" at most {validate.MAX_SUBMIT_MANY_BYTES} in one call; submit them in parts")
        finally:  # one row, written when the call returns with its outcome (a refusal wrote its own already)
            if allowed:
                types = ", ".join(sorted({jt.name for jt in allowed.values()}))
                _audit_when_done(self.store, (self.user, self.interface, "submit_many", "job types", types[:200]),
                                 f"{len(items)} jobs")
        audit = _AuditedByCommit(self.store)
        return self.engine.submit(new, audit.records, committed=audit.committed)

    def _new_job(self, type: str, params: dict[str, Any] | None = None, *, name: str | None = None,
                 priority: int = 0, case: str | None = None, retries: int | None = None, queue: str | None = None,
                 soft_limit: float | None = None, hard_limit: float | None = None,
                 notify: Sequence[dict[str, Any] | str] | None = None,
                 allowed: dict[tuple[str, str | None], jobtypes.JobType] | None = None) -> NewJob:
        """One job checked and planned as submit and submit_many store it. ``allowed``: the job types
        already allowed by (type, case) in this call (submit_many checks each pair once, quietly: its one
        audit row is its own)."""
        validate.name(type, "job type")
        params = validate.params(params)
        name = validate.name(name, "job name", optional=True)
        priority = validate.integer(priority, "priority", *validate.INT32)
        case = validate.name(case, "case", optional=True)
        retries = validate.integer(retries, "retries", 0, validate.MAX_RETRIES, optional=True)
        jt = None if allowed is None else allowed.get((type, case))
        if jt is None:
            jt = self._allow_submit(type, case, quiet=allowed is not None)
            if allowed is not None:
                allowed[(type, case)] = jt
        options = jobtypes.options(jt, queue=queue, soft_limit=soft_limit, hard_limit=hard_limit, notify=notify)
        self._check_webhook_hosts(options.notify)
        model = jobtypes.validate(jt, params or {})
        jt.check_inputs(self.home, model, case)  # input files this job may not read: refused before storing
        tasks = jt.plan(model)
        if not tasks:
            raise BadParams(f"{type}: these parameters plan no tasks")
        return NewJob(
            type=type, name=name or f"{type} job", params=model.model_dump(mode="json"), owner=self.user,
            case=case, priority=priority, retries=jt.retries if retries is None else retries,
            has_finish=jt.has_finish(), tasks=tasks, actor=self.user, options=options,
        )

    def _check_webhook_hosts(self, rules: Sequence[dict[str, Any]]) -> None:
        """A job's webhooks go only to the hosts of [notify.webhook] allowed_hosts (when it is set)."""
        hook = self.home.settings.notify.webhook
        for rule in rules:
            if rule["to"].startswith(("http:", "https:")) and not hook.allows(rule["to"]):
                raise BadParams(f"notify: {shown_url(rule['to'])}: webhooks go only to the hosts of "
                                f"[notify.webhook] allowed_hosts ({', '.join(hook.allowed_hosts or [])})")

    # -- reading ---------------------------------------------------------------------------------
    def job(self, job_id: int) -> Job:
        """One job with its tasks."""
        return self._visible_job(job_id, with_tasks=True)

    def jobs(
        self,
        *,
        tab: str | None = None,
        state: str | None = None,
        type: str | None = None,
        owner: str | None = None,
        case: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> pd.DataFrame:
        """Jobs newest first, as a DataFrame (timestamps in UTC)."""
        type, owner, case = (validate.name(v, what, optional=True)
                             for v, what in ((type, "type"), (owner, "owner"), (case, "case")))
        tab = validate.name(tab, "tab", optional=True)
        limit = validate.integer(limit, "limit", 1, 100_000)
        offset = validate.integer(offset, "offset", 0, validate.MAX_ID)
        actor = self._allow("view")
        states: tuple[str, ...] | None = tab_states(tab) if tab else None
        if state is not None:
            if state not in JOB_STATES:
                raise BadParams(f"unknown state {state!r}: choose one of {', '.join(JOB_STATES)}")
            states = (state,) if states is None or state in states else ("__none__",)
        rows = self.store.list_jobs(states=states, type=type, owner=owner, case=case, limit=limit, offset=offset,
                                    scope=actor.scope())
        df = pd.DataFrame([j.to_dict() for j in rows], columns=[*JOB_COLUMNS])
        for col in ("created_at", "started_at", "finished_at"):
            df[col] = pd.to_datetime(df[col], unit="s", utc=True)
        return df

    def live(self, job_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Progress and current agents of the jobs on a grid page (only those you may see)."""
        ids = validate.job_ids(job_ids, limit=10_000)
        actor = self._allow("view")
        info = self.store.running_info(ids)
        jobs = {j: self.store.get_job(j) for j in info}
        return {j: v for j, v in info.items() if actor.sees_job(jobs[j].owner, jobs[j].case)}

    def warning_counts(self, job_ids: list[int]) -> dict[int, int]:
        """How many tasks of each job (of a grid page) ended with a warning; only jobs you may see, only >0."""
        ids = validate.job_ids(job_ids, limit=10_000)
        actor = self._allow("view")
        counts = self.store.warning_counts(ids)
        jobs = {j: self.store.get_job(j) for j in counts}
        return {j: n for j, n in counts.items() if actor.sees_job(jobs[j].owner, jobs[j].case)}

    def agent_throughput(self, minutes: int = 60, buckets: int = 12) -> dict[str, list[int]]:
        """Tasks each agent finished per time bucket over the last ``minutes`` (for the Agents sparkline)."""
        minutes = validate.integer(minutes, "minutes", 1, 7 * 24 * 60)
        buckets = validate.integer(buckets, "buckets", 1, 1000)
        self._allow("view_agents")
        return self.store.agent_throughput(time.time() - minutes * 60, minutes * 60 / buckets, buckets)

    def agent_log(self, name: str, lines: int = 200) -> str:
        """The last ``lines`` of an agent's own log."""
        validate.name(name, "agent name")
        lines = validate.integer(lines, "lines", 1, 1_000_000)
        self._allow("view_agents")
        row = next((a for a in self.store.list_agents() if a["name"] == name), None)
        if row is None:
            raise NotFound(f"no agent {name!r}")
        path = self.home.inside(row["log_path"] or "")
        if not path.is_file():
            raise NotFound(f"agent {name} has no log file yet")
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def notifications(self, job_id: int) -> pd.DataFrame:
        """The notifications of a job (one row per event and target): trigger, target, state (pending, sent,
        failed), attempts, the last error and when it was delivered. Webhook URLs are shortened to their
        host for anyone but administrators (their paths often hold tokens)."""
        job = self.job(job_id)
        admin = allowed(self.actor, "admin")
        rows = []
        for n in self.store.outbox.notifications(job.id):
            target = n["target"] if admin or n["channel"] != "webhook" else shown_url(n["target"])
            rows.append({**n, "target": target, "created_at": _ts(n["created_at"]),
                         "delivered_at": _ts(n["delivered_at"]), "next_at": _ts(n["next_at"])})
        return pd.DataFrame(rows, columns=["id", "event_id", "trigger", "channel", "target", "state", "attempts",
                                           "last_error", "created_at", "delivered_at", "next_at", "sender"])

    def tasks(self, job_id: int) -> pd.DataFrame:
        job = self.job(job_id)
        df = pd.DataFrame([t.to_dict() for t in job.tasks])
        for col in ("queued_at", "started_at", "finished_at"):
            df[col] = pd.to_datetime(df[col], unit="s", utc=True)
        return df

    def events(self, job_id: int) -> pd.DataFrame:
        job = self.job(job_id)
        df = pd.DataFrame(self.store.events(job.id))
        if not df.empty:
            df["at"] = pd.to_datetime(df["at"], unit="s", utc=True)
        return df

    def agents(self) -> pd.DataFrame:
        """Agents with a derived ``status``: busy, idle, lost, offline."""
        self._allow("view_agents")
        now = time.time()
        rows = []
        for a in self.store.list_agents():
            age = now - a["heartbeat_at"]
            status = a["state"]
            if status == AgentState.ONLINE:
                if age > 3 * a["interval"]:
                    status = AgentState.LOST
                else:
                    status = "busy" if a["current_tasks"] else "idle"
            rows.append({
                "name": a["name"], "status": status, "host": a["host"], "pid": a["pid"],
                "workers": a["workers"], "busy": len(a["current_tasks"]), "worker_type": a["worker_type"],
                "heartbeat_age_s": round(age, 1), "current_tasks": a["current_tasks"], "done": a["done"],
                "failed": a["failed"], "cpu_percent": a["cpu_percent"], "rss_mb":
                None if a["rss_bytes"] is None else round(a["rss_bytes"] / 2**20, 1),
                "started_at": _ts(a["started_at"]), "uptime_s": round((a["stopped_at"] or now) - a["started_at"]),
                "version": a["version"], "log_path": a["log_path"],
            })
        return pd.DataFrame(rows, columns=[
            "name", "status", "host", "pid", "workers", "busy", "worker_type", "heartbeat_age_s",
            "current_tasks", "done", "failed", "cpu_percent", "rss_mb", "started_at", "uptime_s", "version",
            "log_path",
        ])

    def metrics(self, *, process: bool = True) -> tuple[Any, Any]:
        """Prometheus collectors over the whole store (``jobmanager metrics``), counting from now.

        Returns ``(registry, collector)`` (:mod:`jobmanager.metrics`). The numbers span every job and
        agent, so this needs the view_agents permission.
        """
        self._allow("view_agents")
        from jobmanager import metrics

        reg = metrics.new_registry(process=process)
        return reg, metrics.add_store(reg, self.store)

    def log(self, job_id: int, task: int | None = None) -> str:
        """A task's log (all its attempts), or the job's: every task's in order, then the finishing step's."""
        return b"".join(self.log_chunks(job_id, task)).decode("utf-8", errors="replace")

    def log_chunks(self, job_id: int, task: int | None = None) -> Iterator[bytes]:
        """The bytes of :meth:`log`, one part at a time (for a download that never holds a big log whole).
        The checks run at the call, before the first part is asked for."""
        task = None if task is None else validate.job_id(task, "task number")
        job = self.job(job_id)
        self._allow("download_log", job)
        if task is not None and not any(t.seq == task for t in job.tasks):
            raise NotFound(f"job {job_id} has no task {task}")
        parts = self._log_parts(job, task)
        return (data for data in (p.read() for p in parts) if data)

    def _log_parts(self, job: Job, task: int | None = None) -> list[tasklogs.Part]:
        """Where the job's (or one task's) log is: parts of the worker threads' files (and of the job's
        folder, for tasks that ran in earlier layouts), in reading order."""
        old = [(t.seq, self.home.task_log(job.id, t.seq)) for t in job.tasks]
        parts = list(tasklogs.task_parts(self.home.job_logs(job.id), self.home.thread_logs, job.id, old,
                                         job.tasks, task))
        if task is None:
            parts.append(tasklogs.Part(self.home.task_log(job.id, None)))
        return parts

    def log_tail(self, job_id: int, lines: int = 200) -> str:
        """The last ``lines`` of the job's log, for a screen that refreshes (allowed reads are not audited;
        downloads are)."""
        lines = validate.integer(lines, "lines", 1, 1_000_000)
        job = self.job(job_id)
        self._allow("download_log", job, quiet=True)
        kept: list[str] = []
        for part in reversed(self._log_parts(job)):  # from the end: a log of tens of MB is never read whole
            kept[:0] = part.read(tail=tasklogs.TAIL_BYTES).decode("utf-8", errors="replace").splitlines()
            if len(kept) >= lines:
                break
        return "\n".join(kept[-lines:])

    def artifacts(self, job_id: int) -> pd.DataFrame:
        job = self.job(job_id)
        return pd.DataFrame(self.store.artifacts(job.id),
                            columns=["id", "job_id", "task_id", "name", "path", "media_type", "size", "created_at"])

    def open_artifact(self, job_id: int, name: str) -> Path:
        """The file of one recorded artifact, to download or open.

        ``name`` must be a plain file name recorded for the job: anything with a
        separator, dot-dot or an absolute path is refused before any file is
        touched, and the stored path must stay inside the home.
        """
        validate.name(name, "artifact name")
        job = self.job(job_id)
        self._allow("download_output", job)
        if not isinstance(name, str) or not name or safe_name(name) != name or Path(name).is_absolute():
            raise BadParams(f"artifact name {name!r} is not a plain file name")
        rows = self.store.artifacts(job.id)
        row = next((a for a in rows if a["name"] == name), None)
        if row is None:
            known = ", ".join(a["name"] for a in rows) or "none"
            raise NotFound(f"job {job.id} has no artifact {name!r} (artifacts: {known})")
        path = self.home.inside(row["path"])
        if not path.is_file():
            raise NotFound(f"artifact {name!r} of job {job.id} is recorded but its file is gone ({row['path']})")
        return path

    def main_artifact(self, job_id: int) -> str | None:
        """The name of the job's main output: what its finishing step wrote, else its only artifact."""
        rows = self.store.artifacts(self.job(job_id).id)
        for candidates in ([a for a in rows if a["task_id"] is None], rows):
            if len(candidates) == 1:
                return str(candidates[0]["name"])
        return None

    def wait(self, job_id: int, timeout: float | None = None, poll: float = 0.05,
             on_poll: Callable[[Job], object] | None = None) -> Job:
        """Block until the job is finished; raises Timeout after ``timeout`` seconds.

        ``on_poll`` is called with the job (without its tasks) at every poll, e.g. to draw progress."""
        timeout = validate.timeout(timeout)
        poll = validate.number(poll, "poll", 0.001, 60)
        deadline = None if timeout is None else time.monotonic() + timeout
        job_id = self.job(job_id).id  # exists, and you may see it
        while True:
            job = self.store.get_job(job_id)  # cheap: no task rows while polling
            if on_poll is not None:
                on_poll(job)
            if job.state in FINISHED:
                return self.job(job_id)
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"job {job_id} is still {job.state} after {timeout:g} s")
            time.sleep(poll)

    # -- actions ---------------------------------------------------------------------------------
    def pause(self, job_id: int) -> None:
        """No new task of the job starts; running ones finish."""
        job_id = self._visible_job(job_id, "manage").id
        self.engine.pause(job_id, self.user)

    def resume(self, job_id: int) -> None:
        job_id = self._visible_job(job_id, "manage").id
        self.engine.resume(job_id, self.user)

    def cancel(self, job_id: int) -> None:
        """Queued tasks never run; running tasks are asked to stop (``ctx.cancelled()``)."""
        job_id = self._visible_job(job_id, "manage").id
        self.engine.cancel(job_id, self.user)

    def retry(self, job_id: int, task: int | None = None) -> None:
        """Re-queue the failed tasks of a finished job, or the one task ``task``."""
        task = None if task is None else validate.job_id(task, "task number")
        job_id = self._visible_job(job_id, "retry").id
        self.engine.retry(job_id, self.user, task)

    def set_priority(self, job_id: int, priority: int) -> None:
        """Higher runs first; applies to the job's tasks that have not started."""
        priority = validate.integer(priority, "priority", *validate.INT32)
        job_id = self._visible_job(job_id, "manage").id
        self.engine.set_priority(job_id, priority, self.user)

    # -- bulk actions: every job matching the grid's filters (the rule: jobmanager/bulk.py) ---------------
    def _matching(self, tab: Any, action: Any, filters: Any, limit: int) -> tuple[str, dict[str, Any], list[int]]:
        tab = bulk_rule.check_tab(tab)
        checked = bulk_rule.check_filters(filters)
        wanted = checked if action is None else bulk_rule.narrowed(bulk_rule.check_action(action), tab, checked)
        scope = self._allow("view").scope()
        from jobmanager.history.grid import matching_ids
        from jobmanager.history.history import store_file

        return tab, checked, matching_ids(store_file(self.home), tab, wanted, scope=scope, limit=limit)

    def matching_jobs(self, tab: str, action: str | None = None, **filters: Any) -> list[int]:
        """The ids of the jobs you may see that the grid shows for ``tab`` and ``filters``, lowest first, at
        most :data:`jobmanager.bulk.MAX_BULK` + 1 of them; with ``action`` (retry, cancel, pause, resume),
        only those in the states it applies to."""
        return self._matching(tab, action, filters, bulk_rule.MAX_BULK + 1)[2]

    def count_matching(self, tab: str, action: str, **filters: Any) -> int:
        """How many jobs a :meth:`bulk` ``action`` with these filters would act on (the N of "Retry all
        failed (N)"), counted as the grid counts its pages."""
        tab = bulk_rule.check_tab(tab)
        wanted = bulk_rule.narrowed(bulk_rule.check_action(action), tab, bulk_rule.check_filters(filters))
        return int(self.grid(tab=tab, page=1, page_size=1, **wanted)[1])

    def bulk(self, action: str, tab: str, filters: dict[str, Any] | None = None) -> bulk_rule.BulkResult:
        """Retry, cancel, pause or resume every job matching ``filters`` on ``tab`` (as the grid filters it).

        Each job is checked as the single-job call checks it; a job that fails (it moved on meanwhile) is
        named in the result and the others go on. More than :data:`jobmanager.bulk.MAX_BULK` matching jobs
        refuse the whole call. One audit row names the action, the filter and the counts
        (see :mod:`jobmanager.bulk`)."""
        spec = bulk_rule.check_action(action)
        tab = bulk_rule.check_tab(tab)
        checked = bulk_rule.check_filters(filters)
        what = bulk_rule.describe(tab, checked)
        self._allow(spec.check, target=("jobs", what), quiet=True)  # no right at all: one refusal, not 1,000
        ids = self._matching(tab, action, checked, bulk_rule.MAX_BULK + 1)[2]
        audit = f"bulk_{spec.name}"
        if len(ids) > bulk_rule.MAX_BULK:
            message = bulk_rule.too_many(self.count_matching(tab, action, **checked))
            self.store.audit.record(self.user, self.interface, audit, "jobs", what, True, f"failed: {message}")
            raise BadParams(message)
        result = bulk_rule.BulkResult(spec.name, what, len(ids))
        for job_id in ids:
            try:
                job = self._visible_job(job_id, spec.check, quiet=True)  # as the single call checks it
                getattr(self.engine, spec.name)(job.id, self.user)
            except JobManagerError as exc:
                result.errors.append(f"job {job_id}: {exc}")
            else:
                result.done += 1
                result.job_ids.append(job_id)
        failed = f"; {len(result.errors)} failed, first: {result.errors[0]}" if result.errors else ""
        self.store.audit.record(self.user, self.interface, audit, "jobs", what, True,
                         f"{spec.name} {result.done} of {result.matched} matching jobs{failed}"[:500])
        return result

    def stop_agent(self, name: str) -> None:
        """Ask an agent to stop gracefully (it finishes its running tasks)."""
        validate.name(name, "agent name")
        self._allow("manage_agents", target=("agent", name))
        self.store.request_agent(name, "stop", self.user)

    # -- queues and concurrency limits ----------------------------------------------------------
    def set_limit(self, name: str, *, type: str | None = None, queue: str | None = None, per_case: bool = False,
                  max_running: int) -> None:
        """At most ``max_running`` running tasks of the jobs of ``type`` in ``queue`` (None: any), counted
        per case if ``per_case``, across all agents; tasks over it wait queued and start as slots free."""
        name = validate.name(name, "limit name", max_len=64)
        type = validate.name(type, "--type", optional=True)
        queue = None if queue is None else validate.queue_name(queue, "--queue")
        if not isinstance(per_case, bool):
            raise BadParams(f"per_case must be true or false, not {validate.shown(per_case)}")
        max_running = validate.integer(max_running, "--max", 0, MAX_LIMIT)
        self._allow("manage_agents", target=("limit", name))
        if type is not None:  # a typo would make a limit that never matches
            jobtypes.discover(self._imports)
            type = jobtypes.get(type).name
        self.engine.set_limit(name, type=type, queue=queue, per_case=per_case, max_running=max_running,
                              actor=self.user)

    def delete_limit(self, name: str) -> None:
        """Delete a limit; the tasks it held back start."""
        name = validate.name(name, "limit name", max_len=64)
        self._allow("manage_agents", target=("limit", name))
        self.engine.delete_limit(name, self.user)

    def limits(self) -> pd.DataFrame:
        """The concurrency limits, with the tasks each matches running and waiting now."""
        self._allow("view_agents")
        return pd.DataFrame(self.store.limits.list_all(), columns=[
            "name", "type", "queue", "per_case", "max_running", "running", "waiting", "created_at", "updated_at"])

    def queues(self) -> pd.DataFrame:
        """Each queue with work or an online agent: depth (runnable tasks), running, waiting, the agents
        serving it and the limits that apply."""
        self._allow("view_agents")
        rows = {r["queue"]: {**r, "agents": []} for r in self.store.queue_summary()}
        for a in self.store.list_agents():
            if a["state"] == AgentState.ONLINE:
                for q in a["queues"]:
                    rows.setdefault(q, {"queue": q, "depth": 0, "running": 0, "waiting": 0, "agents": []})
                    rows[q]["agents"].append(a["name"])
        limits = self.store.limits.list_all()
        for r in rows.values():
            r["agents"] = ",".join(r["agents"])
            r["limits"] = "; ".join(
                f"{lim['name']}: {describe_limit(lim['type'], lim['queue'], lim['per_case'], lim['max_running'])}"
                for lim in limits if lim["queue"] in (None, r["queue"]))
        return pd.DataFrame([rows[q] for q in sorted(rows)],
                            columns=["queue", "depth", "running", "waiting", "agents", "limits"])

    # -- history: DuckDB over the store (in its own process); grid pages by the store's indexes ---------------
    @property
    def _hist(self) -> Any:
        """The history, opened on first use (needs the ``history`` extra), in a child process:
        DuckDB's own SQLite must never share a process with the store's connections
        (see :mod:`jobmanager.history.process`)."""
        if self._history is None:
            from jobmanager.history.process import HistoryProcess

            self._history = HistoryProcess(str(self.home.path))
        return self._history

    def _history_scope(self) -> dict[str, Any]:
        """What SQL and stats may read: the jobs you may see (:meth:`Actor.scope`), and agents if you may."""
        actor = self._allow("view")
        return {**actor.scope(), "agents": actor.can("view_agents")}

    def history(self, **filters: Any) -> pd.DataFrame:
        """The jobs you may see matching ``filters`` (tab, state, type, case, owner, agent, since, until,
        time_field, search), with readable columns, newest first."""
        scope = self._allow("view").scope()
        return self._hist.jobs(scope=scope, **filters)

    def sql(self, query: str, params: list[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        """One SELECT over the views jobs, tasks, events, agents, artifacts, holding only the rows you may
        see; it runs in a sandbox with nothing else in it (:mod:`jobmanager.history.sandbox`). A refused
        query is written to the audit trail with the reason."""
        scope = self._history_scope()
        try:
            return self._hist.sql(query, params, scope=scope)
        except BadParams as exc:
            text = query if isinstance(query, str) else repr(query)
            self.store.audit.record(self.user, self.interface, "sql", "query", text[:500], False, str(exc)[:500])
            raise

    def stats(self, by: str | tuple[str, ...] = "type", period: str = "day",
              since: Any = None) -> dict[str, pd.DataFrame]:
        """Throughput, failure rate, duration and queue-wait percentiles by job type or by agent, over the
        jobs you may see."""
        scope = self._history_scope()
        return self._hist.stats(by=by, period=period, since=since, scope=scope)

    def grid(self, tab: str = "completed", sort: str = "created_at", desc: bool = True, page: int = 1,
             page_size: int = 100, **filters: Any) -> tuple[pd.DataFrame, int]:
        """One page of the dashboard grid and the number of matching jobs you may see."""
        scope = self._allow("view").scope()
        from jobmanager.history.grid import grid_page
        from jobmanager.history.history import store_file

        return grid_page(store_file(self.home), tab, filters, sort, desc, page, page_size, scope=scope)

    def activity(self, days: int = 7) -> Activity:
        """Tasks processed and failed per minute (last hour) and per hour (last ``days`` days) by job type and
        agent, queue depth and wait, over the jobs you may see (the dashboard's activity view)."""
        from jobmanager.history.activity import MAX_DAYS, ActivityReader
        from jobmanager.history.history import store_file

        days = validate.integer(days, "days", 1, MAX_DAYS)
        actor = self._allow("view")
        if self._activity is None:
            self._activity = ActivityReader(store_file(self.home))
        activity = self._activity.read(actor.scope(), days)
        # which agents ran the work is agent information: only for users who may see agents
        return activity if actor.can("view_agents") else activity.without_agents()

    def export(self, path: str | os.PathLike[str], format: str = "csv", **filters: Any) -> Path:
        """Write the jobs you may see matching ``filters``, with the grid's columns, to csv/parquet/excel."""
        path = validate.path(path, "export path")
        scope = self._allow("view").scope()
        from jobmanager.history.export import write_frame

        if Path(path).expanduser().resolve().is_relative_to(self.home.path.resolve()):
            raise BadParams(f"{path} is inside the home folder: write exports somewhere else (the home holds the "
                            "store, the queue, logs and outputs)")
        return write_frame(self._hist.grid_rows(scope=scope, **filters), path, format)

    def demo_data(self, jobs: int = 1000, days: float = 30, seed: int = 0) -> dict[str, int]:
        """Fill this home's store with a synthetic history (admins only: it writes straight to the store)."""
        jobs = validate.integer(jobs, "jobs", 1, 10_000_000)
        days = validate.number(days, "days", 0.01, 3650)
        seed = validate.integer(seed, "seed", -(2**63), 2**63 - 1)
        self._allow("admin")
        from jobmanager.history import demodata

        return demodata.generate(self.home, jobs=jobs, days=days, seed=seed)

    # -- schedules ---------------------------------------------------------------------------------------
    # Who a schedule runs as: the user who last created, replaced, edited or enabled it (kept in the schedule's
    # ``owner``, shown as ``runs_as``). Its runs act with that user's rights, re-checked at every run and at "Run
    # now", and the jobs it creates are theirs. So editing someone else's schedule makes it yours: it can never do
    # more than you may. Each of these changes (and Run now) also needs the submit rights for the schedule's job
    # type (:meth:`JobManager._allow_submit`); disabling and deleting, which start nothing, need manage_schedules
    # only.
    def schedule(
        self, name: str, type: str, params: dict[str, Any] | None = None, *, cron: str | None = None,
        every: str | None = None, at: str | datetime | None = None, tz: str = "UTC", misfire: str = "run_once",
        case: str | None = None, priority: int = 0, enabled: bool = True,
    ) -> dict[str, Any]:
        """Declare a schedule in code: creates it, or updates the one of that name (re-running a cell is safe).

        Exactly one trigger: ``cron="0 2 * * 1-5"``, ``every="15m"`` or ``at="2026-12-01T09:00"``.
        Records the calling notebook or file and line as where it is configured.
        """
        kind, ref = caller_source()
        return self._save_schedule(
            dict(name=name, type=type, params=params, cron=cron, every=every, at=at, tz=tz, misfire=misfire,
                 case=case, priority=priority, enabled=enabled), kind, ref, create_only=False,
        )

    def create_schedule(self, name: str, type: str, params: dict[str, Any] | None = None, *,
                        source: str = "cli", **trigger: Any) -> dict[str, Any]:
        """Create a schedule from the CLI or the dashboard form; an existing name is refused."""
        return self._save_schedule(dict(name=name, type=type, params=params, **trigger), source,
                                   source if source == "dashboard" else None, create_only=True)

    def edit_schedule(self, name: str, **changes: Any) -> dict[str, Any]:
        """Change some fields (type, params, cron/every/at, tz, misfire, case, priority, enabled, options)."""
        old = self.store.schedules.get(validate.name(name, "schedule name"))
        self._allow("manage_schedules", case=old["case_id"], target=("schedule", name))
        merged: dict[str, Any] = {
            "name": name, "type": old["type"], "params": old["params"], "tz": old["timezone"],
            "misfire": old["misfire"], "case": old["case_id"], "priority": old["priority"], "enabled": old["enabled"],
            "options": old["options"],
        }
        if not {"cron", "every", "at"} & {k for k, v in changes.items() if v is not None}:
            key = {"cron": "cron", "interval": "every", "once": "at"}[old["trigger_kind"]]
            merged[key] = old["trigger_value"]
        unknown = set(changes) - {*merged, "cron", "every", "at"}
        if unknown:
            raise BadParams(f"cannot edit {', '.join(sorted(unknown))} of a schedule")
        if isinstance(changes.get("options"), dict):  # options change one by one; None drops an override
            changes["options"] = {**old["options"], **changes["options"]}
        merged.update({k: v for k, v in changes.items() if v is not None})
        if merged.get("case") != old["case_id"]:  # moving it into another case needs that case too
            self._allow("manage_schedules", case=merged.get("case"), target=("schedule", name))
        self._allow_submit(merged["type"], merged.get("case"))
        spec = build_spec(owner=self.user, source_kind=old["source_kind"], source_ref=old["source_ref"],
                          imports=self._imports, **merged)
        if merged.get("every") == old["trigger_value"] and old["trigger_kind"] == "interval":
            spec["anchor"], spec["next_run_at"] = old["anchor"], old["next_run_at"]
        self.store.schedules.save(spec, actor=self.user)
        return self.store.schedules.get(name)

    def _save_schedule(self, args: dict[str, Any], kind: str, ref: str | None, *, create_only: bool) -> dict[str, Any]:
        if args.get("name") not in (None, ""):  # (build_spec says what an empty name lacks)
            validate.name(args["name"], "schedule name")
        self._allow("manage_schedules", case=args.get("case"), target=("schedule", str(args.get("name"))))
        old = None
        if not create_only:
            try:
                old = self.store.schedules.get(str(args.get("name")))
            except NotFound:
                old = None
        if old is not None:  # replacing a schedule needs the right to its present case too
            self._allow("manage_schedules", case=old["case_id"], target=("schedule", old["name"]))
        self._allow_submit(args.get("type"), args.get("case"))
        spec = build_spec(owner=self.user, source_kind=kind, source_ref=ref, imports=self._imports, **args)
        if old is not None and _same_trigger(old, spec):  # re-running the cell keeps the planned run
            spec["anchor"], spec["next_run_at"] = old["anchor"], old["next_run_at"]
        self.store.schedules.save(spec, actor=self.user, create_only=create_only)
        return self.store.schedules.get(spec["name"])

    def get_schedule(self, name: str) -> dict[str, Any]:
        row = self.store.schedules.get(validate.name(name, "schedule name"))
        self._allow("view_schedules", case=row["case_id"], target=("schedule", name))
        row["description"] = trigger_of(row).describe()
        row["runs_as"] = row["owner"]
        row["runs"] = self.store.schedules.runs(name)
        return row

    def schedules(self) -> pd.DataFrame:
        """Every schedule with its next run (in its own zone), last run and result, and where it is configured."""
        actor = self._allow("view_schedules")
        rows = []
        for s in self.store.schedules.list_all():
            if not actor.sees_case(s["case_id"]):
                continue
            nxt = s["next_run_at"]
            rows.append({
                **s, "case": s["case_id"], "runs_as": s["owner"], "description": trigger_of(s).describe(),
                "next_run": "" if nxt is None or not s["enabled"] else
                local_label(nxt, s["timezone"]),
            })
        df = pd.DataFrame(rows, columns=SCHEDULE_COLUMNS)
        for col in ("next_run_at", "last_run_at"):
            df[col] = pd.to_datetime(df[col], unit="s", utc=True)
        return df

    def preview_schedule(self, *, cron: str | None = None, every: str | None = None, at: str | None = None,
                         tz: str = "UTC", count: int = 5) -> dict[str, Any]:
        """What a trigger would do, before it is saved: its description and next ``count`` runs (UTC epoch
        seconds and in its own zone). Bad input raises BadParams with the line ``schedule add`` would print."""
        self._allow("view_schedules")
        now = time.time()
        trigger = Trigger.parse(cron=cron, every=every, at=at, tz=tz, now=now)
        runs = trigger.upcoming(max(0, min(int(count), 50)), now)
        return {"description": trigger.describe(), "runs": runs, "labels": [local_label(t, tz) for t in runs]}

    def _manage(self, name: str) -> dict[str, Any]:
        row = self.store.schedules.get(validate.name(name, "schedule name"))
        self._allow("manage_schedules", case=row["case_id"], target=("schedule", name))
        return row

    def enable_schedule(self, name: str) -> None:
        """Enabling starts runs again, so it is a change like an edit: the schedule then runs as you."""
        row = self._manage(name)
        self._allow_submit(row["type"], row["case_id"])
        nxt = trigger_of(row).next_after(time.time())
        self.store.schedules.update(name, {"enabled": 1, "next_run_at": nxt, "owner": self.user}, actor=self.user,
                                   message=f"enabled (runs as {self.user})")

    def disable_schedule(self, name: str) -> None:
        self._manage(name)
        self.store.schedules.update(name, {"enabled": 0}, actor=self.user, message="disabled")

    def delete_schedule(self, name: str) -> None:
        self._manage(name)
        self.store.schedules.delete(name, actor=self.user)

    def run_schedule_now(self, name: str) -> int:
        """Submit the schedule's job now; its next planned run stays as it was.

        You need the submit rights for its type; the job runs as (and belongs to) the user the schedule
        runs as, whose rights are checked again now, as at every scheduled run."""
        row = self._manage(name)
        jt = self._allow_submit(row["type"], row["case_id"])
        try:
            check_runs_as(self.store, row)
        except PermissionDenied as exc:
            self.store.audit.record(self.user, self.interface, "run_schedule_now", "schedule", name, False, str(exc))
            raise
        tasks = jt.plan(jobtypes.validate(jt, row["params"]))
        return self.engine.run_schedule_now(row, tasks=tasks, has_finish=jt.has_finish(), retries=jt.retries,
                                            actor=self.user, options=jobtypes.options(jt, **row["options"]))

    def sync_schedules_file(self) -> dict[str, int]:
        """Load ``schedules.toml`` from the home and make the store match it (all or nothing)."""
        self._allow("manage_schedules")
        return sync_file(self.store, self.home, self.user, self._imports,
                         check=lambda spec: self._allow_submit(spec["type"], spec["case_id"]))

    # -- users, groups, cases and the audit trail --------------------------------------------------------

    # -- sign-in -------------------------------------------------------------------------------
    @classmethod
    def sign_in(cls, home: Any, username: str, password: str, *, interface: str = "dashboard",
                **kwargs: Any) -> JobManager:
        """A JobManager acting as ``username`` once the password checks out.

        The attempt is counted in the store before the password is checked
        (``store.accounts.claim_sign_in``), so at most MAX_FAILURES guesses are ever checked before
        the account locks for LOCKOUT_S seconds, however many arrive at once. Every refusal gets
        the same message (:data:`SIGN_IN_REFUSED`) and the same hash work; the audit trail keeps
        the real reason. An old scrypt hash is replaced by argon2id on a successful sign-in.
        """
        jm = cls(home, user=username, interface=interface, **kwargs)
        store, now = jm.store, time.time()
        try:
            user = store.accounts.get_user(username)
        except NotFound:
            user = None
        attempt = store.accounts.claim_sign_in(username, now, MAX_FAILURES, LOCKOUT_S) if user is not None else None
        if user is None or attempt is None:  # unknown or locked: the user's hash is never checked, the work the same
            verify_password(password, _dummy_hash())
            reason = "unknown user" if user is None else "locked"
        elif not verify_password(password, user["password_hash"]):
            reason = "wrong password" + (f"; locked for {round(LOCKOUT_S / 60)} min after {attempt} failures"
                                         if attempt >= MAX_FAILURES else f" (attempt {attempt} of {MAX_FAILURES})")
        elif not user["active"]:
            reason = "disabled"
        else:
            fields: dict[str, Any] = {"failures": 0, "locked_until": None, "last_login_at": now}
            if needs_rehash(user["password_hash"]):
                fields["password_hash"] = hash_password(password, check_strength=False)
            store.accounts.update_user(username, **fields)
            store.audit.record(username, interface, "sign_in", "user", username, True,
                        "password rehashed with argon2id" if "password_hash" in fields else None)
            return jm
        store.audit.record(username, interface, "sign_in", "user", username, False, reason)
        jm.close()  # a refused attempt keeps no connection open
        raise PermissionDenied(SIGN_IN_REFUSED)

    # -- users -------------------------------------------------------------------------------------
    def add_user(self, username: str, password: str | None = None, *, display_name: str | None = None,
                 groups: tuple[str, ...] | list[str] = ()) -> str | None:
        """Create a user; returns the generated password when none was given (show it once)."""
        self._allow("admin", target=("user", str(username)))
        _check_name("user", username)
        generated = None
        if password is None:
            password = generated = generate_password()
        check_password_strength(password)
        for group in groups:
            if group not in {g["name"] for g in self.store.accounts.list_groups()}:
                raise NotFound(f"no group {group!r}")
        self.store.accounts.create_user(username, display_name or username, hash_password(password))
        for group in groups:
            self.store.accounts.group_link("group_members", group, username, True)
        return generated

    def set_password(self, username: str, password: str) -> None:
        """Administrators may set anyone's password; every user may set their own."""
        if username != self.user:
            self._allow("admin", target=("user", username))
        else:
            me = self.store.accounts.get_user(username)
            if not me["active"]:
                raise PermissionDenied(f"user {username!r} is disabled")
            self.store.audit.record(self.user, self.interface, "passwd", "user", username, True)
        self.store.accounts.get_user(username)
        self.store.accounts.update_user(username, password_hash=hash_password(password), failures=0, locked_until=None)

    def disable_user(self, username: str) -> None:
        self._allow("admin", target=("user", username))
        self.store.accounts.update_user(username, active=0)

    def enable_user(self, username: str) -> None:
        self._allow("admin", target=("user", username))
        self.store.accounts.update_user(username, active=1, failures=0, locked_until=None)

    def users(self) -> pd.DataFrame:
        self._allow("admin", target=("users", "*"))
        df = pd.DataFrame(self.store.accounts.list_users(), columns=["username", "display_name", "active", "groups",
                                                             "locked_until", "last_login_at", "created_at"])
        for col in ("locked_until", "last_login_at", "created_at"):
            df[col] = pd.to_datetime(df[col], unit="s", utc=True)
        return df

    # -- groups --------------------------------------------------------------------------------------
    def add_group(self, name: str, description: str = "") -> None:
        self._allow("admin", target=("group", str(name)))
        self.store.accounts.create_group(_check_name("group", name), description)

    def grant(self, group: str, permission: str) -> None:
        self._allow("admin", target=("group", group))
        if permission not in PERMISSIONS:
            raise BadParams(f"unknown permission {permission!r}; the list: {', '.join(PERMISSIONS)}")
        self.store.accounts.group_link("group_permissions", group, permission, True)

    def revoke(self, group: str, permission: str) -> None:
        self._allow("admin", target=("group", group))
        if permission not in PERMISSIONS:
            raise BadParams(f"unknown permission {permission!r}; the list: {', '.join(PERMISSIONS)}")
        self.store.accounts.group_link("group_permissions", group, permission, False)

    def add_to_group(self, group: str, username: str) -> None:
        self._allow("admin", target=("group", group))
        self.store.accounts.group_link("group_members", group, username, True)

    def remove_from_group(self, group: str, username: str) -> None:
        self._allow("admin", target=("group", group))
        self.store.accounts.group_link("group_members", group, username, False)

    def add_case(self, group: str, case: str) -> None:
        """Let a group see a case's jobs, schedules and outputs (``*``: every case)."""
        self._allow("admin", target=("group", group))
        if not isinstance(case, str) or not case.strip():
            raise BadParams("a case needs a name")
        self.store.accounts.group_link("group_cases", group, case.strip(), True)

    def remove_case(self, group: str, case: str) -> None:
        self._allow("admin", target=("group", group))
        self.store.accounts.group_link("group_cases", group, case, False)

    def groups(self) -> pd.DataFrame:
        self._allow("admin", target=("groups", "*"))
        return pd.DataFrame(self.store.accounts.list_groups(),
                            columns=["name", "description", "members", "permissions", "cases", "created_at"])

    def audit_log(self, limit: int = 200) -> pd.DataFrame:
        """The newest audit rows: who did (or was refused) what, when, from which interface."""
        self._allow("admin", target=("audit", "*"))
        df = pd.DataFrame(self.store.audit.recent(limit), columns=["id", "at", "actor", "interface", "action",
                                                                  "target_kind", "target", "allowed", "detail"])
        df["at"] = pd.to_datetime(df["at"], unit="s", utc=True)
        df["allowed"] = df["allowed"].astype(bool)
        return df

    def permissions_list(self) -> dict[str, str]:
        return dict(PERMISSIONS)

    def me(self) -> dict[str, Any]:
        """The acting user's name, permissions and cases (what the dashboard offers)."""
        actor = self.actor
        return {"username": actor.username, "permissions": sorted(actor.permissions), "cases": sorted(actor.cases),
                "interface": self.interface}


def _calling_method() -> str:
    """The public service method being checked (``pause``, ``grant``...), named in the audit trail."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and (frame.f_code.co_name.startswith("_") or frame.f_code.co_name == "actor"):
        frame = frame.f_back
    return frame.f_code.co_name if frame is not None else "unknown"


log = logging.getLogger("jobmanager.service")


def _no_job(job_id: int) -> str:
    return f"no job {job_id} you may see"


#: the allowed actions of the public call in progress on this thread, written when it returns
_AUDIT = threading.local()


def _public_method() -> str:
    """The public method the caller called (``log``, not the ``job`` it calls inside), named in the audit trail."""
    return getattr(_AUDIT, "method", None) or _calling_method()


#: who did what to which target: (actor, interface, action, target_kind, target), as AuditTrail.record takes them
AuditRow = tuple[str, str, str, str | None, str | None]


def _audit_when_done(store: JobStore, row: AuditRow, detail: str) -> None:
    pending = getattr(_AUDIT, "pending", None)
    if pending is None:  # not inside a public method: write it now
        store.audit.record(*row, True, detail)
    else:
        pending.append((store, row, detail))


class _AuditedByCommit:
    """The rows the public call in progress would write when it returns, handed to the one transaction that
    decides its outcome (a submit's ``create_jobs``): the job and its audit row land together, all or none,
    and the submit takes the store's write lock once instead of twice (issue 18).

    :meth:`committed` takes them off the call's list once that transaction has committed, so an error after
    it (a Ctrl-C during the queue write) does not write them again as failed; if the transaction fails they
    stay, and the call's end writes them as failed, as for any other action. Only the outermost public call
    hands its rows over (a nested one would commit its caller's rows before the caller's outcome is known)."""

    def __init__(self, store: JobStore) -> None:
        pending: list[tuple[JobStore, AuditRow, str]] = getattr(_AUDIT, "pending", None) or []
        outermost = getattr(_AUDIT, "method", None) in ("submit", "submit_many")
        self._pending = pending
        self._mine = [p for p in pending if p[0] is store] if outermost else []
        self.records: list[AuditRecord] = [(*row, True, detail) for _, row, detail in self._mine]

    def committed(self) -> None:
        for p in self._mine:
            self._pending.remove(p)
        self._mine = []


def _audited(fn: Any) -> Any:
    """Wrap a public method so that the audit rows of its allowed actions are written when it returns, with
    the outcome: a method that passed the permission check and then failed is recorded as "failed: <reason>",
    never as done. Nested public calls (``log`` calls ``job``) are recorded by the outermost one. A submit's rows
    are written earlier, by the transaction that stores its jobs (:class:`_AuditedByCommit`)."""

    @functools.wraps(fn)
    def _audited_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_AUDIT, "pending", None) is not None:
            return fn(self, *args, **kwargs)
        pending: list[tuple[JobStore, AuditRow, str]] = []
        _AUDIT.pending, _AUDIT.method = pending, fn.__name__
        outcome = None
        try:
            return fn(self, *args, **kwargs)
        except BaseException as exc:
            outcome = "failed: " + (validate.printable(exc)[:300] or type(exc).__name__)
            raise
        finally:
            _AUDIT.pending = _AUDIT.method = None
            for store, row, detail in pending:
                try:
                    store.audit.record(*row, True, outcome or detail)
                except Exception:  # never turn a done action into an error (a submit would be sent twice)
                    log.exception("could not write the audit row of %s", row[2])

    return _audited_call


#: the arguments a ``submit_many`` item may hold: those of the one method that checks a job for submit and
#: submit_many, read from its signature so they never drift
_SUBMIT_KEYS = tuple(k for k in inspect.signature(JobManager._new_job).parameters if k not in ("self", "allowed"))

for _name in dir(JobManager):
    if not _name.startswith("_") and inspect.isfunction(inspect.getattr_static(JobManager, _name)):
        setattr(JobManager, _name, _audited(getattr(JobManager, _name)))
