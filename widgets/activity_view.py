"""The activity strip above the tabs: work processed and failed per minute and per hour, queue depth and wait.

It opens the dashboard the way Sidekiq's and Hangfire's do: one line of numbers (last hour) and two small bar
charts, collapsible to the line. The numbers come from ``jm.activity()`` (indexed reads over bounded time
ranges, :mod:`jobmanager.history.activity`); the strip re-reads them with the dashboard's refresh.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from jobmanager import JobManager

from . import format as fmt
from .models import Messages

PROCESSED_COLOR, FAILED_COLOR, EMPTY_COLOR = "#60a5fa", "#ef4444", "#e2e8f0"
#: the view's choice of what to count: all work, one job type or one agent
ALL = ("all work", "")


def bar_chart(processed: list[int], failed: list[int], starts: list[float], step: str, label: str) -> str:
    """An SVG bar chart, one bar per bucket: processed (blue) with its failed part (red) at the bottom.

    It stretches to its box's width (``preserveAspectRatio='none'``); each bar's tooltip gives its time and
    counts, and the whole chart has a text alternative for screen readers.
    """
    n = max(len(processed), 1)
    height = 40.0
    top = max(max(processed, default=0), 1)
    bars = []
    for i, (p, f, start) in enumerate(zip(processed, failed, starts, strict=True)):
        tip = html.escape(f"{fmt.exact(start, with_seconds=False)} ({step}): {p:,} processed, {f:,} failed")
        if p == 0:
            bars.append(f"<rect x='{i + 0.1:.2f}' y='{height - 1:.1f}' width='0.8' height='1' fill='{EMPTY_COLOR}'>"
                        f"<title>{tip}</title></rect>")
            continue
        h = max(1.5, p / top * (height - 2))
        hf = min(h, max(1.5, f / top * (height - 2))) if f else 0.0
        bars.append(f"<g><title>{tip}</title><rect x='{i + 0.1:.2f}' y='{height - h:.2f}' width='0.8' "
                    f"height='{h:.2f}' fill='{PROCESSED_COLOR}'/>"
                    + (f"<rect x='{i + 0.1:.2f}' y='{height - hf:.2f}' width='0.8' height='{hf:.2f}' "
                       f"fill='{FAILED_COLOR}'/>" if hf else "") + "</g>")
    total, bad = sum(processed), sum(failed)
    summary = html.escape(f"{label}: {total:,} processed, {bad:,} failed; busiest {step} {top if total else 0:,}")
    return (f"<svg class='jm-activity-chart' viewBox='0 0 {n} {height:.0f}' preserveAspectRatio='none' role='img' "
            f"aria-label='{summary}'>{''.join(bars)}</svg>")


def summary_line(activity: Any, by: str | None, key: str | None) -> str:
    """The strip's one line: the last hour's processed and failed, queued now, how long work waits."""
    processed, failed = activity.series("minute", by, key)
    p, f = sum(processed), sum(failed)
    rate = f"{f / p:.1%}" if p else "0%"
    depth = sum(n for n, _ in activity.queues.values())
    oldest = max((age for n, age in activity.queues.values() if n), default=0.0)
    queues = ", ".join(f"{html.escape(q)} {n:,}" for q, (n, _) in sorted(activity.queues.items()))
    parts = [
        f"<b>{p:,}</b> processed",
        f"<b class='{'jm-err' if f else ''}'>{f:,}</b> failed ({rate})",
        f"<span title='{'runnable tasks per queue: ' + queues if queues else 'nothing is waiting'}'>"
        f"<b>{depth:,}</b> queued</span>",
        f"oldest waiting <b>{fmt.duration(oldest) if depth else '–'}</b>",
        "mean wait <b>" + (fmt.duration(activity.wait_mean_s) if activity.wait_mean_s is not None else "–")
        + "</b>",
    ]
    return "<span class='jm-activity-line'>last hour: " + " · ".join(parts) + "</span>"


class ActivityPanel(w.VBox):
    """One line of numbers and two charts (per minute over the last hour, per hour over 7 days)."""

    def __init__(self, jm: JobManager, messages: Messages, days: int = 7) -> None:
        self.jm, self.messages, self.days = jm, messages, days
        self.activity: Any = None
        # folded at first: the line holds the numbers, and the grids keep their rows (20 at 1440x900)
        self.toggle = w.ToggleButton(value=False, description="Activity", icon="chevron-right",
                                     tooltip="Show or hide the activity charts", layout=w.Layout(width="auto"))
        self.toggle.add_class("jm-activity-toggle")
        self.toggle.observe(lambda _: self._show_open(), "value")
        self.line = w.HTML()
        self.line.add_class("jm-activity-summary")
        self.show = w.Dropdown(options=[ALL], value="", description="count", style={"description_width": "40px"},
                               layout=w.Layout(width="230px"))
        self.show.observe(lambda _: self.draw(), "value")
        self.minutes = w.HTML()
        self.hours = w.HTML()
        for chart in (self.minutes, self.hours):
            chart.add_class("jm-activity-cell")
        self.body = w.HBox([self.minutes, self.hours])
        self.body.add_class("jm-activity-body")
        top = w.HBox([self.toggle, self.line, w.HTML(layout=w.Layout(flex="1")), self.show])
        top.add_class("jm-activity-top")
        super().__init__([top, self.body])
        self.add_class("jm-activity")
        self._show_open()

    def _show_open(self) -> None:
        opened = bool(self.toggle.value)
        self.body.layout.display = None if opened else "none"
        self.toggle.icon = "chevron-down" if opened else "chevron-right"
        (self.add_class if opened else self.remove_class)("jm-activity-open")

    def refresh(self) -> None:
        activity = self.messages.attempt(lambda: self.jm.activity(self.days))
        if activity is None:
            return
        self.activity = activity
        options = [ALL, *((f"type: {t}", f"type:{t}") for t in activity.keys("type")),
                   *((f"agent: {a}", f"agent:{a}") for a in activity.keys("agent"))]
        if self.show.value not in {v for _, v in options}:  # the chosen type or agent has no work any more
            options.append((f"{self.show.value.replace(':', ': ', 1)}", self.show.value))
        if list(self.show.options) != options:
            self.show.options = options
        self.draw()

    def choice(self) -> tuple[str | None, str | None]:
        value = str(self.show.value or "")
        if ":" not in value:
            return None, None
        by, key = value.split(":", 1)
        return (by, key) if by in ("type", "agent") else (None, None)

    def draw(self) -> None:
        a = self.activity
        if a is None:
            return
        by, key = self.choice()
        what = "all work" if by is None else f"{by} {key}"
        self.line.value = summary_line(a, by, key)
        p, f = a.series("minute", by, key)
        self.minutes.value = (f"<div class='jm-activity-label'>per minute, last hour · {html.escape(what)}</div>"
                              + bar_chart(p, f, a.minute_starts, "minute", "per minute, last hour")
                              + "<div class='jm-activity-axis'><span>60 min ago</span><span>now</span></div>")
        p, f = a.series("hour", by, key)
        self.hours.value = (f"<div class='jm-activity-label'>per hour, last {self.days} days · "
                            f"{html.escape(what)}</div>"
                            + bar_chart(p, f, a.hour_starts, "hour", f"per hour, last {self.days} days")
                            + f"<div class='jm-activity-axis'><span>{self.days} d ago</span><span>now</span></div>")
