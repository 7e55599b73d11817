"""The In Progress and Completed tabs: filters, an ipydatagrid page, actions, paging, details."""

from __future__ import annotations

import functools
import html
import time
from typing import Any

import ipywidgets as w
import pandas as pd
from ipydatagrid import BarRenderer, DataGrid, TextRenderer, VegaExpr

from jobmanager import JobManager
from jobmanager.bulk import MAX_BULK

from . import format as fmt
from .details import DetailsPanel
from .downloads import DownloadArea
from .models import JOB_SORT_KEYS, TIME_RANGES, JobsModel, Messages, present_jobs
from .theme import PAGE_ROOM, STATE_COLORS, grid_height, label

#: the bulk buttons of each tab, what they say, and the permission each needs (the service checks it again)
BULK = {"in-progress": ("cancel", "pause", "resume"), "completed": ("retry",)}
BULK_TEXT = {"retry": "Retry all failed ({n})", "cancel": "Cancel all matching ({n})",
             "pause": "Pause all ({n})", "resume": "Resume all ({n})"}
BULK_ICONS = {"retry": "repeat", "cancel": "stop", "pause": "pause", "resume": "play"}
BULK_PERMS = {"retry": "retry_tasks", "cancel": "manage_jobs", "pause": "manage_jobs", "resume": "manage_jobs"}
BULK_VERB = {"retry": "Retry", "cancel": "Cancel", "pause": "Pause", "resume": "Resume"}
BULK_NOUN = {"retry": "failed jobs", "cancel": "jobs", "pause": "queued or running jobs", "resume": "paused jobs"}

EMPTY = {
    "in-progress": "No jobs in progress. Submit one with <code>jobmanager submit sleep -p tasks=3</code> "
                   "or from a notebook with <code>jm.submit(...)</code>.",
    "completed": "No finished jobs yet: they appear here as running jobs finish.",
}
NO_MATCH = "No jobs match these filters."


#: the first column: a box per row (a click picks the row without opening its details); the header box picks
#: or clears the whole page
PICK, PICKED, ALL_PICKED = "☐", "☑", "☑ "
COLUMN_WIDTHS = {PICK: 44, ALL_PICKED: 44,
                 "Job": 60, "Name": 210, "Type": 100, "State": 110, "Result": 170, "Progress": 120, "Agent": 130,
                 "Started": 85, "Elapsed": 80, "ETA": 100, "Owner": 80, "Case": 90, "Priority": 64, "Tasks": 100,
                 "Failed": 64, "Cancelled": 92, "Warnings": 80, "Duration": 100, "Finished": 100}


def _state_color_expr(which: int) -> VegaExpr:
    expr = "'transparent'" if which == 1 else "'#0f172a'"
    for state, colors in STATE_COLORS.items():
        expr = f"cell.value === '{label(state)}' ? '{colors[which]}' : ({expr})"
    return VegaExpr(expr)


def _renderers(tab: str) -> dict[str, Any]:
    state_col = "State" if tab == "in-progress" else "Result"
    right = TextRenderer(horizontal_alignment="right")
    pick = TextRenderer(horizontal_alignment="center", font="16px system-ui, sans-serif", text_color="#1d4ed8")
    r: dict[str, Any] = {
        PICK: pick, ALL_PICKED: pick,
        state_col: TextRenderer(background_color=_state_color_expr(1), text_color=_state_color_expr(0),
                                font="bold 12px system-ui, sans-serif", horizontal_alignment="center"),
        "Job": right, "Priority": right, "Failed": right, "Cancelled": right,
        # a job that printed/ran with warnings (missing glyphs, skipped attachments) stands out, never silent
        "Warnings": TextRenderer(horizontal_alignment="right",
                                 text_color=VegaExpr("cell.value > 0 ? '#c2410c' : '#0f172a'"),
                                 background_color=VegaExpr("cell.value > 0 ? '#ffedd5' : 'transparent'")),
    }
    if tab == "in-progress":
        r["Progress"] = BarRenderer(
            bar_value=VegaExpr("cell.value"), format=".0%", horizontal_alignment="center",
            bar_color=VegaExpr("cell.metadata.data['State'] === 'paused' ? '#f59e0b' : "
                               "(cell.metadata.data['State'] === 'queued' ? '#94a3b8' : '#3b82f6')"),
        )
    return r


