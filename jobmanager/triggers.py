"""When a schedule fires: once, every N units, or a cron expression, in an explicit time zone.

Times are stored in UTC and computed in the schedule's zone. Wall-clock triggers
(cron, every N days) are computed as naive local times and converted once each,
so daylight-saving changes neither skip nor double a run:

- a local time that does not exist (spring forward) runs at the first instant
  after the gap;
- a local time that occurs twice (fall back) runs once, at its first occurrence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import Options, get_description
from croniter import croniter

from .errors import BadParams

KINDS = ("once", "interval", "cron")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_UNIT_NAMES = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
_EVERY = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadParams(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin or UTC)") from None


def wall_to_utc(naive: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a local wall time; see the module docstring for DST gaps and folds."""
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    # In a gap: the earliest whole second whose wall time is at or after ``naive``.
    lo = int(naive.replace(tzinfo=tz, fold=1).astimezone(UTC).timestamp())
    hi = int(first.timestamp())
    lo, hi = min(lo, hi), max(lo, hi)
    while lo < hi:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid + 1
    return datetime.fromtimestamp(hi, UTC)


@dataclass(frozen=True)
class Trigger:
    """``kind`` once|interval|cron; ``value`` an ISO local time, ``15m``/``2h``/``1d``, or a cron expression."""

    kind: str
    value: str
    tz: str = "UTC"
    anchor: float | None = None  # interval triggers count from here (UTC epoch seconds)

    @classmethod
    def parse(cls, *, cron: str | None = None, every: str | None = None, at: str | datetime | None = None,
              tz: str = "UTC", now: float | None = None) -> "Trigger":
        """Exactly one of cron, every, at. Raises BadParams with one readable line."""
        given = [name for name, v in (("cron", cron), ("every", every), ("at", at)) if v not in (None, "")]
        if len(given) != 1:
            raise BadParams("give exactly one trigger: cron, every or at")
        zone(tz)
        now = datetime.now(UTC).timestamp() if now is None else now
        if cron is not None:
            expr = " ".join(cron.split())
            if len(expr.split()) != 5 or not croniter.is_valid(expr):
                raise BadParams(f"invalid cron expression {cron!r} (five fields: minute hour day month weekday)")
            return cls("cron", expr, tz)
        if every is not None:
            m = _EVERY.match(str(every))
            if not m or int(m.group(1)) <= 0:
                raise BadParams(f"invalid interval {every!r}: use a whole number and a unit, e.g. 30s, 15m, 2h, 1d")
            return cls("interval", f"{int(m.group(1))}{m.group(2)}", tz, anchor=now)
        local = _parse_local(at, tz)  # type: ignore[arg-type]
        if wall_to_utc(local, zone(tz)).timestamp() <= now:
            raise BadParams(f"the one-time date {local:%Y-%m-%d %H:%M} {tz} is in the past")
        return cls("once", local.isoformat(timespec="minutes"), tz)

    # -- next run ------------------------------------------------------------------------------
    def next_after(self, after: float) -> float | None:
        """The first run strictly after ``after`` (UTC epoch seconds), or None if there is none."""
        tz = zone(self.tz)
        if self.kind == "once":
            at = wall_to_utc(datetime.fromisoformat(self.value), tz).timestamp()
            return at if at > after else None
        if self.kind == "interval":
            n, unit = int(self.value[:-1]), self.value[-1]
            anchor = self.anchor if self.anchor is not None else after
            if unit == "d":  # whole days keep their wall-clock time across DST changes
                start = datetime.fromtimestamp(anchor, tz).replace(tzinfo=None)
                k = max(0, int((after - anchor) // (n * 86400)) - 1)
                while True:
                    k += 1
                    t = wall_to_utc(start + timedelta(days=k * n), tz).timestamp()
                    if t > after:
                        return t
            step = n * _UNITS[unit]
            k = int((after - anchor) // step) + 1
            return anchor + max(k, 1) * step
        local = datetime.fromtimestamp(after, tz).replace(tzinfo=None) - timedelta(hours=3)
        it = croniter(self.value, local)
        for _ in range(10_000):
            t = wall_to_utc(it.get_next(datetime), tz).timestamp()
            if t > after:
                return t
        return None  # pragma: no cover - a valid expression always has a next time

    # -- description -----------------------------------------------------------------------------
    def describe(self) -> str:
        """A human sentence, e.g. "At 02:00, Monday through Friday (Europe/Berlin)"."""
        if self.kind == "once":
            return f"Once at {self.value.replace('T', ' ')} ({self.tz})"
        if self.kind == "interval":
            n, unit = int(self.value[:-1]), self.value[-1]
            name = _UNIT_NAMES[unit] + ("s" if n != 1 else "")
            text = f"Every {n} {name}" if n != 1 else f"Every {name}"
            if unit == "d" and self.anchor is not None:
                text += f" at {datetime.fromtimestamp(self.anchor, zone(self.tz)):%H:%M} ({self.tz})"
            return text
        opts = Options()
        opts.use_24hour_time_format = True
        return f"{get_description(self.value, opts)} ({self.tz})"


def _parse_local(at: str | datetime, tz: str) -> datetime:
    if isinstance(at, datetime):
        dt = at
    else:
        try:
            dt = datetime.fromisoformat(str(at).strip())
        except ValueError:
            raise BadParams(f"invalid date-time {at!r}: use ISO format, e.g. 2026-12-01T09:00") from None
    if dt.tzinfo is not None:  # an explicit offset wins; store the wall time in the schedule's zone
        dt = dt.astimezone(zone(tz)).replace(tzinfo=None)
    return dt.replace(second=0, microsecond=0)
