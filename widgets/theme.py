"""The dashboard's look: one colour per state, used everywhere, and the CSS."""

from __future__ import annotations

import html

#: state -> (text colour, background); the word is always shown too, colour is never the only signal
STATE_COLORS: dict[str, tuple[str, str]] = {
    "running": ("#1d4ed8", "#dbeafe"),
    "queued": ("#475569", "#e2e8f0"),
    "paused": ("#b45309", "#fef3c7"),
    "completed": ("#15803d", "#dcfce7"),
    "completed_with_errors": ("#c2410c", "#ffedd5"),
    "failed": ("#b91c1c", "#fee2e2"),
    "cancelled": ("#334155", "#cbd5e1"),
    "retrying": ("#b45309", "#fef3c7"),
    "succeeded": ("#15803d", "#dcfce7"),
    # agents
    "busy": ("#1d4ed8", "#dbeafe"),
    "idle": ("#15803d", "#dcfce7"),
    "lost": ("#b91c1c", "#fee2e2"),
    "offline": ("#475569", "#e2e8f0"),
    "enabled": ("#15803d", "#dcfce7"),
    "disabled": ("#475569", "#e2e8f0"),
}

LABELS = {"completed_with_errors": "completed with errors"}


def label(state: str) -> str:
    return LABELS.get(state, state)


def badge(state: str, extra: str = "") -> str:
    fg, bg = STATE_COLORS.get(state, ("#334155", "#f1f5f9"))
    cls = "jm-badge jm-pulse" if state == "lost" else "jm-badge"
    return (f'<span class="{cls}" style="color:{fg};background:{bg}">{html.escape(label(state))}'
            f"{html.escape(extra)}</span>")


def vega_state_colors(field: str = "cell.value", which: int = 1) -> str:
    """A Vega expression choosing a state's colour, for ipydatagrid renderers."""
    expr = "'transparent'" if which == 1 else "'#0f172a'"
    for state, colors in STATE_COLORS.items():
        expr = f"{field} === '{label(state)}' ? '{colors[which]}' : ({expr})"
    return expr


ROW_PX, HEADER_PX = 26, 26
#: room for the grid's horizontal scrollbar, so a short table never needs a vertical one as well
SCROLLBAR_PX = 16
#: the page's height minus what sits above and below a grid (header, tabs, filter bar, actions, pager)
PAGE_ROOM = "calc(100vh - 290px - var(--jm-activity-h, 0px))"  # the activity strip sets the variable


def grid_height(rows: int, room: str = PAGE_ROOM, least: int = 240) -> str:
    """A grid's CSS height: its rows when they fit, else the room the page has (never under ``least`` px).

    The grid then uses the page's height: 100 rows fill a tall window instead of a fixed 440 px box.
    """
    content = HEADER_PX + ROW_PX * max(rows, 1) + SCROLLBAR_PX + 4
    return f"min({content}px, max({min(least, content)}px, {room}))"


