"""The job details panel: parameters, tasks with errors, per-task retry, events, log tail, outputs."""

from __future__ import annotations

import html
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w
import pandas as pd

from jobmanager import Job, JobManager, JobManagerError
from jobmanager.engine.states import FINISHED

from . import format as fmt
from .downloads import DownloadArea, anchor
from .models import Messages
from .theme import badge

LOG_TAIL_LINES = 200
#: while a job runs and "Follow" is on, its log is read again this often (tail -f)
FOLLOW_S = 2.0
#: download links are reused by refreshes this long (they expire after 15 minutes)
LINKS_FRESH_S = 600.0


def _task_rows(job: Job) -> str:
    rows = []
    for t in job.tasks:
        err = f'<div class="jm-err">{html.escape(t.error)}</div>' if t.error else ""
        if t.warning:  # succeeded with warnings (e.g. characters no font could draw)
            err += f'<div class="jm-warn">warning: {html.escape(t.warning)}</div>'
        trace = (f"<details><summary class='jm-muted'>traceback</summary><pre class='jm-log'>"
                 f"{html.escape(t.traceback)}</pre></details>") if t.traceback else ""
        took = fmt.duration(t.finished_at - t.started_at) if t.finished_at and t.started_at else ""
        if t.waiting:
            err += f"<div class='jm-muted'>{html.escape(t.waiting)}</div>"
        lost = (f" <span class='jm-warn' title='times this task lost its agent (crashed or killed); a loss spends"
                f" no attempt'>· lost {t.losses}/{job.max_losses}</span>") if t.losses else ""
        rows.append(f"<tr><td class='num'>{t.seq}</td><td>{badge(t.state)}</td><td>{html.escape(t.name)}{err}"
                    f"{trace}</td><td>{html.escape(t.agent or '')}</td><td class='num'>{t.attempts}/{t.max_attempts}"
                    f"{lost}</td><td class='num'>{took}</td></tr>")
    return ("<table class='jm-table'><tr><th class='num'>#</th><th>State</th><th>Task</th><th>Agent</th>"
            "<th class='num'>Attempts</th><th class='num'>Took</th></tr>" + "".join(rows) + "</table>")


def _documents(job: Job) -> str:
    """Print to PDF: each document with the pages it printed and its warnings (characters no font has,
    refused images, attachments not printed), one a line, as the task recorded them (``ctx.warn``)."""
    if job.type != "print_to_pdf" or not job.tasks:
        return ""
    rows = []
    for t in sorted(job.tasks, key=lambda t: t.seq):
        printed = t.state == "succeeded" and t.progress_done is not None
        pages = str(int(t.progress_done or 0)) if printed else "-"
        notes = [f'<div class="jm-warn">{html.escape(w)}</div>' for w in (t.warning or "").split("; ") if w]
        if t.error:
            notes.append(f'<div class="jm-err">{html.escape(t.error)}</div>')
        rows.append(f"<tr><td class='num'>{t.seq}</td><td>{html.escape(t.name)}</td><td>{badge(t.state)}</td>"
                    f"<td class='num'>{pages}</td><td>{''.join(notes) or '<span class=jm-muted>none</span>'}"
                    f"</td></tr>")
    return ("<b>Documents</b><table class='jm-table jm-docs'><tr><th class='num'>#</th><th>Document</th>"
            "<th>State</th><th class='num'>Pages</th><th>Warnings</th></tr>" + "".join(rows) + "</table>")


def _timeline(events: list[dict[str, Any]]) -> str:
    """The last 40 events, newest first."""
    items = []
    for raw in reversed(events[-40:]):
        e: dict[str, Any] = {k: (None if isinstance(v, float) and v != v else v) for k, v in raw.items()}  # NaN -> None
        when = fmt.exact(e["at"])[11:19]
        who = e.get("agent") or e.get("actor") or ""
        if e["kind"] == "task":
            text = f"task {int(e['seq'])} → {e['to_state']}"
        elif e["kind"] == "job":
            text = f"job → <b>{html.escape(str(e['to_state']))}</b>"
        else:
            text = html.escape(str(e["kind"]))
        msg = f" · {html.escape(str(e['message']))}" if e.get("message") else ""
        items.append(f"<li><span class='jm-muted' title='{fmt.exact(e['at'])}'>{when}</span> {text}"
                     f"<span class='jm-muted'> {html.escape(who)}{msg}</span></li>")
    return "<ul class='jm-timeline'>" + "".join(items) + "</ul>"


