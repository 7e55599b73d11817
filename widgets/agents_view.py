"""The Agents tab: each agent's status for troubleshooting, a throughput sparkline, stop, log tail."""

from __future__ import annotations

import html
from functools import partial

import ipywidgets as w
import pandas as pd

from jobmanager import JobManager

from . import format as fmt
from .models import Messages
from .theme import STATE_COLORS, badge

ORDER = {"lost": 0, "busy": 1, "idle": 2, "offline": 3}


def sparkline(values: list[int], color: str = "#3b82f6", width: int = 120, height: int = 22) -> str:
    """A tiny inline SVG bar chart (tasks finished per bucket)."""
    if not values:
        values = [0]
    top = max(values) or 1
    bw = width / len(values)
    bars = "".join(
        f"<rect x='{i * bw + 1:.1f}' y='{height - max(1.0, v / top * (height - 2)):.1f}' width='{bw - 2:.1f}' "
        f"height='{max(1.0, v / top * (height - 2)):.1f}' fill='{color if v else '#e2e8f0'}'/>"
        for i, v in enumerate(values))
    return (f"<svg class='jm-spark' width='{width}' height='{height}' role='img' "
            f"aria-label='tasks per 5 min: {', '.join(map(str, values))}'>{bars}</svg>")


def agents_table(df: pd.DataFrame, throughput: dict[str, list[int]]) -> str:
    rows = []
    df = df.assign(_o=df["status"].map(ORDER).fillna(9)).sort_values(["_o", "name"])
    for _, a in df.iterrows():
        current = ", ".join(f"job {t['job']} task {t['task']}" for t in a["current_tasks"]) or ""
        dot = STATE_COLORS.get(a["status"], ("#64748b", ""))[0]
        lost = " style='background:#fff1f2'" if a["status"] == "lost" else ""
        rows.append(
            f"<tr{lost}><td><span class='jm-dot' style='background:{dot}'></span><b>{html.escape(a['name'])}</b></td>"
            f"<td>{badge(a['status'])}</td><td class='num' title='seconds since the last heartbeat'>"
            f"{fmt.duration(a['heartbeat_age_s'])}</td><td>{html.escape(str(a['host']))}</td>"
            f"<td class='num'>{a['pid']}</td><td class='num'>{a['busy']} / {a['workers']}</td>"
            f"<td>{html.escape(current)}</td><td class='num'>{a['done']:,}</td><td class='num'>{a['failed']:,}</td>"
            f"<td class='num'>{'' if pd.isna(a['cpu_percent']) else f'{a.cpu_percent:.0f}%'}</td>"
            f"<td class='num'>{'' if pd.isna(a['rss_mb']) else f'{a.rss_mb:.0f} MB'}</td>"
            f"<td class='num'>{fmt.duration(a['uptime_s'])}</td>"
            f"<td>{sparkline(throughput.get(a['name'], []))}</td></tr>")
    return ("<table class='jm-table'><tr><th>Agent</th><th>Status</th><th class='num'>Heartbeat</th><th>Host</th>"
            "<th class='num'>PID</th><th class='num'>Busy</th><th>Running now</th><th class='num'>Done</th>"
            "<th class='num'>Failed</th><th class='num'>CPU</th><th class='num'>Memory</th><th class='num'>Up</th>"
            "<th>Last hour</th></tr>" + "".join(rows) + "</table>")


class AgentsTab(w.VBox):
    def __init__(self, jm: JobManager, messages: Messages, permissions: set[str]) -> None:
        self.jm, self.messages = jm, messages
        self.df = pd.DataFrame()
        self.table = w.HTML()
        self.pick = w.Dropdown(description="Agent", options=[], layout=w.Layout(width="260px"))
        self.stop = w.Button(description="Stop (drain)", icon="stop")
        self.show_log = w.Button(description="View log", icon="file-text")
        can_manage = "manage_agents" in permissions or "admin" in permissions
        self.stop.disabled = not can_manage
        self.stop.tooltip = ("Finish running tasks, then stop" if can_manage else "needs the manage_agents permission")
        self.stop.on_click(lambda _: self._stop())
        self.show_log.on_click(lambda _: self._log())
        self.log_view = w.HTML()
        self.confirm = w.HBox()
        self.confirm.add_class("jm-confirm")
        bar = w.HBox([self.pick, self.stop, self.show_log])
        bar.add_class("jm-toolbar")
        super().__init__([self.table, bar, self.confirm, self.log_view])

    def refresh(self) -> None:
        df = self.messages.attempt(self.jm.agents)
        if df is None:
            return
        self.df = df
        if df.empty:
            self.table.value = ("<div class='jm-empty'>No agents yet. Start one with "
                                "<code>jobmanager agent --name a1</code>.</div>")
        else:
            throughput = self.messages.attempt(lambda: self.jm.agent_throughput(60, 12)) or {}
            self.table.value = agents_table(df, throughput)
        names = list(df["name"]) if not df.empty else []
        if list(self.pick.options) != names:
            keep = self.pick.value
            self.pick.options = names
            self.pick.value = keep if keep in names else (names[0] if names else None)

    def counts(self) -> dict[str, int]:
        if self.df.empty:
            return {}
        return self.df["status"].value_counts().to_dict()

    def running_now(self, name: str) -> str:
        """What agent ``name`` runs now, in words: "job 12 "Quarterly archive" (tasks 3, 4)" or "nothing"."""
        if self.df.empty or name not in set(self.df["name"]):
            return "nothing"
        tasks = self.df[self.df["name"] == name].iloc[0]["current_tasks"] or []
        by_job: dict[int, list[int]] = {}
        for t in tasks:
            by_job.setdefault(int(t["job"]), []).append(int(t["task"]))
        parts = []
        for job_id, numbers in by_job.items():
            job = self.messages.attempt(partial(self.jm.job, job_id))
            title = f" \u201c{job.name}\u201d" if job is not None and job.name else ""
            parts.append(f"job {job_id}{title} (task{'s' if len(numbers) != 1 else ''} "
                         f"{', '.join(map(str, sorted(numbers)))})")
        return "; ".join(parts) or "nothing"

    def _stop(self) -> None:
        """Ask first, naming the agent and what it runs now; the agent drains only after "Stop ..." is clicked."""
        name = self.pick.value
        if not name:
            return
        running = self.running_now(name)
        yes = w.Button(description=f"Stop {name}", button_style="danger", icon="stop")
        no = w.Button(description="Keep it running")
        what = ("It is idle: it stops at once." if running == "nothing" else
                f"It is running {running}: it finishes these tasks first, then exits.")

        def confirmed(_: object) -> None:
            self.confirm.children = ()
            self.messages.attempt(lambda: self.jm.stop_agent(name), f"agent {name}: stop requested; it finishes "
                                                                    "its running tasks first")
            self.refresh()

        yes.on_click(confirmed)
        no.on_click(lambda _: setattr(self.confirm, "children", ()))
        self.confirm.children = (w.HTML(f"<b>&nbsp;Stop agent {html.escape(name)}?</b>&nbsp;{html.escape(what)}"
                                        "&nbsp;"), yes, no)

    def _log(self) -> None:
        name = self.pick.value
        if not name or self.df.empty:
            return
        text = self.messages.attempt(lambda: self.jm.agent_log(name, 80))
        if text is None:
            return
        lines = text.splitlines()
        self.log_view.value = (f"<b>Log of {html.escape(name)}</b> <span class='jm-muted'>(last 80 lines)</span>"
                          f"<div class='jm-log'>{html.escape(chr(10).join(lines))}</div>")