CSS = """
<style>
.jm-app { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #0f172a; }
.jm-header { background: #0f172a; color: #f8fafc; padding: 8px 14px; border-radius: 6px; align-items: center;
             flex-wrap: wrap; row-gap: 4px; }
.jm-header .widget-label, .jm-header .widget-html, .jm-header label { color: #f8fafc !important; }
.jm-header .widget-html { white-space: nowrap; }
.jm-header .widget-html:first-child { flex: 0 1 auto; min-width: 0; overflow: hidden; text-overflow: ellipsis; }
.jm-title { font-size: 17px; font-weight: 650; letter-spacing: .2px; }
.jm-muted { color: #64748b; font-size: 12px; }
.jm-header .jm-muted { color: #cbd5e1; }
.jm-badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
            line-height: 18px; white-space: nowrap; }
.jm-pulse { animation: jm-pulse 1.6s ease-in-out infinite; }
@keyframes jm-pulse { 0%, 100% { box-shadow: 0 0 0 0 rgba(185, 28, 28, .45); }
                      50% { box-shadow: 0 0 0 5px rgba(185, 28, 28, 0); } }
.jm-dot { display: inline-block; width: 9px; height: 9px; border-radius: 50%; margin-right: 4px; }
.jm-message { padding: 6px 12px; border-radius: 6px; font-size: 13px; }
.jm-toasts { position: fixed !important; bottom: 18px; right: 18px; z-index: 1000; max-width: min(520px, 70vw);
             margin: 0 !important; pointer-events: none; }
.jm-toasts:empty, .jm-toasts .widget-html-content:empty { display: none; }
.jm-toast { pointer-events: auto; box-shadow: 0 6px 20px rgba(15, 23, 42, .18); padding: 10px 14px;
            animation: jm-toast-in .18s ease-out; }
@keyframes jm-toast-in { from { opacity: 0; transform: translateY(6px); } to { opacity: 1; transform: none; } }
.jm-message-error { background: #fee2e2; color: #991b1b; border: 1px solid #fecaca; }
.jm-message-info { background: #e0f2fe; color: #075985; border: 1px solid #bae6fd; }
.jm-empty { padding: 28px; text-align: center; color: #64748b; font-size: 14px; border: 1px dashed #cbd5e1;
            border-radius: 6px; }
.jm-empty.widget-vbox { align-items: center; gap: 8px; }
.jm-empty code { background: #f1f5f9; padding: 1px 5px; border-radius: 4px; }
.jm-details { border: 1px solid #e2e8f0; border-radius: 6px; padding: 10px 14px; background: #fff; }
.jm-details h3 { margin: 0 0 6px 0; font-size: 16px; }
.jm-table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
.jm-table th { text-align: left; color: #475569; font-weight: 600; border-bottom: 1px solid #e2e8f0; padding: 3px 6px; }
.jm-table td { border-bottom: 1px solid #f1f5f9; padding: 3px 6px; vertical-align: top; }
.jm-table td.num, .jm-table th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.jm-table td:first-child { white-space: nowrap; }
.jm-timeline { list-style: none; padding-left: 0; margin: 0; font-size: 12.5px; }
.jm-timeline li { padding: 2px 0 2px 14px; border-left: 2px solid #e2e8f0; margin-left: 4px; }
.jm-log { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 11.5px; background: #0f172a;
          color: #e2e8f0; padding: 8px; border-radius: 6px; max-height: 260px; overflow: auto; white-space: pre-wrap;
          line-height: 1.4; margin: 4px 0; }
.jm-app .widget-html-content { line-height: 1.45; }
.jm-tasks { max-height: 300px; overflow: auto; }
.jm-log-follow { display: flex; flex-direction: column-reverse; }
.jm-log mark { background: #facc15; color: #0f172a; border-radius: 2px; }
.jm-app .jm-header .widget-html-content { line-height: var(--jp-widgets-inline-height, 28px); }
.jm-err { color: #b91c1c; }
.jm-warn { color: #92400e; }
.jm-time { border-bottom: 1px dotted #94a3b8; cursor: help; }
.jm-link { color: #1d4ed8; text-decoration: none; font-weight: 600; margin-right: 12px; }
.jm-link:hover { text-decoration: underline; }
.jm-signin { max-width: 360px; margin: 60px auto; padding: 24px 28px; border: 1px solid #e2e8f0;
             border-radius: 10px; box-shadow: 0 4px 18px rgba(15, 23, 42, .08); background: #fff; }
.jm-toolbar { align-items: center; flex-wrap: wrap; gap: 4px; }
.jm-pager { align-items: center; flex-wrap: wrap; }
.jm-pager > .widget-html:not(.jm-hint) { flex: 0 0 auto; white-space: nowrap; }
.jm-pager > .jm-hint { flex: 1 1 320px; min-width: 0; }
.jm-spark { vertical-align: middle; }
.jm-app .lm-TabBar-tab, .jm-app .p-TabBar-tab { min-width: 170px; font-weight: 600; }
.jm-activity { border: 1px solid #e2e8f0; border-radius: 6px; padding: 2px 10px 4px 4px; margin: 4px 0 6px 0;
               background: #f8fafc; }
.jm-activity-top { align-items: center; gap: 6px; flex-wrap: wrap; }
.jm-activity-toggle button, .jm-activity-toggle { background: transparent; font-weight: 650; }
.jm-activity-summary { min-width: 0; }
.jm-activity-line { font-size: 12.5px; color: #334155; font-variant-numeric: tabular-nums; }
.jm-activity-body { gap: 18px; padding: 0 0 0 8px; }
.jm-activity-cell { flex: 1 1 0; min-width: 0; }
.jm-activity-cell .widget-html-content { line-height: 1.2; }
.jm-activity-chart { display: block; width: 100%; height: 40px; }
.jm-activity-label { font-size: 11.5px; color: #475569; margin-bottom: 2px; white-space: nowrap; overflow: hidden;
                     text-overflow: ellipsis; }
.jm-activity-label i { display: inline-block; width: 9px; height: 9px; border-radius: 2px; margin: 0 3px 0 8px; }
.jm-activity-axis { display: flex; justify-content: space-between; font-size: 10.5px; color: #94a3b8; }
/* the grids give up the strip's height, so the page still fits the window (PAGE_ROOM) */
.jm-app:has(.jm-activity) { --jm-activity-h: 50px; }
.jm-app:has(.jm-activity-open) { --jm-activity-h: 124px; }
/* keyboard: a visible focus ring on every control and on the grid (only when the keyboard moved the focus) */
.jm-app button:focus-visible, .jm-app input:focus-visible, .jm-app select:focus-visible,
.jm-app textarea:focus-visible { outline: 2px solid #2563eb !important; outline-offset: 1px; }
.jm-app .lm-DataGrid:focus-visible, .jm-app .lm-DataGrid:has(:focus-visible) {
  outline: 2px solid #2563eb; outline-offset: 1px; }
.jm-app kbd { font: 11px ui-monospace, monospace; border: 1px solid #cbd5e1; border-bottom-width: 2px;
              border-radius: 3px; padding: 0 3px; background: #f8fafc; color: #334155; }
/* a confirmation (single or bulk) is its own line above the grid: it never squeezes the action buttons */
.jm-confirm { align-items: center; gap: 6px; flex-wrap: wrap; }
.jm-confirm:not(:empty) { background: #fffbeb; border: 1px solid #fcd34d; border-radius: 6px; padding: 4px 10px;
                          margin: 2px 0 4px 0; }
.jm-confirm .widget-html-content { white-space: normal; }
</style>
"""