def _engine_line(job: Job) -> str:
    """Queue, time limits and what happens when an agent is lost: how the engine treats this job."""
    parts = [f"queue {html.escape(job.queue)}"]
    if job.soft_limit:
        parts.append(f"soft limit {fmt.duration(job.soft_limit)}")
    if job.hard_limit:
        parts.append(f"hard limit {fmt.duration(job.hard_limit)}")
    parts.append(f"runs again after a lost agent (up to {job.max_losses} times)" if job.rerun_safe
                 else "not re-run after a lost agent")
    if job.notify:
        rules = [f"{', '.join(r.get('on', []))} → {r.get('to', '')}" for r in job.notify]
        parts.append("notifies " + "; ".join(rules))
    return f"<div class='jm-muted'>{html.escape(' · '.join(parts))}</div>"


def _notifications(rows: list[dict[str, Any]]) -> str:
    """Each notification of the job: what triggered it, where it went, and whether it arrived."""
    if not rows:
        return ""
    items = []
    for n in rows:
        state = {"sent": "sent", "failed": "failed", "pending": "pending"}.get(str(n["state"]), str(n["state"]))
        when = n.get("delivered_at")
        at = f" {fmt.relative(pd.Timestamp(when).timestamp())}" if when is not None and not pd.isna(when) else ""
        why = f" · {n['last_error']}" if n.get("last_error") and state != "sent" else ""
        items.append(f"<li>{html.escape(str(n['trigger']))} → {html.escape(str(n['target']))}: "
                     f"<b>{html.escape(state)}</b>{html.escape(at)} (attempt {int(n['attempts'])}){html.escape(why)}"
                     "</li>")
    return "<b>Notifications</b><ul class='jm-timeline'>" + "".join(items) + "</ul>"


def _when(what: str, at: float | None) -> str:
    """ "started 3 min ago", the exact time (in the viewer's zone) on hover; nothing for no time."""
    if not at:
        return ""
    sep = "" if what == "created" else " · "
    return f"{sep}{what} <span class='jm-time' title='{fmt.exact(at)}'>{fmt.relative(at)}</span>"


def log_html(text: str, search: str = "", following: bool = False) -> str:
    """The log block: every line, or the lines holding ``search`` (case-insensitive) with it marked."""
    lines = text.splitlines()
    note = ""
    if search:
        needle = search.lower()
        hits = [line for line in lines if needle in line.lower()]
        note = (f"<span class='jm-muted'>{len(hits)} of {len(lines)} line{'s' if len(lines) != 1 else ''} "
                f"match {html.escape(repr(search))}</span>")
        body = "\n".join(_mark(line, search) for line in hits) or "(no line matches)"
    else:
        body = html.escape(text) or "(empty)"
    cls = "jm-log jm-log-follow" if following else "jm-log"  # following: the view stays at the newest line
    return f"{note}<div class='{cls}'><div>{body}</div></div>"


def _mark(line: str, search: str) -> str:
    out, low, needle, i = [], line.lower(), search.lower(), 0
    while (j := low.find(needle, i)) >= 0:
        out += [html.escape(line[i:j]), f"<mark>{html.escape(line[j:j + len(search)])}</mark>"]
        i = j + len(search)
    return "".join(out) + html.escape(line[i:])


