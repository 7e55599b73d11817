"""When a schedule fires: once, every N units, or a cron expression, in an explicit time zone.

Times are stored in UTC and computed in the schedule's zone. Cron expressions fire when Vixie cron
and cronie (what Debian and RHEL run) would:

- **Wildcard jobs run by real time.** A job whose minute or hour field starts with ``*`` (``0 * * * *``,
  ``*/15 9 * * *``, ``@hourly``) runs at every instant whose local wall time matches: a local time that
  does not exist (spring forward) is skipped, and a local time that occurs twice (fall back) runs twice.
- **Fixed-time jobs run once a day-slot.** Any other job (``30 1 * * *``, ``0 9,17 * * 1-5``): a local
  time in the spring gap runs once, right after the gap; a repeated local time runs once, at its first
  occurrence. (Vixie cron(8): "Only jobs that run at a particular time (not specified as @hourly, nor
  with '*' in the hour or minute specifier) are affected.")
- **Day of month and day of week** (cronie crontab(5)): if either field starts with ``*`` (or ``?``), a
  day must match both; otherwise it may match either. So ``0 0 1,15 * 1`` runs on the 1st, the 15th and
  every Monday, and ``1 1 1-7 * */7`` only on a Sunday among the first seven days.
- Macros ``@hourly @daily @midnight @weekly @monthly @yearly @annually``; ``L`` (last day of the month)
  in the day-of-month field; ``5#2`` (second Friday), ``L5`` and ``5L`` (last Friday) in the day-of-week
  field, with cron's numbering (0 or 7 is Sunday; Quartz's own numbering would call that Friday ``6L``).
- An expression that never fires is refused. The Gregorian calendar repeats every 400 years, so a
  search over 400 years is exact: there is no next time, ever, when that search finds none.

Intervals in seconds, minutes and hours keep their spacing in real time (UTC), so ``15m`` stays 15
minutes apart across both changes; whole days (``1d``) keep their wall-clock time instead.
"""

from __future__ import annotations

import calendar
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import Options, get_description
from croniter import croniter

from jobmanager.errors import BadParams

log = logging.getLogger("jobmanager.schedules.triggers")

KINDS = ("once", "interval", "cron")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_UNIT_NAMES = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
_EVERY = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
#: the cron macros Vixie cron and cronie accept, as the five fields they stand for
MACROS = {
    "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
}
#: the Gregorian calendar's cycle: a date pattern with no match in this many years has none at all
HORIZON_YEARS = 400
_QUARTZ_LAST = re.compile(r"(?<![\w#])([0-7])L\b", re.IGNORECASE)  # "5L" -> croniter's "L5"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadParams(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin or UTC)") from None


