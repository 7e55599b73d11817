"""The schedule methods of :class:`~jobmanager.service.JobManager` (a mixin, one concern a file)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import jobtypes, validate
from .errors import BadParams, NotFound, PermissionDenied
from .schedules import _same_trigger, build_spec, caller_source, check_runs_as, sync_file, trigger_of
from .triggers import Trigger, local_label

if TYPE_CHECKING:
    from .engine import Engine
    from .home import Home
    from .models import Job
    from .permissions import Actor
    from .store import JobStore

SCHEDULE_COLUMNS = [
    "name", "type", "description", "enabled", "next_run", "next_run_at", "last_run_at", "last_job_id",
    "last_job_state", "runs_as", "owner", "case", "misfire", "source_kind", "source_ref", "timezone",
]


class ScheduleMethods:
    """Who a schedule runs as: the user who last created, replaced, edited or enabled it (kept in the
    schedule's ``owner``, shown as ``runs_as``). Its runs act with that user's rights, re-checked at every
    run and at "Run now", and the jobs it creates are theirs. So editing someone else's schedule makes it
    yours: it can never do more than you may. Each of these changes (and Run now) also needs the submit
    rights for the schedule's job type (:meth:`JobManager._allow_submit`); disabling and deleting,
    which start nothing, need manage_schedules only."""

    home: Home
    user: str
    interface: str
    store: JobStore
    engine: Engine  # (JobManager's: commit, then send)
    _imports: tuple[str, ...]

    def _allow(self, action: str, job: Job | None = None, *, target: tuple[str, str] | None = None,
               case: str | None = None) -> Actor:  # provided by JobManager
        raise NotImplementedError

    def _allow_submit(self, type: str | None, case: str | None) -> jobtypes.JobType:  # provided by JobManager
        raise NotImplementedError

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
        """Change some fields (type, params, cron/every/at, tz, misfire, case, priority, enabled)."""
        old = self.store.get_schedule(validate.name(name, "schedule name"))
        self._allow("manage_schedules", case=old["case_id"], target=("schedule", name))
        merged: dict[str, Any] = {
            "name": name, "type": old["type"], "params": old["params"], "tz": old["timezone"],
            "misfire": old["misfire"], "case": old["case_id"], "priority": old["priority"], "enabled": old["enabled"],
        }
        if not {"cron", "every", "at"} & {k for k, v in changes.items() if v is not None}:
            key = {"cron": "cron", "interval": "every", "once": "at"}[old["trigger_kind"]]
            merged[key] = old["trigger_value"]
        unknown = set(changes) - {*merged, "cron", "every", "at"}
        if unknown:
            raise BadParams(f"cannot edit {', '.join(sorted(unknown))} of a schedule")
        merged.update({k: v for k, v in changes.items() if v is not None})
        if merged.get("case") != old["case_id"]:  # moving it into another case needs that case too
            self._allow("manage_schedules", case=merged.get("case"), target=("schedule", name))
        self._allow_submit(merged["type"], merged.get("case"))
        spec = build_spec(owner=self.user, source_kind=old["source_kind"], source_ref=old["source_ref"],
                          imports=self._imports, **merged)
        if merged.get("every") == old["trigger_value"] and old["trigger_kind"] == "interval":
            spec["anchor"], spec["next_run_at"] = old["anchor"], old["next_run_at"]
        self.store.save_schedule(spec, actor=self.user)
        return self.store.get_schedule(name)

    def _save_schedule(self, args: dict[str, Any], kind: str, ref: str | None, *, create_only: bool) -> dict[str, Any]:
        if args.get("name") not in (None, ""):  # (build_spec says what an empty name lacks)
            validate.name(args["name"], "schedule name")
        self._allow("manage_schedules", case=args.get("case"), target=("schedule", str(args.get("name"))))
        old = None
        if not create_only:
            try:
                old = self.store.get_schedule(str(args.get("name")))
            except NotFound:
                old = None
        if old is not None:  # replacing a schedule needs the right to its present case too
            self._allow("manage_schedules", case=old["case_id"], target=("schedule", old["name"]))
        self._allow_submit(args.get("type"), args.get("case"))
        spec = build_spec(owner=self.user, source_kind=kind, source_ref=ref, imports=self._imports, **args)
        if old is not None and _same_trigger(old, spec):  # re-running the cell keeps the planned run
            spec["anchor"], spec["next_run_at"] = old["anchor"], old["next_run_at"]
        self.store.save_schedule(spec, actor=self.user, create_only=create_only)
        return self.store.get_schedule(spec["name"])

    def get_schedule(self, name: str) -> dict[str, Any]:
        row = self.store.get_schedule(validate.name(name, "schedule name"))
        self._allow("view_schedules", case=row["case_id"], target=("schedule", name))
        row["description"] = trigger_of(row).describe()
        row["runs_as"] = row["owner"]
        row["runs"] = self.store.schedule_runs(name)
        return row

    def schedules(self) -> pd.DataFrame:
        """Every schedule with its next run (in its own zone), last run and result, and where it is configured."""
        actor = self._allow("view_schedules")
        rows = []
        for s in self.store.list_schedules():
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
        row = self.store.get_schedule(validate.name(name, "schedule name"))
        self._allow("manage_schedules", case=row["case_id"], target=("schedule", name))
        return row

    def enable_schedule(self, name: str) -> None:
        """Enabling starts runs again, so it is a change like an edit: the schedule then runs as you."""
        row = self._manage(name)
        self._allow_submit(row["type"], row["case_id"])
        nxt = trigger_of(row).next_after(time.time())
        self.store.update_schedule(name, {"enabled": 1, "next_run_at": nxt, "owner": self.user}, actor=self.user,
                                   message=f"enabled (runs as {self.user})")

    def disable_schedule(self, name: str) -> None:
        self._manage(name)
        self.store.update_schedule(name, {"enabled": 0}, actor=self.user, message="disabled")

    def delete_schedule(self, name: str) -> None:
        self._manage(name)
        self.store.delete_schedule(name, actor=self.user)

    def run_schedule_now(self, name: str) -> int:
        """Submit the schedule's job now; its next planned run stays as it was.

        You need the submit rights for its type; the job runs as (and belongs to) the user the schedule
        runs as, whose rights are checked again now, as at every scheduled run."""
        row = self._manage(name)
        jt = self._allow_submit(row["type"], row["case_id"])
        try:
            check_runs_as(self.store, row)
        except PermissionDenied as exc:
            self.store.audit(self.user, self.interface, "run_schedule_now", "schedule", name, False, str(exc))
            raise
        tasks = jt.plan(jobtypes.validate(jt, row["params"]))
        return self.engine.run_schedule_now(row, tasks=tasks, has_finish=jt.has_finish(), retries=jt.retries,
                                            actor=self.user)

    def sync_schedules_file(self) -> dict[str, int]:
        """Load ``schedules.toml`` from the home and make the store match it (all or nothing)."""
        self._allow("manage_schedules")
        return sync_file(self.store, self.home, self.user, self._imports,
                         check=lambda spec: self._allow_submit(spec["type"], spec["case_id"]))
