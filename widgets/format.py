"""Presentation helpers: relative times, durations, sizes (pure functions, no widgets)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

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


def exact(value: Any, with_seconds: bool = True) -> str:
    ts = _epoch(value)
    if ts is None:
        return ""
    fmt = "%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M"
    return datetime.fromtimestamp(ts, UTC).strftime(fmt) + " UTC"


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
