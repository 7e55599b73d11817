"""The page's link: the open tab, job and filters as the URL's hash, and back (pure functions, no widgets).

``#tab=completed&job=42&state=failed&search=invoice`` opens the Completed tab filtered to failed jobs
matching "invoice", with job 42's details open. The dashboard writes this hash as the operator clicks
around (a front-end bridge in the Voila template copies it into the address bar), so the address is a
link to paste; a pasted link is read back after sign-in.

The hash arrives from the browser: anyone can craft one and send it to an operator. It is parsed here
with hard limits and every value checked against a closed list or a pattern; what fails is ignored and
named in one notice, never half-applied, and only plain values reach the service (which checks again).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

#: tab names in links, in the dashboard's order
TABS = ("in-progress", "completed", "scheduled", "agents")
#: filters a link may carry (the job tabs' filter bar), in the order they are written
FILTERS = ("search", "state", "type", "case", "owner", "agent", "time")
TEXT_FILTERS = ("search", "case", "owner", "agent")
MAX_LENGTH = 2000
MAX_TEXT = 200
_JOB_ID = re.compile(r"[1-9][0-9]{0,17}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Link:
    tab: str | None = None
    job: int | None = None
    filters: dict[str, str] = field(default_factory=dict)

    def encode(self) -> str:
        """The hash (without '#'); empty for the default view."""
        pairs: list[tuple[str, str]] = []
        if self.tab and self.tab != TABS[0]:
            pairs.append(("tab", self.tab))
        if self.job is not None:
            pairs.append(("job", str(self.job)))
        pairs += [(k, self.filters[k]) for k in FILTERS if self.filters.get(k)]
        return urlencode(pairs)


def parse(text: str, *, states: dict[str, tuple[str, ...]], types: set[str], times: set[str]) -> tuple[Link, list[str]]:
    """Read a hash into a :class:`Link`; returns it and what was ignored (one phrase each).

    ``states``: the states each job tab may be filtered by; ``types``: the job types; ``times``: the
    time-range choices. A value outside these is ignored, as is anything unknown or malformed.
    """
    link = Link()
    ignored: list[str] = []
    text = (text or "").lstrip("#")
    if not text:
        return link, ignored
    if len(text) > MAX_LENGTH:
        return link, [f"the whole link (longer than {MAX_LENGTH} characters)"]
    try:
        pairs = parse_qsl(text, keep_blank_values=False, strict_parsing=False, max_num_fields=20,
                          errors="strict")
    except (ValueError, UnicodeDecodeError):
        return link, ["the whole link (not readable)"]
    seen: set[str] = set()
    for key, value in pairs:
        name = _show(key)
        if key in seen:
            ignored.append(f"a second {name}")
            continue
        seen.add(key)
        if key == "tab":
            if value in TABS:
                link.tab = value
            else:
                ignored.append(f"tab {_show(value)} (no such tab)")
        elif key == "job":
            if _JOB_ID.fullmatch(value) and int(value) < 2**63:
                link.job = int(value)
            else:
                ignored.append(f"job {_show(value)} (not a job number)")
        elif key in TEXT_FILTERS:
            if len(value) > MAX_TEXT or _CONTROL.search(value):
                ignored.append(f"{key} filter (too long or not plain text)")
            else:
                link.filters[key] = value
        elif key in ("state", "type", "time"):
            link.filters[key] = value  # checked below, once the tab is known
        else:
            ignored.append(f"{name} (not part of a link)")
    tab = link.tab or ("in-progress" if link.job is None else None)
    for key, allowed in (("state", set(states.get(tab or "", ())) if tab else
                          {s for v in states.values() for s in v}), ("type", types), ("time", times)):
        if key in link.filters and link.filters[key] not in allowed:
            ignored.append(f"{key} {_show(link.filters.pop(key))} (not a choice here)")
    if link.filters and tab not in (None, "in-progress", "completed"):
        ignored.append("the filters (that tab has none)")
        link.filters = {}
    return link, ignored


def _show(value: str) -> str:
    """A value as it may appear in a notice: quoted, short, no control characters."""
    clean = _CONTROL.sub("?", value)
    return repr(clean if len(clean) <= 40 else clean[:37] + "...")
