"""The Scheduled tab: one-time and recurring schedules, go to configuration, run now, the form."""

from __future__ import annotations

import html
import json
from typing import Any

import ipywidgets as w
import pandas as pd
from ipydatagrid import DataGrid, TextRenderer, VegaExpr

from jobmanager import JobManager
from jobmanager.schedules.triggers import local_label

from . import format as fmt
from .keyboard import on_enter
from .models import Messages, ScheduleFormModel
from .theme import STATE_COLORS, badge, grid_height, label

EMPTY = ("No schedules yet. Create one with <b>New schedule</b>, <code>jobmanager schedule add</code>, "
         "<code>jm.schedule(...)</code> in a notebook, or a <code>schedules.toml</code> in the home.")


def next_run_text(at: Any, where: str, now: float | None = None) -> str:
    """"in 26 min · 2026-03-29 03:00 CEST (Europe/Berlin)": relative, then the schedule's own zone."""
    return f"{fmt.relative(at, now)} · {where}" if where and pd.notna(at) else ""


def present_schedules(df: pd.DataFrame, now: float | None = None) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=["Name", "Type", "When", "Next run", "Last run", "Last result", "Enabled",
                                     "Runs as", "Configured in"])
    return pd.DataFrame({
        "Name": df["name"], "Type": df["type"], "When": df["description"],
        "Next run": [next_run_text(a, s, now) for a, s in zip(df["next_run_at"], df["next_run"], strict=True)],
        "Last run": df["last_run_at"].map(lambda v: fmt.relative(v) if pd.notna(v) else "never"),
        "Last result": [f"{label(s)} (#{int(j)})" if pd.notna(j) and s else "" for s, j in
                        zip(df["last_job_state"], df["last_job_id"], strict=True)],
        "Enabled": df["enabled"].map(lambda e: "enabled" if e else "disabled"),
        "Runs as": df["runs_as"], "Configured in": df["source_kind"],
    })


class ScheduleForm(w.VBox):
    """New / edit schedule: exactly one trigger, parameters as JSON; the service checks everything."""

    def __init__(self, on_save: Any, jm: JobManager | None = None) -> None:
        self.on_save = on_save
        self.editing: str | None = None
        self.name = w.Text(description="Name")
        self.type = w.Text(description="Job type", value="sleep")
        self.kind = w.ToggleButtons(options=[("Cron", "cron"), ("Every", "every"), ("Once at", "at")], value="cron")
        self.trigger = w.Text(description="Trigger", placeholder="0 2 * * 1-5  |  15m  |  2026-12-01T09:00")
        self.tz = w.Text(description="Time zone", value="UTC")
        self.params = w.Textarea(description="Params", value="{}", layout=w.Layout(width="420px", height="70px"))
        self.misfire = w.Dropdown(description="Misfire", options=[("run once now", "run_once"), ("skip", "skip")])
        # the jobs' options; blank keeps the job type's own
        self.queue = w.Text(description="Queue", placeholder="the job type's")
        self.soft_limit = w.Text(description="Soft limit", placeholder="seconds (blank: the type's)")
        self.hard_limit = w.Text(description="Hard limit", placeholder="seconds (blank: the type's)")
        self.notify = w.Textarea(description="Notify", layout=w.Layout(width="420px", height="52px"),
                                 placeholder="one rule a line, e.g. failed:mailto:ops@example.org")
        self.preview = w.HTML()  # the next 5 runs and the description, or the one-line error, as you type
        self.model = ScheduleFormModel(jm) if jm is not None else None
        if self.model is not None:
            self.kind.observe(lambda ch: setattr(self.model, "kind", ch["new"]), names="value")
            self.trigger.observe(lambda ch: setattr(self.model, "value", ch["new"]), names="value")
            self.tz.observe(lambda ch: setattr(self.model, "tz", ch["new"]), names="value")
            self.model.observe(lambda _: self._render_preview(), names=["description", "runs", "error"])
        save = w.Button(description="Save schedule", button_style="primary", icon="check")
        cancel = w.Button(description="Cancel")
        save.on_click(lambda _: self.on_save(self))
        for box in (self.name, self.type, self.trigger, self.tz):  # Enter saves, as the button does
            on_enter(box, lambda: self.on_save(self))
        cancel.on_click(lambda _: self.close_form())
        super().__init__([w.HTML("<b>Schedule</b>"), self.name, self.type, self.kind, self.trigger, self.tz,
                          self.preview, self.params, self.misfire, self.queue, self.soft_limit, self.hard_limit,
                          self.notify, w.HBox([save, cancel])])
        self.add_class("jm-details")
        self.layout.display = "none"

    def open_form(self, row: dict[str, Any] | None = None) -> None:
        self.editing = row["name"] if row else None
        self.name.value = row["name"] if row else ""
        self.name.disabled = row is not None
        self.type.value = row["type"] if row else "sleep"
        kind = {"cron": "cron", "interval": "every", "once": "at"}[row["trigger_kind"]] if row else "cron"
        self.kind.value = kind
        self.trigger.value = row["trigger_value"] if row else ""
        self.tz.value = row["timezone"] if row else "UTC"
        self.params.value = json.dumps(row["params"]) if row else "{}"
        self.misfire.value = row["misfire"] if row else "run_once"
        options = (row or {}).get("options") or {}
        self.queue.value = str(options.get("queue") or "")
        self.soft_limit.value = "" if options.get("soft_limit") is None else f"{options['soft_limit']:g}"
        self.hard_limit.value = "" if options.get("hard_limit") is None else f"{options['hard_limit']:g}"
        self.notify.value = "\n".join(f"{','.join(r['on'])}:{r['to']}" for r in options.get("notify") or [])
        self.layout.display = None

    def _render_preview(self) -> None:
        m = self.model
        if m is None or not (m.error or m.description):
            self.preview.value = ""
        elif m.error:
            self.preview.value = f"<div class='jm-message jm-message-error'>{html.escape(m.error)}</div>"
        else:
            runs = "".join(f"<li>{html.escape(r)}</li>" for r in m.runs)
            self.preview.value = (f"<div class='jm-preview'><b>{html.escape(m.description)}</b>"
                                  f"<div class='jm-muted'>next runs:</div><ol>{runs}</ol></div>")

    def close_form(self) -> None:
        self.layout.display = "none"

    def values(self) -> dict[str, Any]:
        try:
            params = json.loads(self.params.value or "{}")
        except json.JSONDecodeError as exc:
            from jobmanager import BadParams

            raise BadParams(f"parameters are not valid JSON: {exc}") from None
        return {"type": self.type.value.strip(), "params": params, self.kind.value: self.trigger.value.strip(),
                "tz": self.tz.value.strip() or "UTC", "misfire": self.misfire.value, "options": self.options()}

    def options(self) -> dict[str, Any]:
        """The jobs' options as typed (the service checks them); a blank field keeps the type's own."""
        from jobmanager import BadParams
        from jobmanager.notify.rules import parse

        def seconds(box: w.Text, what: str) -> float | None:
            text = box.value.strip()
            if not text:
                return None
            try:
                return float(text)
            except ValueError:
                raise BadParams(f"{what} must be a number of seconds, not {text[:40]!r}") from None

        rules = [parse(line.strip(), "notify") for line in self.notify.value.splitlines() if line.strip()]
        return {"queue": self.queue.value.strip() or None, "soft_limit": seconds(self.soft_limit, "soft limit"),
                "hard_limit": seconds(self.hard_limit, "hard limit"), "notify": rules or None}


