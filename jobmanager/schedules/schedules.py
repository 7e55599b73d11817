"""Schedules: checking them, loading the home's schedules file, and firing due runs.

A schedule can be configured in code (``jm.schedule(...)`` in a notebook or
module), in ``schedules.toml`` in the home (kept in sync at agent start-up), or
from the dashboard / CLI. Each records where it came from (``source_kind``,
``source_ref``) so the dashboard's "go to configuration" can take the user there.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobmanager import jobtypes
from jobmanager.errors import BadParams, JobManagerError
from jobmanager.home import Home
from jobmanager.models import Dispatch
from jobmanager.notify import rules as notify_rules
from jobmanager.schedules.triggers import Trigger
from jobmanager.store import JobStore

log = logging.getLogger("jobmanager.schedules.schedules")

MISFIRE = ("run_once", "skip")
#: a run this late (seconds) is a misfire: "skip" drops it, "run_once" runs it once now
MISFIRE_GRACE_S = 60.0
SCHEDULES_FILE = "schedules.toml"
SOURCE_KINDS = ("code", "notebook", "file", "dashboard", "cli")


def build_spec(
    *, name: str, type: str, params: dict[str, Any] | None, owner: str, case: str | None = None,
    priority: int = 0, cron: str | None = None, every: str | None = None, at: Any = None, tz: str = "UTC",
    misfire: str = "run_once", enabled: bool = True, source_kind: str, source_ref: str | None,
    imports: tuple[str, ...] = (), now: float | None = None, options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A validated schedule row; raises BadParams (nothing saved) on any bad input.

    ``options`` overrides its jobs' options (``jobtypes.OVERRIDABLE``: queue, time limits, notify); only the
    given ones are kept, so a job type's later defaults still apply to the rest."""
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise BadParams("a schedule needs a name (1 to 200 characters)")
    if misfire not in MISFIRE:
        raise BadParams(f"unknown misfire policy {misfire!r}: choose run_once or skip")
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise BadParams(f"priority must be a whole number, not {priority!r}")
    jobtypes.discover(imports)
    jt = jobtypes.get(type)
    model = jobtypes.validate(jt, params or {})
    if not jt.plan(model):
        raise BadParams(f"{type}: these parameters plan no tasks")
    if options is not None and not isinstance(options, dict):
        raise BadParams(f"schedule options must be a table of {', '.join(jobtypes.OVERRIDABLE)}")
    overrides = {k: v for k, v in (options or {}).items() if v is not None}
    checked = jobtypes.options(jt, **overrides)
    overrides = {k: getattr(checked, k) for k in overrides}
    if "notify" in overrides:  # the schedule's own rules only: its job type's are added when each job is made
        overrides["notify"] = notify_rules.check_rules((options or {})["notify"], "schedule notify")
    now = time.time() if now is None else now
    trigger = Trigger.parse(cron=cron, every=every, at=at, tz=tz, now=now)
    return {
        "name": name.strip(), "type": type, "params": model.model_dump(mode="json"), "owner": owner,
        "case_id": case, "priority": priority, "trigger_kind": trigger.kind, "trigger_value": trigger.value,
        "timezone": trigger.tz, "anchor": trigger.anchor, "misfire": misfire, "enabled": bool(enabled),
        "next_run_at": trigger.next_after(now), "source_kind": source_kind, "source_ref": source_ref,
        "options": overrides,
    }


def trigger_of(row: dict[str, Any]) -> Trigger:
    return Trigger(row["trigger_kind"], row["trigger_value"], row["timezone"], row.get("anchor"))


def caller_source(skip_modules: tuple[str, ...] = ("jobmanager",)) -> tuple[str, str | None]:
    """Where ``jm.schedule(...)`` was called from: a notebook path, or file:line."""
    notebook = os.environ.get("JPY_SESSION_NAME")  # set by Jupyter Server in a notebook's kernel
    if notebook and notebook.endswith(".ipynb"):
        return "notebook", notebook
    for frame in inspect.stack()[1:]:
        module = frame.frame.f_globals.get("__name__", "")
        if not any(module == m or module.startswith(m + ".") for m in skip_modules):
            return "code", f"{frame.filename}:{frame.lineno}"
    return "code", None