def wall_to_utc(naive: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a local wall time: the first occurrence of a repeated time, and the first
    instant after the gap for a time that does not exist."""
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


# -- cron ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CronSpec:
    """A parsed five-field cron expression (see the module docstring for the rules it follows)."""

    fields: tuple[str, str, str, str, str]  # as written, macros expanded
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    doms: frozenset[int]
    last_dom: bool  # "L" in the day-of-month field
    months: frozenset[int]
    dows: frozenset[int]  # 0 = Sunday
    nth: dict[int, frozenset[int | str]]  # weekday -> {2} for "#2", {"l"} for last
    day_or: bool  # cronie: either day field may match, unless one of them starts with "*"
    wild: bool  # Vixie: minute or hour starts with "*", so it runs by real time across DST changes

    def day_matches(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        return self._day_ok(d.day, d.isoweekday() % 7, calendar.monthrange(d.year, d.month)[1])

    def _day_ok(self, day: int, weekday: int, last: int) -> bool:
        """``weekday`` 0 = Sunday; ``last`` the month's last day."""
        dom_ok = day in self.doms or (self.last_dom and day == last)
        dow_ok = weekday in self.dows
        if dow_ok and weekday in self.nth:
            which = self.nth[weekday]
            dow_ok = (day - 1) // 7 + 1 in which or ("l" in which and day + 7 > last)
        return (dom_ok or dow_ok) if self.day_or else (dom_ok and dow_ok)

    def wall_times(self, start: datetime, until_year: int) -> Iterator[datetime]:
        """Every matching local wall time at or after ``start`` (naive), in order, up to ``until_year``."""
        year, month, first = start.year, start.month, start.day
        while year <= until_year:
            if month in self.months:
                weekday1, last = calendar.monthrange(year, month)  # weekday1: 0 = Monday
                for day in range(first, last + 1):
                    if self._day_ok(day, (weekday1 + day) % 7, last):
                        for h in self.hours:
                            for m in self.minutes:
                                t = datetime(year, month, day, h, m)
                                if t >= start:
                                    yield t
            year, month, first = year + month // 12, month % 12 + 1, 1


def _invalid(expr: str) -> BadParams:
    return BadParams(f"invalid cron expression {expr!r} (five fields: minute hour day month weekday, "
                     "or @hourly, @daily, @weekly, @monthly, @yearly)")


@lru_cache(maxsize=512)
def parse_cron(expr: str) -> CronSpec:
    """Parse a cron expression or macro; raises BadParams with one line (never a croniter error)."""
    text = " ".join(str(expr).split())
    if text.startswith("@"):
        macro = text.lower()
        if macro == "@reboot":
            raise BadParams("@reboot is not a schedule: a schedule needs a time (use @daily, @hourly, ...)")
        if macro not in MACROS:
            raise BadParams(f"unknown cron macro {text!r} (use @hourly, @daily, @midnight, @weekly, @monthly, "
                            "@yearly or @annually)")
        text = MACROS[macro]
    parts = text.split()
    if len(parts) != 5:
        raise _invalid(expr)
    minute, hour, dom, month, dow = parts
    try:
        expanded, nth = croniter.expand(" ".join([minute, hour, dom, month, _QUARTZ_LAST.sub(r"L\1", dow)]))
    except Exception:  # croniter raises several unrelated classes; every one means "not valid"
        raise _invalid(expr) from None

    def values(field: list, everything: range) -> set:
        return set(everything) if field == ["*"] else set(field)

    dom_values = values(expanded[2], range(1, 32))
    return CronSpec(
        fields=(minute, hour, dom, month, dow),
        minutes=tuple(sorted(values(expanded[0], range(60)))),
        hours=tuple(sorted(values(expanded[1], range(24)))),
        doms=frozenset(v for v in dom_values if isinstance(v, int)),
        last_dom="l" in dom_values,
        months=frozenset(values(expanded[3], range(1, 13))),
        dows=frozenset(v % 7 for v in values(expanded[4], range(7))),
        nth={int(k) % 7: frozenset(v) for k, v in nth.items()},
        day_or=not (dom[0] in "*?" or dow[0] in "*?"),
        wild=minute.startswith("*") or hour.startswith("*"),
    )


def _instants(naive: datetime, tz: ZoneInfo, wild: bool) -> tuple[float | None, float | None]:
    """The UTC instants a wall time runs at: (first, second). A wildcard job skips a time in the gap and
    runs a repeated time twice; a fixed-time job runs a time in the gap right after it, a repeated time once."""
    t0 = naive.replace(tzinfo=tz, fold=0).timestamp()
    if datetime.fromtimestamp(t0, tz).replace(tzinfo=None) != naive:  # does not exist: in the gap
        return (None, None) if wild else (wall_to_utc(naive, tz).timestamp(), None)
    t1 = naive.replace(tzinfo=tz, fold=1).timestamp()
    return t0, (t1 if wild and t1 != t0 else None)


def next_cron(spec: CronSpec, tz: ZoneInfo, after: float) -> float | None:
    """The first run of ``spec`` strictly after ``after`` (UTC epoch seconds), or None if it never fires.

    Wall times are visited in order; their first instants are then in order too, and a repeated time's
    second instant (wildcard jobs) lies after the change, so the search may stop at the first wall time
    whose first instant is past ``after``. It starts early by the size of a nearby fall-back, whose second
    pass may still be ahead.
    """
    here = datetime.fromtimestamp(after, tz)
    offsets = []
    for shift in (-86400, 0, 86400):
        try:
            offsets.append(datetime.fromtimestamp(after + shift, tz).utcoffset() or timedelta(0))
        except (OverflowError, OSError, ValueError):
            pass
    start = here.replace(tzinfo=None, second=0, microsecond=0) - (max(offsets) - min(offsets))
    best: float | None = None
    for naive in spec.wall_times(start, min(here.year + HORIZON_YEARS + 1, 9998)):
        first, second = _instants(naive, tz, spec.wild)
        if second is not None and second > after and (best is None or second < best):
            best = second
        if first is not None and first > after:
            return first if best is None or first < best else best
    return best


def describe_cron(expr: str) -> str:
    """A human sentence for a cron expression, e.g. "At 02:00, Monday through Friday"."""
    spec = parse_cron(expr)
    minute, hour, dom, month, dow = spec.fields
    opts = Options()
    opts.use_24hour_time_format = True
    if spec.day_or or dom in ("*", "?") or dow in ("*", "?"):
        return get_description(" ".join(spec.fields), opts)
    # Both day fields restrict and cronie ANDs them; cron-descriptor would say "or".
    base = get_description(f"{minute} {hour} {dom} {month} *", opts)
    days = dow if not dow.startswith("*") else ",".join(str(d) for d in sorted(spec.dows))
    on = get_description(f"0 0 * * {days}", opts).removeprefix("At 00:00, ").removeprefix("only ")
    return f"{base}, and only {on}"


# -- triggers ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trigger:
    """``kind`` once|interval|cron; ``value`` an ISO local time, ``15m``/``2h``/``1d``, or a cron expression."""

    kind: str
    value: str
    tz: str = "UTC"
    anchor: float | None = None  # interval triggers count from here (UTC epoch seconds)

    @classmethod
    def parse(cls, *, cron: str | None = None, every: str | None = None, at: str | datetime | None = None,
              tz: str = "UTC", now: float | None = None) -> Trigger:
        """Exactly one of cron, every, at. Raises BadParams with one readable line."""
        given = [name for name, v in (("cron", cron), ("every", every), ("at", at)) if v not in (None, "")]
        if len(given) != 1:
            raise BadParams("give exactly one trigger: cron, every or at")
        zone(tz)
        now = datetime.now(UTC).timestamp() if now is None else now
        if cron is not None:
            expr = " ".join(str(cron).split())
            if expr.startswith("@"):
                expr = expr.lower()
            spec = parse_cron(expr)
            if next_cron(spec, zone(tz), now) is None:
                if next_cron(spec, zone("UTC"), now) is None:
                    raise BadParams(f"cron expression {cron!r} never fires: no date matches it")
                raise BadParams(f"cron expression {cron!r} never fires in {tz}: every time it names falls in a "
                                "daylight-saving gap")
            return cls("cron", expr, tz)
        if every is not None:
            m = _EVERY.match(str(every))
            if not m or int(m.group(1)) <= 0:
                raise BadParams(f"invalid interval {every!r}: use a whole number and a unit, e.g. 30s, 15m, 2h, 1d")
            return cls("interval", f"{int(m.group(1))}{m.group(2)}", tz, anchor=now)
        assert at is not None  # exactly one of the three was given
        local = _parse_local(at, tz)
        if wall_to_utc(local, zone(tz)).timestamp() <= now:
            raise BadParams(f"the one-time date {local:%Y-%m-%d %H:%M} {tz} is in the past")
        return cls("once", local.isoformat(timespec="minutes"), tz)

    # -- next run ------------------------------------------------------------------------------
    def next_after(self, after: float) -> float | None:
        """The first run strictly after ``after`` (UTC epoch seconds), or None if there is none.

        Never raises for a stored expression that no longer parses or never fires: that is None.
        """
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
            step = n * _UNITS[unit]  # real time: the spacing holds across DST changes
            k = int((after - anchor) // step) + 1
            return anchor + max(k, 1) * step
        try:
            spec = parse_cron(self.value)
        except BadParams as exc:
            log.warning("cron trigger %r cannot fire: %s", self.value, exc)
            return None
        return next_cron(spec, tz, after)

    def upcoming(self, count: int, after: float) -> list[float]:
        """The next ``count`` runs after ``after`` (fewer when the trigger ends)."""
        out: list[float] = []
        t = after
        while len(out) < count:
            following = self.next_after(t)
            if following is None:
                break
            out.append(following)
            t = following
        return out

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
        try:
            return f"{describe_cron(self.value)} ({self.tz})"
        except Exception:  # a description must never break a listing
            return f"{self.value} ({self.tz})"


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


def local_label(ts: float, tz: str) -> str:
    """A UTC instant as the schedule's own wall time, with its zone: "2026-03-29 03:00 CEST (Europe/Berlin)"."""
    local = datetime.fromtimestamp(ts, zone(tz))
    abbrev = local.strftime("%Z")
    return f"{local:%Y-%m-%d %H:%M} {abbrev}" + ("" if abbrev == tz else f" ({tz})")