class DetailsPanel(w.VBox):
    """Opens on a row click; everything about one job."""

    def __init__(self, jm: JobManager, messages: Messages, permissions: set[str], downloads: DownloadArea,
                 on_change: Callable[[], None]) -> None:
        self.jm, self.messages, self.perms, self.downloads = jm, messages, permissions, downloads
        self.on_change = on_change
        self.job_id: int | None = None
        self._links_key: tuple[Any, ...] | None = None
        self._links_at = 0.0
        self._links: list[str] = []
        self.header = w.HTML()
        self.retry = w.Button(description="Retry failed tasks", icon="repeat")
        self.retry.on_click(lambda _: self._retry(None, "retry queued"))
        self.task_number = w.BoundedIntText(min=1, max=100_000, value=1, layout=w.Layout(width="120px"),
                                            description="Task #", style={"description_width": "46px"})
        self.retry_task = w.Button(description="Retry task", icon="repeat", layout=w.Layout(width="auto"))
        self.retry_task.on_click(lambda _: self._retry(self.task_number.value,
                                                       f"retry of task {self.task_number.value} queued"))
        self.log_button = w.Button(description="Download log", icon="file-text")
        self.log_button.on_click(lambda _: self._download_log())
        self.close_button = w.Button(icon="times", tooltip="Close details", layout=w.Layout(width="36px"))
        self.close_button.on_click(lambda _: self.hide())
        for button, perm in ((self.retry, "retry_tasks"), (self.retry_task, "retry_tasks"),
                             (self.log_button, "download_logs")):
            ok = perm in permissions or "admin" in permissions
            button.disabled = not ok
            button.tooltip = button.description if ok else f"needs the {perm} permission"
        self.outputs = w.HTML()
        self.notices = w.HTML()
        self.body = w.HTML()
        # the log: followed while the job runs (read again every FOLLOW_S), searchable as you type
        self.log_view = w.HTML()
        self.log_search = w.Text(placeholder="search the log", layout=w.Layout(width="220px"))
        self.log_search.observe(lambda _: self._show_log(), "value")
        self.follow = w.Checkbox(value=True, description="Follow while it runs", indent=False,
                                 layout=w.Layout(width="auto"))
        self.follow.observe(lambda _: self._show_log(), "value")
        self.log_title = w.HTML()
        log_bar = w.HBox([self.log_title, self.log_search, self.follow])
        log_bar.add_class("jm-toolbar")
        self.log_box = w.VBox([log_bar, self.log_view])
        self._log_text = ""
        self._log_read_at = 0.0
        self._running = False
        bar = w.HBox([self.retry, self.task_number, self.retry_task, self.log_button, self.close_button])
        bar.add_class("jm-toolbar")
        super().__init__([self.header, bar, self.outputs, self.notices, self.body, self.log_box])
        self.add_class("jm-details")
        self.layout.display = "none"

    def show(self, job_id: int) -> None:
        self.job_id = job_id
        self.layout.display = None
        self.refresh()

    def hide(self) -> None:
        self.job_id = None
        self.layout.display = "none"

    def refresh(self) -> None:
        job_id = self.job_id
        if job_id is None:
            return
        try:
            job = self.jm.job(job_id)
            events = self.jm.events(job_id).to_dict("records")
            arts = self.jm.artifacts(job_id)
        except JobManagerError as exc:
            self.messages.error(str(exc))
            self.hide()
            return
        case = f" · case {html.escape(job.case)}" if job.case else ""
        err = f"<div class='jm-err'>{html.escape(job.error)}</div>" if job.error else ""
        self.header.value = (
            f"<h3>{html.escape(job.name)} <span class='jm-muted'>#{job.id}</span></h3>"
            f"<div>{html.escape(job.type)} · {badge(job.state)} · owner {html.escape(job.owner)}{case} · "
            f"priority {job.priority} · {job.tasks_succeeded} ok / {job.tasks_failed + job.tasks_cancelled} failed"
            f" of {job.tasks_total} · {_when('created', job.created_at)}{_when('started', job.started_at)}"
            f"{_when('finished', job.finished_at)}</div>{_engine_line(job)}{err}")
        can_download = "download_outputs" in self.perms or "admin" in self.perms
        key = (job.id, tuple((a["name"], a["size"]) for _, a in arts.iterrows()))
        if key == self._links_key and time.monotonic() - self._links_at < LINKS_FRESH_S:
            links = self._links  # refreshes reuse the links: no new download tokens, no audit rows
        else:
            links = self._publish(job, arts, can_download)
            self._links_key, self._links_at, self._links = key, time.monotonic(), links
        self.outputs.value = ("<b>Outputs</b> " + " ".join(links)) if links else ""
        try:
            self.notices.value = _notifications(self.jm.notifications(job.id).to_dict("records"))
        except JobManagerError as exc:
            self.notices.value = f"<span class='jm-err'>{html.escape(str(exc))}</span>"
        self._render_body(job, events)

    def _publish(self, job: Job, arts: Any, can_download: bool) -> list[str]:
        links: list[str] = []
        for _, a in arts.iterrows():
            if can_download:
                try:
                    links.append(anchor(self.jm.open_artifact(job.id, a["name"]), a["name"], job_id=job.id))
                except JobManagerError as exc:
                    links.append(f"<span class='jm-err'>{html.escape(str(exc))}</span>")
            else:
                links.append(f"<span class='jm-muted' title='needs the download_outputs permission'>"
                             f"{html.escape(a['name'])}</span>")
        return links

    def _render_body(self, job: Job, events: list[dict[str, Any]]) -> None:
        params = html.escape(json.dumps(job.params, indent=1))
        self.body.value = (
            "<div style='display:flex;gap:18px;flex-wrap:wrap'>"
            f"<div style='flex:3;min-width:420px'>{_documents(job)}"
            f"<b>Tasks</b><div class='jm-tasks'>{_task_rows(job)}</div></div>"
            f"<div style='flex:2;min-width:260px'><b>Events</b>{_timeline(events)}"
            f"<details><summary><b>Parameters</b></summary><pre class='jm-log'>{params}</pre></details></div></div>")
        self._running = job.state not in FINISHED
        self._read_log()
        if self._can_read_log():  # a job none of whose tasks has started has no log to download yet
            self.log_button.disabled = job.started_at is None
            self.log_button.tooltip = ("Download log" if job.started_at is not None
                                       else "no log yet: no task has started")
        can_retry = "retry_tasks" in self.perms or "admin" in self.perms
        failed = job.tasks_failed + job.tasks_cancelled
        self.retry.disabled = not can_retry or failed == 0 or job.state not in FINISHED
        if can_retry:
            self.retry.tooltip = ("Re-queue the failed tasks" if not self.retry.disabled else
                                  "no failed tasks to retry" if failed == 0 else "retry once the job has finished")

    # -- the log ----------------------------------------------------------------------------------------
    def _can_read_log(self) -> bool:
        return "download_logs" in self.perms or "admin" in self.perms

    def _read_log(self) -> None:
        if self.job_id is None:
            return
        if not self._can_read_log():
            self.log_title.value = ""
            self.log_search.layout.display = self.follow.layout.display = "none"
            self.log_view.value = "<span class='jm-muted'>The log needs the download_logs permission.</span>"
            return
        try:
            self._log_text = self.jm.log_tail(self.job_id, LOG_TAIL_LINES)
        except JobManagerError:
            self._log_text = ""
        self._log_read_at = time.monotonic()
        self._show_log()

    def _show_log(self) -> None:
        if not self._can_read_log():
            return
        following = self.follow.value and self._running
        state = ("following: read again every 2 s" if following else
                 "the job has finished" if not self._running else "not following")
        self.log_title.value = (f"<b>Log</b> <span class='jm-muted'>(last {LOG_TAIL_LINES} lines, newest at the "
                                f"bottom; {state}; the whole file with Download log)</span>")
        self.log_view.value = log_html(self._log_text, self.log_search.value.strip(), following)

    def follow_tick(self) -> None:
        """Called every second by the dashboard: read a running job's log again when it is due."""
        if (self.job_id is not None and self._running and self.follow.value and self._can_read_log()
                and time.monotonic() - self._log_read_at >= FOLLOW_S):
            self._read_log()

    def _retry(self, task: int | None, success: str) -> None:
        job_id = self.job_id
        if job_id is not None:  # the buttons show only while a job is open
            self._act(lambda: self.jm.retry(job_id, task=task), success)

    def _act(self, fn: Callable[[], Any], success: str) -> None:
        self.messages.attempt(fn, success)
        self.on_change()
        self.refresh()

    def _download_log(self) -> None:
        job_id = self.job_id
        if job_id is None:
            return

        def build() -> Path:
            chunks = self.jm.log_chunks(job_id)
            out = Path(tempfile.mkdtemp(prefix="jm-log-")) / f"job-{job_id}.log"
            with out.open("wb") as dst:
                for chunk in chunks:
                    dst.write(chunk)
            return out

        path = self.messages.attempt(build)
        if path is not None:
            self.downloads.offer(path, path.name, f"Log of job {job_id} ready ({fmt.size(path.stat().st_size)}):",
                                 job_id=job_id)
