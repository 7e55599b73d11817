"""Widget models: state and calls to the service, testable without a browser.

Each model is a ``traitlets.HasTraits`` holding what a view shows (a page of
rows, filters, sort, selection, a message). Views link to these traits; the
models hold no SQL and no state rules, only calls to :class:`JobManager`, whose
refusals (one line each) become the ``message`` the view shows.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
import traitlets

from jobmanager import JobManager, JobManagerError
from jobmanager.errors import QueueNotReached

from . import format as fmt
from .theme import label

PAGE_SIZE = 100

#: display column -> the service's sort key (None: not sortable on the server)
JOB_SORT_KEYS = {
    "Job": "id", "Name": "name", "Type": "type", "State": "state", "Result": "state", "Owner": "owner",
    "Case": "case", "Priority": "priority", "Created": "created_at", "Started": "started_at",
    "Finished": "finished_at", "Duration": "duration_s", "Waited": "wait_s", "Failed": "tasks_failed",
    "Cancelled": "tasks_cancelled",
    "Tasks": "tasks_total", "Progress": None, "Warnings": None, "Agent": None, "Elapsed": "started_at", "ETA": None,
}

TIME_RANGES = {"Any time": None, "Last hour": 3600, "Last 24 h": 86400, "Last 7 days": 7 * 86400,
               "Last 30 days": 30 * 86400}


class Messages(traitlets.HasTraits):
    """The one-line message bar: the service's own words, never a traceback."""

    message = traitlets.Unicode("")
    kind = traitlets.Unicode("info")
    #: bumped by every info/error line: an action ran (the dashboard re-reads its tab counts)
    done = traitlets.Int(0)

    def info(self, text: str) -> None:
        self.kind, self.message = "info", text
        self.done += 1

    def error(self, text: str) -> None:
        self.kind, self.message = "error", text
        self.done += 1

    def clear(self) -> None:
        self.message = ""

    def attempt(self, fn: Callable[[], Any], success: str | None = None) -> Any:
        """Run one service call; a JobManagerError becomes the message bar's line."""
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", QueueNotReached)
                result = fn()
        except JobManagerError as exc:
            self.error(str(exc))
            return None
        stored = [str(w.message) for w in caught if issubclass(w.category, QueueNotReached)]
        if stored:  # done and stored, but the queue was not reached: the sweep sends it (never submit twice)
            self.info(stored[0])
        elif success:
            self.info(success)
        return result