class SchedulesTab(w.VBox):
    def __init__(self, jm: JobManager, messages: Messages, permissions: set[str]) -> None:
        self.jm, self.messages = jm, messages
        self.rows = pd.DataFrame()
        self.current: str | None = None
        can = "manage_schedules" in permissions or "admin" in permissions
        self.buttons: dict[str, w.Button] = {}
        for key, text, icon in (("config", "Go to configuration", "external-link"), ("run", "Run now", "play"),
                                ("enable", "Enable", "toggle-on"), ("disable", "Disable", "toggle-off"),
                                ("edit", "Edit", "pencil"), ("delete", "Delete…", "trash"),
                                ("new", "New schedule", "plus")):
            b = w.Button(description=text, icon=icon, layout=w.Layout(width="auto"))
            b.on_click(self._on(key))
            if key != "config" and not can:
                b.disabled, b.tooltip = True, "needs the manage_schedules permission"
            self.buttons[key] = b
        self.confirm = w.HBox()
        bar = w.HBox([*self.buttons.values(), self.confirm])
        bar.add_class("jm-toolbar")
        self.grid = DataGrid(present_schedules(self.rows), selection_mode="row", base_row_size=26,
                             base_column_size=130, layout=w.Layout(height="200px"), header_visibility="column",
                             column_widths={"Name": 170, "Type": 100, "When": 250, "Next run": 280, "Last run": 90,
                                            "Last result": 160, "Enabled": 75, "Runs as": 75, "Configured in": 100},
                             renderers={"Enabled": TextRenderer(
                                 text_color=VegaExpr(f"cell.value === 'enabled' ? '{STATE_COLORS['enabled'][0]}' : "
                                                     f"'{STATE_COLORS['disabled'][0]}'"),
                                 horizontal_alignment="center")},
                             grid_style={"header_background_color": "#f1f5f9"})
        self.grid.on_cell_click(self._on_click)
        self.empty = w.HTML(f'<div class="jm-empty">{EMPTY}</div>')
        self.detail = w.HTML()
        self.form = ScheduleForm(self._save, jm)
        super().__init__([bar, self.grid, self.empty, self.detail, self.form])

    def refresh_total(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        df = self.messages.attempt(self.jm.schedules)
        if df is None:
            return
        self.rows = df.reset_index(drop=True)
        shown = present_schedules(self.rows)  # "in 26 min · 03:00 CEST (Europe/Berlin)"
        self.grid.data = shown
        self.grid.layout.height = grid_height(len(shown), "calc(100vh - 330px - var(--jm-activity-h, 0px))", least=160)
        self.grid.layout.display = "none" if shown.empty else None
        self.empty.layout.display = None if shown.empty else "none"
        if self.current is not None and self.current in set(self.rows["name"]):
            self._show(self.current)

    def _on_click(self, cell: dict[str, Any]) -> None:
        row = cell.get("primary_key_row", cell.get("row"))
        if row is not None and 0 <= row < len(self.rows):
            self._show(str(self.rows.iloc[row]["name"]))

    def _show(self, name: str) -> None:
        self.current = name
        s = self.messages.attempt(lambda: self.jm.get_schedule(name))
        if s is None:
            return
        runs = "".join(
            f"<tr><td>{fmt.exact(r['fired_at'])}</td><td>{html.escape(r['outcome'])}</td>"
            f"<td class='num'>{r['job_id'] or ''}</td><td>{badge(r['job_state']) if r['job_state'] else ''}</td>"
            f"<td class='jm-muted'>{html.escape(r['message'] or '')}</td></tr>" for r in s["runs"][:8])
        self.detail.value = (
            f"<div class='jm-details'><h3>{html.escape(s['name'])}</h3>"
            f"<div>{html.escape(s['description'])} · {badge('enabled' if s['enabled'] else 'disabled')} · "
            f"misfire {s['misfire']} · runs as {html.escape(s['runs_as'])}</div>"
            f"{self._next_run_html(s)}"
            f"<div class='jm-muted'>configured in {html.escape(s['source_kind'])}"
            f"{': ' + html.escape(s['source_ref']) if s['source_ref'] else ''}</div>"
            f"<table class='jm-table'><tr><th>Fired</th><th>Outcome</th><th class='num'>Job</th><th>Result</th>"
            f"<th></th></tr>{runs}</table></div>")

    @staticmethod
    def _next_run_html(s: dict[str, Any], now: float | None = None) -> str:
        """Next run in the schedule's own zone with "in 26 min"; the exact UTC time on hover."""
        at = s.get("next_run_at")
        if at is None or not s.get("enabled"):
            return "<div>next run: none</div>"
        text = next_run_text(at, local_label(at, s["timezone"]), now)
        return f"<div>next run: <span title='{html.escape(fmt.exact(at))}'>{html.escape(text)}</span></div>"

    def _on(self, key: str) -> Any:
        def handler(_: Any) -> None:
            if key == "new":
                return self.form.open_form()
            name = self.current
            if name is None:
                return self.messages.info("click a schedule first")
            if key == "config":
                return self._go_to_configuration(name)
            if key == "edit":
                row = self.messages.attempt(lambda: self.jm.get_schedule(name))
                return self.form.open_form(row) if row else None
            if key == "delete":
                yes = w.Button(description=f"Delete {name}", button_style="danger")
                no = w.Button(description="Keep it")

                def delete(_: Any) -> None:
                    self.messages.attempt(lambda: self.jm.delete_schedule(name), f"schedule {name} deleted")
                    self.current = None
                    self.confirm.children = ()
                    self.detail.value = ""
                    self.refresh()

                yes.on_click(delete)
                no.on_click(lambda _: setattr(self.confirm, "children", ()))
                self.confirm.children = (yes, no)
                return None
            call = {"run": lambda: self.jm.run_schedule_now(name), "enable": lambda: self.jm.enable_schedule(name),
                    "disable": lambda: self.jm.disable_schedule(name)}[key]
            result = self.messages.attempt(call)
            if result is not None or key != "run":
                if key == "run" and result is not None:
                    self.messages.info(f"schedule {name}: job {result} submitted")
                elif self.messages.kind != "error":
                    self.messages.info(f"schedule {name}: {key}d")
            self.refresh()
            return None
        return handler

    def _go_to_configuration(self, name: str) -> None:
        s = self.messages.attempt(lambda: self.jm.get_schedule(name))
        if s is None:
            return
        if s["source_kind"] in ("dashboard", "cli"):
            self.form.open_form(s)
            self.messages.info(f"{name} is configured here (from the {s['source_kind']}); edit it below")
        else:
            where = s["source_ref"] or "unknown"
            self.messages.info(f"{name} is configured in {s['source_kind']}: {where}")
            self.detail.value += (f"<div class='jm-message jm-message-info'>Configured in <b>"
                                  f"{html.escape(where)}</b> — open it there; edits here would be overwritten "
                                  "the next time that source runs.</div>")

    def _save(self, form: ScheduleForm) -> None:
        def save() -> Any:
            values = form.values()
            if form.editing:
                return self.jm.edit_schedule(form.editing, **values)
            return self.jm.create_schedule(form.name.value.strip(), values.pop("type"), values.pop("params"),
                                           source="dashboard", **values)

        if self.messages.attempt(save, "schedule saved") is not None:
            form.close_form()
            self.refresh()