# -- the schedules file ------------------------------------------------------------------------------
def read_file(home: Home, owner: str, imports: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every schedule in ``schedules.toml``, validated; BadParams names the file and line."""
    path = home.path / SCHEDULES_FILE
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadParams(f"{path}: not valid TOML: {exc}") from None
    entries = data.get("schedule", [])
    if not isinstance(entries, list):
        raise BadParams(f"{path}: use [[schedule]] tables")
    headers = [i + 1 for i, line in enumerate(text.splitlines()) if re.match(r"\s*\[\[\s*schedule\s*\]\]", line)]
    specs, names = [], set()
    allowed = {"name", "type", "params", "cron", "every", "at", "tz", "misfire", "enabled", "case", "priority",
               "options"}
    for entry, line in zip(entries, headers, strict=False):
        where = f"{SCHEDULES_FILE}:{line}"
        unknown = set(entry) - allowed
        if unknown:
            raise BadParams(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        try:
            spec = build_spec(
                name=entry.get("name", ""), type=entry.get("type", ""), params=entry.get("params", {}),
                owner=owner, case=entry.get("case"), priority=entry.get("priority", 0), cron=entry.get("cron"),
                every=entry.get("every"), at=entry.get("at"), tz=entry.get("tz", "UTC"),
                misfire=entry.get("misfire", "run_once"), enabled=entry.get("enabled", True),
                source_kind="file", source_ref=str(path) + f":{line}", imports=imports,
                options=entry.get("options"),
            )
        except JobManagerError as exc:
            raise BadParams(f"{where}: {exc}") from None
        if spec["name"] in names:
            raise BadParams(f"{where}: schedule {spec['name']!r} is declared twice")
        names.add(spec["name"])
        specs.append(spec)
    return specs


def sync_file(store: JobStore, home: Home, actor: str, imports: tuple[str, ...] = (),
              check: Callable[[dict[str, Any]], object] | None = None) -> dict[str, int]:
    """Make the store's file-declared schedules match the file (all or nothing).

    ``check(spec)`` (the service's submit-rights check) runs for every declared schedule before anything
    is written. A schedule whose declaration did not change keeps the user it runs as; a new or changed
    one runs as ``actor``.
    """
    specs = read_file(home, actor, imports)
    existing = {s["name"]: s for s in store.schedules.list_all()}
    for spec in specs:
        old = existing.get(spec["name"])
        if old is not None and old["source_kind"] not in ("file",):
            raise BadParams(f"{spec['source_ref']}: schedule {spec['name']!r} already exists "
                            f"(configured in {old['source_kind']}); rename one of them")
        if check is not None:
            check(spec)
    saves: list[dict[str, Any]] = []
    created = updated = 0
    for spec in specs:
        old = existing.get(spec["name"])
        if old is not None and _same_trigger(old, spec):
            spec = {**spec, "next_run_at": old["next_run_at"], "anchor": old["anchor"]}
        if old is None or any(old.get(k) != spec.get(k) for k in spec if k != "owner"):
            saves.append(spec)
            created += old is None
            updated += old is not None
    declared = {s["name"] for s in specs}
    deletes = [name for name, old in existing.items() if old["source_kind"] == "file" and name not in declared]
    removed = len(deletes)
    if saves or deletes:
        store.schedules.sync(saves, deletes, actor=actor)  # one transaction: the file wins whole, or not at all
    return {"declared": len(specs), "created": created, "updated": updated, "removed": removed}


def _same_trigger(old: dict[str, Any], spec: dict[str, Any]) -> bool:
    return all(old[k] == spec[k] for k in ("trigger_kind", "trigger_value", "timezone"))


# -- firing -------------------------------------------------------------------------------------------
def fire_due(store: JobStore, agent: str, now: float | None = None) -> list[tuple[int | None, list[Dispatch]]]:
    """Fire every due schedule once; returns (job id, messages) for each run this agent won."""
    now = time.time() if now is None else now
    fired = []
    for row in store.schedules.due(now):
        trigger = trigger_of(row)
        due = row["next_run_at"]
        following = trigger.next_after(max(now, due))  # after downtime: never a burst of missed runs
        late = now - due
        if late > MISFIRE_GRACE_S and row["misfire"] == "skip":
            result = store.schedules.fire(row, following, agent=agent, tasks=None, outcome="skipped",
                                         message=f"missed run of {time.strftime('%Y-%m-%d %H:%M', time.gmtime(due))}"
                                                 f" UTC skipped ({late:.0f} s late)")
        else:
            try:
                jt = check_runs_as(store, row)
                tasks = jt.plan(jobtypes.validate(jt, row["params"]))
                options = jobtypes.options(jt, **row["options"])
            except Exception as exc:  # one broken schedule must not stop the others from firing
                result = store.schedules.fire(row, following, agent=agent, tasks=None, outcome="error",
                                             message=str(exc))
                log.error("schedule %s could not fire: %s", row["name"], exc)
            else:
                note = f"late by {late:.0f} s (misfire: run once)" if late > MISFIRE_GRACE_S else None
                result = store.schedules.fire(row, following, agent=agent, tasks=tasks, has_finish=jt.has_finish(),
                                             retries=jt.retries, message=note, options=options)
        if result is not None:
            fired.append(result)
            if result[0] is not None:
                log.info("schedule %s fired job %s", row["name"], result[0])
    return fired


def check_runs_as(store: JobStore, row: dict[str, Any]) -> jobtypes.JobType:
    """The rights of the user a schedule runs as (its ``owner``: who last changed it), read fresh.

    Called at every run and at "Run now": a disabled user, or one who lost the submit rights for the
    schedule's type (``JobType.submit_actions``: submit_jobs and e.g. run_notebooks) or its case, gets no
    run (PermissionDenied). Returns the job type.
    """
    from jobmanager.auth.permissions import Actor, allowed, needs
    from jobmanager.errors import NotFound, PermissionDenied

    who = row["owner"]
    try:
        user = store.accounts.get_user(who)
    except NotFound:
        raise PermissionDenied(f"schedule {row['name']} runs as {who!r}, who is not a Job Manager user") from None
    if not user["active"]:
        raise PermissionDenied(f"schedule {row['name']} runs as {who!r}, who is disabled")
    jt = jobtypes.get(row["type"])
    perms, cases = store.accounts.grants_of(who)
    actor = Actor(who, frozenset(perms), frozenset(cases))
    for action in jt.submit_actions():
        if not allowed(actor, action, None, row["case_id"]):
            raise PermissionDenied(
                f"schedule {row['name']} runs as {who!r}, who may no longer submit {row['type']} jobs"
                + (f" in case {row['case_id']}" if row["case_id"] else "") + f" (needs {needs(action)})")
    return jt


def schedules_file(home: Home) -> Path:
    return home.path / SCHEDULES_FILE