class JobsModel(traitlets.HasTraits):
    """One job tab (in-progress or completed): filters, sort, page, rows, selection."""

    tab = traitlets.Unicode("in-progress")
    search = traitlets.Unicode("")
    state = traitlets.Unicode("")
    type = traitlets.Unicode("")
    case = traitlets.Unicode("")
    owner = traitlets.Unicode("")
    agent = traitlets.Unicode("")
    time_range = traitlets.Unicode("Any time")
    sort = traitlets.Unicode("created_at")
    desc = traitlets.Bool(True)
    page = traitlets.Int(1)
    total = traitlets.Int(0)
    #: jobs in the tab whatever the filters (the tab's title); ``total`` counts the filtered view
    tab_total = traitlets.Int(0)
    rows = traitlets.Instance(pd.DataFrame, args=())
    selected = traitlets.List(traitlets.Int())
    refreshed_at = traitlets.Float(0.0)

    def __init__(self, jm: JobManager, messages: Messages, tab: str, **kwargs: Any) -> None:
        super().__init__(tab=tab, **kwargs)
        self.jm = jm
        self.messages = messages

    def filters(self) -> dict[str, Any]:
        f: dict[str, Any] = {}
        for key in ("search", "state", "type", "case", "owner", "agent"):
            value = getattr(self, key).strip()
            if value:
                f[key] = value
        seconds = TIME_RANGES.get(self.time_range)
        if seconds:
            f["since"] = time.time() - seconds
            f["time_field"] = "created" if self.tab == "in-progress" else "finished"
        return f

    def refresh(self) -> None:
        """Read the current page again; filters, sort, page and selection stay."""
        result = self.messages.attempt(lambda: self.jm.grid(
            tab=self.tab, sort=self.sort, desc=self.desc, page=self.page, page_size=PAGE_SIZE, **self.filters()))
        if result is None:
            return
        df, total = result
        if df.empty and total and self.page > 1:  # the page emptied under us: go back to the last one
            self.page = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
            return self.refresh()
        if self.tab == "in-progress" and not df.empty:
            live = self.jm.live(list(df["id"]))
            df = df.assign(progress=[live.get(int(i), {}).get("progress", 0.0) for i in df["id"]],
                           agents=[live.get(int(i), {}).get("agents", "") for i in df["id"]],
                           waiting=[live.get(int(i), {}).get("waiting", "") for i in df["id"]],
                           paused_s=[live.get(int(i), {}).get("paused_s", 0.0) for i in df["id"]],
                           paused_since=[live.get(int(i), {}).get("paused_since") for i in df["id"]])
        elif not df.empty:  # finished jobs: how many tasks printed/ran with a warning (ctx.warn)
            warned = self.jm.warning_counts(list(df["id"]))
            df = df.assign(warnings=[warned.get(int(i), 0) for i in df["id"]])
        self.total = int(total)
        if self.filters():
            self.refresh_total()
        else:
            self.tab_total = self.total
        self.rows = df
        visible = set(int(i) for i in df["id"]) if not df.empty else set()
        self.selected = [i for i in self.selected if i in visible]
        self.refreshed_at = time.time()

    def refresh_total(self) -> None:
        """Count the tab's jobs, no filters (one cheap page of one row)."""
        result = self.messages.attempt(lambda: self.jm.grid(tab=self.tab, page=1, page_size=1))
        if result is not None:
            self.tab_total = int(result[1])

    def sort_by(self, column: str, desc: bool | None = None) -> bool:
        key = JOB_SORT_KEYS.get(column, column)
        if not key:
            self.messages.info(f"{column} cannot be sorted on the server; sort by another column")
            return False
        self.desc = (not self.desc if key == self.sort else True) if desc is None else desc
        self.sort = key
        self.page = 1
        self.refresh()
        return True

    def set_page(self, page: int) -> None:
        last = max(1, (self.total + PAGE_SIZE - 1) // PAGE_SIZE)
        self.page = min(max(1, page), last)
        self.refresh()

    def page_label(self) -> str:
        if not self.total:
            return "0 jobs"
        first = (self.page - 1) * PAGE_SIZE + 1
        last = min(self.total, self.page * PAGE_SIZE)
        return f"{fmt.count(first)}–{fmt.count(last)} of {fmt.count(self.total)}"

    # -- actions on the selection ------------------------------------------------------------
    def act(self, action: str, ids: Iterable[int] | None = None, **kwargs: Any) -> int:
        """Apply a service action to each selected job; returns how many succeeded."""
        ids = list(self.selected if ids is None else ids)
        if not ids:
            self.messages.info("select one or more jobs first (click a row; Ctrl/Shift-click for several)")
            return 0
        done, errors = 0, []
        for job_id in ids:
            try:
                if action == "priority":
                    job = self.jm.job(job_id)
                    self.jm.set_priority(job_id, job.priority + kwargs["delta"])
                else:
                    getattr(self.jm, action)(job_id, **kwargs)
                done += 1
            except JobManagerError as exc:
                errors.append(f"job {job_id}: {exc}")
        verb = {"priority": "priority changed", "retry": "retry queued"}.get(action, f"{action} done")
        if errors:
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            self.messages.error(f"{verb} for {done} of {len(ids)}; {errors[0]}{more}")
        else:
            self.messages.info(f"{verb} for {done} job{'s' if done != 1 else ''}")
        self.refresh()
        return done


def _queue_cells(df: pd.DataFrame) -> list[str]:
    """The queue, and why the job's tasks wait when a concurrency limit holds them ("waiting: 2/2 ...")."""
    queues = df["queue"] if "queue" in df else pd.Series("default", index=df.index)
    waiting = df["waiting"] if "waiting" in df else pd.Series("", index=df.index)
    return [f"{q} · {w}" if isinstance(w, str) and w else str(q) for q, w in zip(queues, waiting, strict=True)]


def present_jobs(df: pd.DataFrame, tab: str, now: float | None = None) -> pd.DataFrame:
    """The grid's display frame: readable columns, relative times, durations.

    Name and the state come first: the grid cannot pin columns, so at 1024 px these two stay in view
    without scrolling sideways.
    """
    now = time.time() if now is None else now
    cols = (["Job", "Name", "State", "Progress", "Type", "Agent", "Queue", "Started", "Elapsed", "ETA", "Owner",
             "Case", "Priority"] if tab == "in-progress" else
            ["Job", "Name", "Result", "Tasks", "Failed", "Cancelled", "Warnings", "Duration", "Finished", "Type",
             "Owner", "Case"])
    if df.empty:
        return pd.DataFrame(columns=cols)

    def ts(col: str) -> pd.Series:
        return df[col].map(lambda v: None if pd.isna(v) else pd.Timestamp(v).timestamp())

    started = ts("started_at")
    out = pd.DataFrame({"Job": df["id"].astype(int), "Name": df["name"], "Type": df["type"]})
    if tab == "in-progress":
        progress = df["progress"].astype(float) if "progress" in df else pd.Series(0.0, index=df.index)
        # a paused job's Elapsed stops at its pause, and the time it spent paused is never counted
        paused_s = df["paused_s"] if "paused_s" in df else pd.Series(0.0, index=df.index)
        paused_since = df["paused_since"] if "paused_since" in df else pd.Series(None, index=df.index)
        elapsed = [None if pd.isna(s) else max(0.0, (now if p is None or pd.isna(p) else p) - s - (q or 0.0))
                   for s, p, q in zip(started, paused_since, paused_s, strict=True)]
        eta = []
        for p, e, state in zip(progress, elapsed, df["state"], strict=True):
            if state != "running" or not e or p <= 0.02:
                eta.append("")
            else:
                eta.append("~" + fmt.duration(e * (1 - p) / p))
        out = out.assign(
            State=df["state"].map(label), Progress=progress.round(3),
            Agent=df.get("agents", pd.Series("", index=df.index)).fillna(""),
            Queue=_queue_cells(df),
            Started=[fmt.relative(s, now) if s else "not yet" for s in started],
            Elapsed=[fmt.duration(e) if e else "" for e in elapsed], ETA=eta,
            Owner=df["owner"], Case=df["case"].fillna(""), Priority=df["priority"].astype(int),
        )
    else:
        total = df["tasks_total"].astype(int)
        failed, cancelled = df["tasks_failed"].astype(int), df["tasks_cancelled"].astype(int)
        out = out.assign(
            Result=df["state"].map(label),
            Tasks=[f"{t - f - c} / {t} ok" for t, f, c in zip(total, failed, cancelled, strict=True)],
            Failed=failed, Cancelled=cancelled,
            Warnings=(df["warnings"].astype(int) if "warnings" in df else pd.Series(0, index=df.index)),
            Duration=df["duration_s"].map(fmt.duration),
            Finished=ts("finished_at").map(lambda v: fmt.relative(v, now)), Owner=df["owner"],
            Case=df["case"].fillna(""),
        )
    return out[cols].reset_index(drop=True)


class ScheduleFormModel(traitlets.HasTraits):
    """The schedule form's live preview: as the trigger is typed, its description and next runs in its own
    zone, or the one line that says why it cannot be saved (the same line ``schedule add`` prints)."""

    kind = traitlets.Unicode("cron")  # cron | every | at
    value = traitlets.Unicode("")
    tz = traitlets.Unicode("UTC")
    description = traitlets.Unicode("")
    runs = traitlets.List(traitlets.Unicode())
    error = traitlets.Unicode("")

    def __init__(self, jm: JobManager, count: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.jm, self.count = jm, count
        self.observe(lambda _: self.update(), names=["kind", "value", "tz"])

    def update(self, now: float | None = None) -> None:
        text = self.value.strip()
        if not text:
            self.description, self.runs, self.error = "", [], ""
            return
        try:
            preview = self.jm.preview_schedule(**{self.kind: text}, tz=self.tz.strip() or "UTC", count=self.count)
        except JobManagerError as exc:
            self.description, self.runs, self.error = "", [], str(exc)
            return
        self.error, self.description = "", preview["description"]
        self.runs = [f"{where} · {fmt.relative(at, now)}" for at, where in
                     zip(preview["runs"], preview["labels"], strict=True)]
