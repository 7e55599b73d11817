"""Presentation helpers: relative times, durations, sizes (pure functions, no widgets)."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import pandas as pd


def _epoch(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        if pd.isna(value):
            return None
        ts = pd.Timestamp(value)
        return (ts.tz_localize("UTC") if ts.tzinfo is None else ts).timestamp()
    return float(value)


def relative(value: Any, now: float | None = None) -> str:
    """"3 min ago", "in 2 h", "just now"; empty for no time."""
    ts = _epoch(value)
    if ts is None:
        return ""
    delta = (time.time() if now is None else now) - ts
    future = delta < 0
    d = abs(delta)
    if d < 10:
        return "just now" if not future else "in a few s"
    for limit, unit, div in ((60, "s", 1), (3600, "min", 60), (86400, "h", 3600), (86400 * 30, "d", 86400)):
        if d < limit:
            text = f"{int(d // div)} {unit}"
            return f"in {text}" if future else f"{text} ago"
    return exact(ts, with_seconds=False)


#: the zone exact times are shown in: the viewer's (their browser's), once the page has said it; else UTC
_viewer_zone: tzinfo = UTC
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}")


def set_viewer_zone(name: object) -> bool:
    """Show exact times in ``name`` (an IANA zone such as "Europe/Berlin"); returns whether it was taken.

    The name comes from the browser over a widget comm, so it is hostile until checked: only a
    well-formed name that the system's zone database lists is used (never a path), anything else is
    ignored and times stay in UTC. One dashboard kernel serves one page, so this is per viewer.
    """
    global _viewer_zone
    if not isinstance(name, str) or len(name) > 64 or not _ZONE_NAME.fullmatch(name):
        return False
    if name != "UTC" and name not in available_timezones():
        return False
    try:
        _viewer_zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def exact(value: Any, with_seconds: bool = True) -> str:
    """The exact time, in the viewer's zone when the page has told it (else UTC), with the zone's name."""
    ts = _epoch(value)
    if ts is None:
        return ""
    fmt = "%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M"
    return datetime.fromtimestamp(ts, _viewer_zone).strftime(fmt + " %Z")


def duration(seconds: Any) -> str:
    """"2 min 14 s", "3 h 5 min", "850 ms"."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return ""
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def size(n: Any) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover


def count(n: int) -> str:
    return f"{n:,}"
