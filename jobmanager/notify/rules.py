"""Which events go where: notification rules, checked once for every place they come from.

A rule is ``{"on": ["failed", "completed_with_errors"], "to": "mailto:ops@example.org"}``: the triggers
it fires on and one target. Triggers are a job's final states (``failed``, ``completed_with_errors``,
``completed``, ``cancelled``; ``succeeded`` is another word for ``completed``) and ``agent_lost``, which
only the global rules (``[[notify.rules]]`` in jobmanager.toml) may use, since a lost agent is no job's.
A target is a ``mailto:`` address, an ``http(s)://`` URL, or a scheme a plug-in channel registers.

Rules come from the job type (its ``notify`` attribute), the schedule (``options["notify"]``), the job
(``submit(notify=...)``, ``--notify``) and the configuration; :func:`check_rules` is the one function
that checks each of them, and :func:`merge` joins them (the job row keeps the merged list).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jobmanager import validate
from jobmanager.engine.states import FINISHED, JobState
from jobmanager.errors import BadParams
from jobmanager.notify import channels

AGENT_LOST = "agent_lost"
#: what a rule may fire on; a job's final states, and a lost agent
TRIGGERS: tuple[str, ...] = (*FINISHED, AGENT_LOST)
#: other words for a trigger
ALIASES = {"succeeded": JobState.COMPLETED.value, "success": JobState.COMPLETED.value,
           "lost": AGENT_LOST}
#: triggers only the global rules may use
GLOBAL_ONLY = frozenset({AGENT_LOST})
MAX_RULES = 20

EXAMPLE = "failed,completed_with_errors:mailto:ops@example.org"


def trigger(value: Any, what: str = "notify") -> str:
    """One trigger name, aliases resolved; one line naming the known ones otherwise."""
    if not isinstance(value, str):
        raise BadParams(f"{what}: a trigger must be text, not {validate.shown(value)}")
    key = value.strip().lower()
    key = ALIASES.get(key, key)
    if key not in TRIGGERS:
        raise BadParams(f"{what}: unknown trigger {validate.shown(value)} (known: {', '.join(TRIGGERS)}, "
                        f"succeeded = completed)")
    return key


def check_rule(value: Any, what: str = "notify", *, global_rule: bool = False) -> dict[str, Any]:
    """A rule (a ``{"on", "to"}`` mapping, or the text ``TRIGGERS:TARGET``) checked and normalised."""
    if isinstance(value, str):
        value = parse(value, what)
    if not isinstance(value, dict):
        raise BadParams(f"{what}: a rule is a table of on and to (e.g. on = [\"failed\"], to = "
                        f"\"mailto:ops@example.org\"), not {validate.shown(value)}")
    unknown = set(value) - {"on", "to"}
    if unknown:
        raise BadParams(f"{what}: unknown key {validate.shown(sorted(unknown)[0])} in a rule (known: on, to)")
    if "on" not in value or "to" not in value:
        raise BadParams(f"{what}: a rule needs both on (the events) and to (where to send them)")
    on = value["on"]
    if isinstance(on, str):
        on = on.split(",")
    if not isinstance(on, (list, tuple)) or not on:
        raise BadParams(f"{what}: on must be a list of events, e.g. [\"failed\", \"completed_with_errors\"]")
    triggers: list[str] = []
    for t in on:
        name = trigger(t, what)
        if name in GLOBAL_ONLY and not global_rule:
            raise BadParams(f"{what}: {name} is not a job's event; notify it from [[notify.rules]] in "
                            f"jobmanager.toml")
        if name not in triggers:
            triggers.append(name)
    return {"on": triggers, "to": channels.check_target(value["to"], what)}


def parse(text: str, what: str = "--notify") -> dict[str, Any]:
    """``failed,completed:mailto:ops@example.org`` as a rule: the events, a colon, the target."""
    events, sep, target = text.partition(":")
    if (not sep or not events.strip() or not target.strip() or "/" in events or "@" in events
            or events.strip().lower() in channels.SCHEMES):
        raise BadParams(f"{what} {validate.shown(text)}: expected EVENTS:TARGET, e.g. {EXAMPLE}")
    return {"on": [e for e in events.split(",")], "to": target.strip()}


def check_rules(value: Any, what: str = "notify", *, global_rules: bool = False) -> list[dict[str, Any]]:
    """A list of rules (None: none), each checked (:func:`check_rule`), duplicates dropped."""
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise BadParams(f"{what}: expected a list of rules, not {validate.shown(value)}")
    if len(value) > MAX_RULES:
        raise BadParams(f"{what}: {len(value)} rules, at most {MAX_RULES}")
    return merge([check_rule(r, what, global_rule=global_rules) for r in value])


def merge(*lists: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rules of several sources in order; a target named twice fires on the union of their events."""
    by_target: dict[str, list[str]] = {}
    for rules in lists:
        for rule in rules:
            on = by_target.setdefault(rule["to"], [])
            on.extend(t for t in rule["on"] if t not in on)
    return [{"on": on, "to": to} for to, on in by_target.items()]


def targets(rules: Iterable[dict[str, Any]], trigger: str) -> list[str]:
    """The targets of the rules that fire on ``trigger``."""
    return [r["to"] for r in rules if trigger in r["on"]]


def describe(rules: Iterable[dict[str, Any]]) -> list[str]:
    """``failed,completed_with_errors -> mailto:ops@example.org`` per rule, for display."""
    return [f"{','.join(r['on'])} -> {r['to']}" for r in rules]
