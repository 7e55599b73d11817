"""Bulk actions: one action over every job matching the grid's filters (the dashboard's "Retry all failed (N)").

The rule, written once here and applied by :meth:`JobManager.bulk`:

- The jobs are the ones the dashboard grid shows for the same tab and filters: the same WHERE clause
  (:func:`jobmanager.history.grid.build_where`, every value a bound parameter) narrowed to the acting user's
  visibility scope, and to the states the action applies to (:data:`ACTIONS`).
- The filters arrive from a browser, so they are hostile until checked (:func:`check_filters`): only the
  grid's filter keys, plain values of bounded size; anything else is refused with one line.
- Each job is then checked as the single-job call checks it (visible to the user, and the action's
  permission within its case), and acted on through the engine like the single call.
- At most :data:`MAX_BULK` jobs per call: more matching jobs refuse the whole call (nothing is done) with
  one line asking for narrower filters.
- The audit trail gets ONE row per bulk call (``bulk_retry``, ``bulk_cancel``...) naming the filter and
  the counts. Jobs get no audit row each: every job's own event history already records the transition
  with the acting user (``retried``/``cancelled`` by ana), which is where one job's story is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobmanager import validate
from jobmanager.engine.states import IN_PROGRESS, JOB_STATES, JobState, tab_states
from jobmanager.errors import BadParams

#: the most jobs one bulk call acts on
MAX_BULK = 1000

#: the filters a bulk call takes: the grid's, without ``tab`` (an argument of its own)
FILTER_KEYS = ("search", "state", "type", "case", "owner", "agent", "since", "until", "time_field")
TABS = ("in-progress", "completed")


@dataclass(frozen=True)
class BulkAction:
    name: str
    #: the permission check of the single-job call (``JobManager._allow`` action)
    check: str
    #: the job states it applies to (others matching the filter are left alone, and not counted)
    states: tuple[str, ...]
    #: what the message says was done
    done: str


ACTIONS: dict[str, BulkAction] = {
    "retry": BulkAction("retry", "retry", (JobState.FAILED.value, JobState.COMPLETED_WITH_ERRORS.value),
                        "retry queued"),
    "cancel": BulkAction("cancel", "manage", IN_PROGRESS, "cancelled"),
    "pause": BulkAction("pause", "manage", (JobState.QUEUED.value, JobState.RUNNING.value), "paused"),
    "resume": BulkAction("resume", "manage", (JobState.PAUSED.value,), "resumed"),
}


def check_action(action: Any) -> BulkAction:
    if not isinstance(action, str) or action not in ACTIONS:
        raise BadParams(f"unknown bulk action {validate.shown(action)}: choose one of {', '.join(ACTIONS)}")
    return ACTIONS[action]


def check_tab(tab: Any) -> str:
    if not isinstance(tab, str) or tab not in TABS:
        raise BadParams(f"unknown tab {validate.shown(tab)}: choose one of {', '.join(TABS)}")
    return tab


def _time(value: Any, key: str) -> float | str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadParams(f"filter {key}: expected a time, not {validate.shown(value)}")
    if isinstance(value, str):
        return validate.name(value, f"filter {key}", max_len=40)
    if not math.isfinite(value) or not 0 <= value < 1e11:
        raise BadParams(f"filter {key}: {validate.shown(value)} is not a time")
    return float(value)


def check_filters(filters: Any) -> dict[str, Any]:
    """The filters as plain, bounded values, or BadParams with one line (unknown keys are refused).

    The values are checked again, as names, states and times, where the WHERE clause is built.
    """
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        raise BadParams(f"filters must be a mapping of filter to value, not {validate.shown(filters)}")
    if len(filters) > len(FILTER_KEYS):
        raise BadParams(f"too many filters ({len(filters)}): choose from {', '.join(FILTER_KEYS)}")
    out: dict[str, Any] = {}
    for key, value in filters.items():
        if not isinstance(key, str) or key not in FILTER_KEYS:
            raise BadParams(f"unknown filter {validate.shown(key)}: choose from {', '.join(FILTER_KEYS)}")
        if value is None or value == "":
            continue
        if key in ("since", "until"):
            out[key] = _time(value, key)
        elif key == "state":
            states = [value] if isinstance(value, str) else value
            if not isinstance(states, list | tuple) or not 1 <= len(states) <= len(JOB_STATES):
                raise BadParams(f"filter state: a state or a list of states, not {validate.shown(value)}")
            for s in states:
                if not isinstance(s, str) or s not in JOB_STATES:
                    raise BadParams(f"filter state: unknown state {validate.shown(s)}: choose one of "
                                    f"{', '.join(JOB_STATES)}")
            out[key] = states[0] if isinstance(value, str) else list(states)
        elif key == "search":
            out[key] = validate.search(value, "filter search")
        else:
            out[key] = validate.name(value, f"filter {key}")
    return out


def narrowed(action: BulkAction, tab: str, filters: dict[str, Any]) -> dict[str, Any]:
    """The filters with ``state`` narrowed to the states of the tab the action applies to."""
    wanted = filters.get("state")
    states = [s for s in action.states if s in tab_states(tab)]
    if wanted is not None:
        asked = {wanted} if isinstance(wanted, str) else set(wanted)
        states = [s for s in states if s in asked]
    return {**filters, "state": states}  # none left: the WHERE clause matches nothing


def _when(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


def describe(tab: str, filters: dict[str, Any]) -> str:
    """The filter in words, for the audit trail and messages: ``type print_to_pdf, since 2026-12-01 18:00 UTC``."""
    parts = []
    for key in ("state", "type", "case", "owner", "agent", "search", "since", "until"):
        if key not in filters:
            continue
        value = filters[key]
        if key == "state":
            parts.append("state " + " or ".join([value] if isinstance(value, str) else value))
        elif key == "search":
            parts.append(f"search {value!r}")
        elif key in ("since", "until"):
            parts.append(f"{filters.get('time_field', 'created')} {key} {_when(value)}")
        else:
            parts.append(f"{key} {value}")
    return f"{tab}: " + (", ".join(parts) if parts else "no filter")


@dataclass
class BulkResult:
    """What a bulk call did: ``matched`` jobs, ``done`` of them, and one line per job that failed."""

    action: str
    filter: str
    matched: int
    done: int = 0
    job_ids: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verb = ACTIONS[self.action].done
        text = f"{verb} for {self.done} of {self.matched} job{'s' if self.matched != 1 else ''} ({self.filter})"
        if self.errors:
            more = f" (+{len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            text += f"; {self.errors[0]}{more}"
        return text


def too_many(n: int) -> str:
    return (f"{n:,} jobs match; a bulk action takes at most {MAX_BULK:,} at once: narrow the filters "
            "(a type, a case, a time range) and repeat")