class JobsTab(w.VBox):
    """A job tab bound to a :class:`JobsModel`; returns itself to be displayed."""

    def __init__(self, jm: JobManager, messages: Messages, tab: str, permissions: set[str],
                 downloads: DownloadArea) -> None:
        self.model = JobsModel(jm, messages, tab)
        self.jm, self.messages, self.tab, self.perms = jm, messages, tab, permissions
        self.downloads = downloads
        self._building = True
        self._rendered_at = 0.0
        #: a header click sorts; the grid also selects the whole column (every row) on it, which is undone
        self._header_click_at = 0.0
        self._selection_changed_at = 0.0
        self._selected_before: list[int] = []
        self._sort_column = ""  # the display column the user sorted by (it shows the arrow)
        #: a click on a row's box toggles that row; the grid also makes it the only selected row, which is undone
        self._pick_click_at = 0.0
        self._row_selected_at = 0.0
        self._picks_before: list[int] = []
        self._arrow_column = ""

        # -- filters --------------------------------------------------------------------------
        states = ("queued", "running", "paused") if tab == "in-progress" else (
            "completed", "completed_with_errors", "failed", "cancelled")
        self.search = w.Text(placeholder="search name or error…", layout=w.Layout(width="180px"))
        self.search.add_class("jm-search")  # the page's `/` key focuses it
        self.state = w.Dropdown(options=[("Any state", "")] + [(label(s), s) for s in states],
                                layout=w.Layout(width="150px"))
        types = sorted(jm.job_types())
        self.type = w.Dropdown(options=[("Any type", "")] + [(t, t) for t in types], layout=w.Layout(width="120px"))
        self.case = w.Text(placeholder="case", layout=w.Layout(width="90px"))
        self.owner = w.Text(placeholder="owner", layout=w.Layout(width="90px"))
        self.agent = w.Text(placeholder="agent", layout=w.Layout(width="90px"))
        self.time_range = w.Dropdown(options=list(TIME_RANGES), layout=w.Layout(width="110px"))
        for widget, trait in ((self.search, "search"), (self.state, "state"), (self.type, "type"),
                              (self.case, "case"), (self.owner, "owner"), (self.agent, "agent"),
                              (self.time_range, "time_range")):
            widget.observe(self._on_filter(trait), "value")
        self.refresh_button = w.Button(icon="refresh", tooltip="Refresh now", layout=w.Layout(width="40px"))
        self.refresh_button.on_click(lambda _: self.model.refresh())
        self.export_format = w.Dropdown(options=["CSV", "Excel", "Parquet"], layout=w.Layout(width="80px"))
        self.export_button = w.Button(description="Export", icon="download", tooltip="Export the current view",
                                      layout=w.Layout(width="90px"))
        self.export_button.on_click(lambda _: self._export())
        filters = w.HBox([self.search, self.state, self.type, self.case, self.owner, self.agent, self.time_range,
                          self.refresh_button, self.export_format, self.export_button])
        filters.add_class("jm-toolbar")

        # -- actions ---------------------------------------------------------------------------
        self.buttons: dict[str, w.Button] = {}
        if tab == "in-progress":
            specs = [("pause", "Pause", "pause", "manage_jobs"), ("resume", "Resume", "play", "manage_jobs"),
                     ("cancel", "Cancel…", "stop", "manage_jobs"), ("up", "Priority +1", "arrow-up", "manage_jobs"),
                     ("down", "Priority −1", "arrow-down", "manage_jobs")]
        else:
            specs = [("retry", "Retry failed tasks", "repeat", "retry_tasks")]
        for key, text, icon, perm in specs:
            b = w.Button(description=text, icon=icon, layout=w.Layout(width="auto"))
            allowed = perm in permissions or "admin" in permissions
            b.disabled = not allowed
            b.tooltip = text if allowed else f"needs the {perm} permission"
            b.on_click(self._on_action(key))
            self.buttons[key] = b
        # -- bulk actions: every job matching the filters, on every page (jobmanager/bulk.py) --------------
        self.bulk_buttons: dict[str, w.Button] = {}
        self.bulk_counts: dict[str, int] = {}
        for action in BULK[tab]:
            b = w.Button(description=BULK_TEXT[action].format(n="…"), icon=BULK_ICONS[action],
                         layout=w.Layout(width="auto"))
            b.add_class(f"jm-bulk-{action}")
            b.on_click(lambda _, a=action: self.ask_bulk(a))
            self.bulk_buttons[action] = b
        self.bulk_allowed = {a: BULK_PERMS[a] in permissions or "admin" in permissions for a in BULK[tab]}
        self.confirm = w.HBox()
        self.confirm.add_class("jm-confirm")
        self.selection_label = w.HTML("")
        actions = w.HBox([*self.buttons.values(), *self.bulk_buttons.values(), self.selection_label])
        actions.add_class("jm-toolbar")

        # -- grid, pager, details ------------------------------------------------------------------
        self.grid = DataGrid(present_jobs(pd.DataFrame(), tab), selection_mode="row", base_row_size=26,
                             base_column_size=110, header_visibility="column", renderers=_renderers(tab),
                             layout=w.Layout(height="150px", width="100%"), column_widths=COLUMN_WIDTHS,
                             grid_style={"header_background_color": "#f1f5f9", "selection_fill_color":
                                         "rgba(59,130,246,0.18)", "selection_border_color": "#3b82f6"})
        self.grid.observe(self._on_selection, "selections")
        self.grid.observe(self._on_transforms, "_transforms")
        self.grid.on_cell_click(self._on_click)
        self.empty_text = w.HTML(EMPTY[tab])
        self.clear_filters = w.Button(description="Clear filters", icon="times", layout=w.Layout(width="auto"))
        self.clear_filters.on_click(lambda _: self.apply_filters({}))
        self.empty = w.VBox([self.empty_text, self.clear_filters])
        self.empty.add_class("jm-empty")
        self.prev = w.Button(icon="chevron-left", tooltip="Previous page", layout=w.Layout(width="36px"))
        self.next = w.Button(icon="chevron-right", tooltip="Next page", layout=w.Layout(width="36px"))
        self.prev.on_click(lambda _: self.model.set_page(self.model.page - 1))
        self.next.on_click(lambda _: self.model.set_page(self.model.page + 1))
        self.page_label = w.HTML("")
        self.sort_label = w.HTML("")
        hint = w.HTML('<span class="jm-muted">&nbsp; click a row for its details · ☐ picks rows · '
                      '<kbd>/</kbd> search · <kbd>↑</kbd><kbd>↓</kbd> <kbd>Enter</kbd> <kbd>Esc</kbd> · '
                      'a header click sorts every page</span>')
        hint.add_class("jm-hint")
        pager = w.HBox([self.page_label, self.prev, self.next, self.sort_label, hint])
        pager.add_class("jm-pager")
        self.details = DetailsPanel(jm, messages, permissions, downloads, on_change=self.model.refresh)

        self.details.layout.observe(self._size_grid, "display")
        self.model.observe(self._render, ["rows"])
        self._building = False
        super().__init__([filters, actions, self.confirm, self.grid, self.empty, pager, self.details])

    # -- the page's link ----------------------------------------------------------------------------
    def _filter_widgets(self) -> dict[str, Any]:
        return {"search": self.search, "state": self.state, "type": self.type, "case": self.case,
                "owner": self.owner, "agent": self.agent, "time": self.time_range}

    def link_filters(self) -> dict[str, str]:
        """The filters in effect, as a link writes them (only the ones that are set)."""
        return {k: str(box.value) for k, box in self._filter_widgets().items()
                if box.value and not (k == "time" and box.value == "Any time")}

    def apply_filters(self, filters: dict[str, str]) -> list[str]:
        """Set the filter bar (values already checked by link.parse); one refresh, not one per filter.

        Returns the filters left out because this tab offers no such choice (a state of the other tab).
        """
        left_out = []
        self._building = True
        try:
            for key, box in self._filter_widgets().items():
                value = filters.get(key, "Any time" if key == "time" else "")
                choices = [o[1] if isinstance(o, tuple) else o for o in getattr(box, "options", ())]
                if isinstance(box, w.Dropdown) and value not in choices:
                    left_out.append(f"{key} {value!r} (not a choice in this tab)")
                    continue
                box.value = value
        finally:
            self._building = False
        self.model.page = 1
        self.model.refresh()
        return left_out

    def link_choices(self) -> tuple[tuple[str, ...], set[str], set[str]]:
        """What a link may filter this tab by: states, job types, time ranges."""
        states = tuple(str(v) for _, v in self.state.options if v)
        types = {str(v) for _, v in self.type.options if v}
        return states, types, set(TIME_RANGES)

    # -- model -> view ----------------------------------------------------------------------------
    def refresh(self) -> None:
        self.model.refresh()
        self.details.refresh()

    def refresh_total(self) -> None:
        self.model.refresh_total()

    def _render(self, _change: Any = None) -> None:
        m = self.model
        df = present_jobs(m.rows, self.tab)
        df = self._with_sort_arrow(df)
        picked = set(m.selected)
        ids = [int(i) for i in m.rows["id"]] if not m.rows.empty else []
        everything = bool(ids) and all(i in picked for i in ids)
        df.insert(0, ALL_PICKED if everything else PICK, [PICKED if i in picked else PICK for i in ids])
        self._rendered_at = time.monotonic()
        self.grid.data = df
        self._size_grid()
        self._reselect()
        self.grid.layout.display = "none" if df.empty else None
        self.empty.layout.display = None if df.empty else "none"
        filtered = bool(m.filters())
        self.empty_text.value = NO_MATCH if filtered else EMPTY[self.tab]
        self.clear_filters.layout.display = None if filtered else "none"
        self.page_label.value = f'<span class="jm-muted">{m.page_label()}</span>'
        self.prev.disabled = m.page <= 1
        self.next.disabled = m.page * 100 >= m.total
        sort_name = next((k for k, v in JOB_SORT_KEYS.items() if v == m.sort), m.sort)
        self.sort_label.value = f'<span class="jm-muted">&nbsp; sorted by {sort_name} {"↓" if m.desc else "↑"}</span>'
        self._show_selection()
        self._show_bulk_counts()

    def _size_grid(self, _: Any = None) -> None:
        """The page's height for the rows; less while the details panel is open below the grid."""
        room = "40vh" if self.details.layout.display != "none" else PAGE_ROOM
        self.grid.layout.height = grid_height(len(self.model.rows), room, least=200)

    def _with_sort_arrow(self, df: pd.DataFrame) -> pd.DataFrame:
        """Name the sorted column "Name ↑" / "Name ↓" (the header shows which way the pages are sorted)."""
        m = self.model
        column = self._sort_column if JOB_SORT_KEYS.get(self._sort_column) == m.sort else next(
            (c for c in df.columns if JOB_SORT_KEYS.get(str(c)) == m.sort), "")
        titled = f"{column} {'↓' if m.desc else '↑'}" if column in df.columns else ""
        if titled != self._arrow_column:  # widths and renderers are keyed by the header's text
            widths, renderers = dict(COLUMN_WIDTHS), _renderers(self.tab)
            if titled:
                widths[titled] = widths.pop(column, 110) + 14
                if column in renderers:
                    renderers[titled] = renderers.pop(column)
            self.grid.column_widths = widths
            self.grid.renderers = renderers
            self._arrow_column = titled
        return df.rename(columns={column: titled}) if titled else df

    def _reselect(self) -> None:
        """Keep the selected jobs selected after a refresh (rows may have moved)."""
        ids = list(self.model.rows["id"]) if not self.model.rows.empty else []
        rows = [ids.index(i) for i in self.model.selected if i in ids]
        last = len(self.grid.data.columns) - 1
        self._building = True
        try:
            self.grid.selections = [{"r1": r, "c1": 0, "r2": r, "c2": last} for r in rows]
        finally:
            self._building = False

    def _show_selection(self) -> None:
        n = len(self.model.selected)
        self.selection_label.value = f'<span class="jm-muted">{n} selected</span>' if n else ""
        self._show_picks()

    def _show_picks(self) -> None:
        """The boxes of the pick column follow the selection (one cell each, not the whole page again)."""
        data = self.grid.data
        if data.empty or not len(data.columns) or data.columns[0] not in (PICK, ALL_PICKED):
            return
        picked = set(self.model.selected)
        column = data.columns[0]
        ids = list(self.model.rows["id"]) if not self.model.rows.empty else []
        for row, (job_id, mark) in enumerate(zip(ids, data[column], strict=False)):
            want = PICKED if int(job_id) in picked else PICK
            if mark != want:
                self.grid.set_cell_value_by_index(column, row, want)

    # -- view -> model -----------------------------------------------------------------------------
    def _on_filter(self, trait: str) -> Any:
        def handler(change: dict[str, Any]) -> None:
            setattr(self.model, trait, change["new"] or "")
            self.model.page = 1
            if not self._building:
                self.model.refresh()
        return handler

    def _on_selection(self, change: dict[str, Any]) -> None:
        if self._building:
            return
        if time.monotonic() - self._pick_click_at < 1.0:  # the grid's own pick of a row whose box was clicked
            self._reselect()
            return
        self._picks_before, self._row_selected_at = list(self.model.selected), time.monotonic()
        whole = self._whole_column(change["new"] or [])
        if whole and time.monotonic() - self._header_click_at < 2.0:  # the grid's own pick on a header click
            self._reselect()
            return
        self._selected_before = list(self.model.selected)
        self._selection_changed_at = time.monotonic() if whole else 0.0
        if not change["new"] and self.model.selected and time.monotonic() - self._rendered_at < 2.0:
            # The grid clears its selection when its data is replaced; a refresh must not lose it.
            self._reselect()
            return
        ids = list(self.model.rows["id"]) if not self.model.rows.empty else []
        picked: list[int] = []
        for rect in change["new"] or []:
            for r in range(min(rect["r1"], rect["r2"]), max(rect["r1"], rect["r2"]) + 1):
                if 0 <= r < len(ids) and int(ids[r]) not in picked:
                    picked.append(int(ids[r]))
        self.model.selected = picked
        self._show_selection()

    def _whole_column(self, rects: list[dict[str, Any]]) -> bool:
        """Is this the selection the grid makes on a header click: one block over every row?"""
        n = len(self.model.rows)
        return (len(rects) == 1 and n > 0 and min(rects[0]["r1"], rects[0]["r2"]) == 0
                and max(rects[0]["r1"], rects[0]["r2"]) >= n - 1)

    def _on_click(self, cell: dict[str, Any]) -> None:
        if cell.get("region") in ("column-header", "corner-header"):
            return self._on_header_click(cell)
        row = cell.get("primary_key_row", cell.get("row"))
        if not isinstance(row, int) or self.model.rows.empty or not 0 <= row < len(self.model.rows):
            return
        job_id = int(self.model.rows.iloc[row]["id"])
        if cell.get("column") in (PICK, ALL_PICKED):
            return self._toggle_pick(job_id)
        self.details.show(job_id)

    def _toggle_pick(self, job_id: int) -> None:
        """A click on a row's box: that row joins or leaves the selection; the others stay, no details open."""
        now = time.monotonic()
        self._pick_click_at = now
        before = self._picks_before if now - self._row_selected_at < 1.0 else list(self.model.selected)
        self.model.selected = [i for i in before if i != job_id] if job_id in before else [*before, job_id]
        self._reselect()
        self._show_selection()

    def _toggle_page(self) -> None:
        """The header box: pick every row of the page, or clear the picks when every row is picked already."""
        ids = [int(i) for i in self.model.rows["id"]] if not self.model.rows.empty else []
        everything = bool(ids) and all(i in self.model.selected for i in ids)
        self.model.selected = [] if everything else ids
        self._render()

    # -- keyboard: the page's script sends "up", "down", "enter", "escape" (app.py checks them) -------------
    def key(self, name: str) -> None:
        ids = [int(i) for i in self.model.rows["id"]] if not self.model.rows.empty else []
        current = ids.index(self.model.selected[-1]) if self.model.selected and self.model.selected[-1] in ids \
            else -1
        if name == "escape":
            self.confirm.children = ()
            self.details.hide()
        elif name == "enter" and current >= 0:
            self.details.show(ids[current])
        elif name in ("up", "down") and ids:
            row = 0 if current < 0 else min(max(current + (1 if name == "down" else -1), 0), len(ids) - 1)
            self.model.selected = [ids[row]]
            self._reselect()
            self._show_selection()

    def _on_header_click(self, cell: dict[str, Any]) -> None:
        """A header click sorts every page by that column (again: the other way); it selects nothing."""
        self._header_click_at = time.monotonic()
        if self._header_click_at - self._selection_changed_at < 1.0:  # its whole-column pick arrived first
            self.model.selected = [i for i in self._selected_before]
            self._reselect()
            self._show_selection()
        if cell.get("column") in (PICK, ALL_PICKED):
            return self._toggle_page()
        column = str(cell.get("column") or "").rstrip(" ↑↓")
        if not column:
            return
        key = JOB_SORT_KEYS.get(column, column)
        desc = (not self.model.desc) if key == self.model.sort else column not in ("Name", "Type", "Owner", "Case")
        self._sort_column = column
        self.model.sort_by(column, desc=desc)

    def _on_transforms(self, change: dict[str, Any]) -> None:
        """Header sorts go to the server (the page is one of millions); the grid's own sort is undone."""
        transforms = change["new"] or []
        if any(t.get("type") == "filter" for t in transforms):
            self.grid._transforms = []
            self.messages.info("use the filter bar above the grid: it filters every page, not just this one")
            return
        sorts = [t for t in transforms if t.get("type") == "sort"]
        if not sorts:
            return
        column = sorts[-1].get("column") or list(self.grid.data.columns)[sorts[-1].get("columnIndex", 1) - 1]
        self.grid._transforms = []
        if column in (PICK, ALL_PICKED):  # the box column has nothing to sort by
            return
        self._sort_column = str(column).rstrip(" ↑↓")
        self.model.sort_by(self._sort_column, desc=bool(sorts[-1].get("desc")))

    def _on_action(self, key: str) -> Any:
        def handler(_: Any) -> None:
            if not self.model.selected and self.details.job_id is not None:
                self.model.selected = [self.details.job_id]  # the job whose details are open
            if key == "cancel":
                return self._ask_cancel()
            if key in ("up", "down"):
                self.model.act("priority", delta=1 if key == "up" else -1)
            else:
                self.model.act(key)
            self.details.refresh()
        return handler

    def _ask_cancel(self) -> None:
        if not self.model.selected and self.details.job_id is not None:
            self.model.selected = [self.details.job_id]
        n = len(self.model.selected)
        if not n:
            self.messages.info("select one or more jobs to cancel first")
            return
        ids = list(self.model.selected)
        yes = w.Button(description=f"Cancel {n} job{'s' if n != 1 else ''}", button_style="danger")
        no = w.Button(description="Keep running")

        def cancel(_: Any) -> None:
            self.confirm.children = ()
            self.model.act("cancel", ids)

        yes.on_click(cancel)
        no.on_click(lambda _: setattr(self.confirm, "children", ()))
        self.confirm.children = (w.HTML(f"<b>Cancel {html.escape(self._name_jobs(ids))}?</b> "
                                        "Queued tasks will never run."), yes, no)

    def _name_jobs(self, ids: list[int], most: int = 3) -> str:
        """ "job 12 (Q3 binders), job 13 (nightly) and 4 more": what a confirmation will hit."""
        names = dict(zip((int(i) for i in self.model.rows["id"]), self.model.rows["name"], strict=True)) \
            if not self.model.rows.empty else {}
        shown = [f"job {i}" + (f" ({names[i]})" if i in names else "") for i in ids[:most]]
        rest = len(ids) - len(shown)
        if rest:
            return ", ".join(shown) + f" and {rest} more"
        return " and ".join([", ".join(shown[:-1]), shown[-1]]) if len(shown) > 1 else shown[0]

    # -- bulk actions over every matching job ----------------------------------------------------------
    def filter_words(self) -> str:
        """The filters in effect, in words: "type print_to_pdf, last 24 h" (or "no filter")."""
        words = []
        if self.state.value:
            words.append(f"state {label(self.state.value)}")
        for what, box in (("type", self.type), ("case", self.case), ("owner", self.owner), ("agent", self.agent)):
            if box.value.strip():
                words.append(f"{what} {box.value.strip()}")
        if self.search.value.strip():
            words.append(f"search “{self.search.value.strip()}”")
        if TIME_RANGES.get(self.time_range.value):
            words.append(self.time_range.value[0].lower() + self.time_range.value[1:])
        return ", ".join(words)

    def _show_bulk_counts(self) -> None:
        """Each bulk button says how many jobs it would hit (counted as the grid counts), or why it is off."""
        if not self.bulk_buttons:
            return
        filters = self.model.filters()
        for action, button in self.bulk_buttons.items():
            if action == "cancel":
                n = self.model.total  # every job of this tab can be cancelled: the grid's own count
            else:
                counted = self.messages.attempt(functools.partial(self.jm.count_matching, self.tab, action,
                                                                  **filters))
                n = int(counted) if counted is not None else 0
            self.bulk_counts[action] = n
            button.description = BULK_TEXT[action].format(n=fmt.count(n))
            if not self.bulk_allowed[action]:
                button.disabled, button.tooltip = True, f"needs the {BULK_PERMS[action]} permission"
            elif not n:
                button.disabled, button.tooltip = True, f"no {BULK_NOUN[action]} match these filters"
            else:
                button.disabled = False
                button.tooltip = f"{BULK_VERB[action]} every one of the {fmt.count(n)} {BULK_NOUN[action]} " \
                                 "matching the filters, on every page"

    def bulk_question(self, action: str, n: int, words: str) -> str:
        noun = BULK_NOUN[action] if n != 1 else BULK_NOUN[action].rstrip("s")
        where = f"matching {words}" if words else "in this tab (no filter)"
        return f"{BULK_VERB[action]} {fmt.count(n)} {noun} {where}?"

    def ask_bulk(self, action: str) -> None:
        """The confirmation names the count and the filter in words; Yes acts on every matching job."""
        if action not in self.bulk_buttons or not self.bulk_allowed[action]:
            return
        filters, words = self.model.filters(), self.filter_words()
        n = self.bulk_counts.get(action, 0)
        if not n:
            self.messages.info(f"no {BULK_NOUN[action]} match these filters")
            return
        question = self.bulk_question(action, n, words)
        if n > MAX_BULK:
            question += f" At most {fmt.count(MAX_BULK)} at once: narrow the filters first."
        yes = w.Button(description=f"{BULK_VERB[action]} {fmt.count(n)} job{'s' if n != 1 else ''}",
                       button_style="danger" if action == "cancel" else "warning", disabled=n > MAX_BULK)
        yes.add_class("jm-bulk-yes")
        no = w.Button(description="Keep them" if action != "resume" else "Not now")

        def go(_: Any) -> None:
            self.confirm.children = ()
            result = self.messages.attempt(lambda: self.jm.bulk(action, self.tab, filters))
            if result is not None:
                (self.messages.error if result.errors else self.messages.info)(result.summary())
            self.model.refresh()
            self.details.refresh()

        yes.on_click(go)
        no.on_click(lambda _: setattr(self.confirm, "children", ()))
        text = w.HTML(f"<b>{html.escape(question)}</b>")
        text.add_class("jm-confirm-text")
        self.confirm.children = (text, yes, no)

    def _export(self) -> None:
        import tempfile
        from pathlib import Path

        ext = {"CSV": "csv", "Excel": "xlsx", "Parquet": "parquet"}[self.export_format.value]
        fmt_name = {"CSV": "csv", "Excel": "excel", "Parquet": "parquet"}[self.export_format.value]
        path = Path(tempfile.mkdtemp(prefix="jm-export-")) / f"jobs-{self.tab}.{ext}"
        filters = {k: v for k, v in self.model.filters().items()}
        done = self.messages.attempt(lambda: self.jm.export(path, format=fmt_name, tab=self.tab, **filters))
        if done is not None:
            self.downloads.offer(Path(done), path.name, f"Export ready ({fmt.size(Path(done).stat().st_size)})")
