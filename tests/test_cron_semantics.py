"""Cron schedules fire when cron would: Vixie cron / cronie semantics, checked against vectors.

Each vector was written from a published rule (transcribed, not copied), with its source:

- V8: Vixie cron(8): when the clock changes by less than 3 hours, "those jobs which would have run in
  the time that was skipped will be run soon after the change", and jobs in a repeated time "will not be
  re-run"; "Only jobs that run at a particular time (not specified as @hourly, nor with '*' in the hour
  or minute specifier) are affected. Jobs which are specified with wildcards are run based on the new
  time immediately" (so they skip a time that does not exist and run a repeated time again).
- C5: cronie crontab(5): with both day fields restricted, "the command will be run when either field
  matches"; example "30 4 1,15 * 5" runs on the 1st and 15th and every Friday. cronie decides
  "restricted" by the field's first character (``*`` sets its DOM_STAR / DOW_STAR flag), so ``*/7``
  is not restricted and the day must match both fields.
- M5: crontab(5) macros: @hourly = "0 * * * *", @daily = @midnight = "0 0 * * *", @weekly =
  "0 0 * * 0", @monthly = "0 0 1 * *", @yearly = @annually = "0 0 1 1 *"; @reboot runs at start-up.
- Q: the Quartz-style extensions in cron libraries (Cronos, cronsim): "5L" and "L5" the last Friday
  of the month, "5#2" its second Friday, "L" in the day-of-month field its last day.
- I16: issue 16 (what the peers agree on for the cases above).

Zones: Europe/Riga and Europe/Berlin (one-hour changes at 03:00/02:00), Europe/London (01:00),
America/New_York (02:00), Australia/Lord_Howe (a 30-minute change at 02:00), America/Sao_Paulo 2018
(changes at midnight: 2018-02-18 00:00 went back to 02-17 23:00; 2018-11-04 00:00 jumped to 01:00).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobmanager import BadParams, JobManager
from jobmanager.cli.main import cli
from jobmanager.schedules.triggers import Trigger, zone

from .backends import query_store

# (source, cron, zone, local start, the runs after it as local ISO times with their offsets)
VECTORS = [
    # -- autumn: the repeated hour ---------------------------------------------------------------------------
    ("V8 I16 wildcard hour runs the repeated hour again", "0 * * * *", "Europe/Riga", "2021-10-31T01:30",
     ["02:00+03:00", "03:00+03:00", "03:00+02:00", "04:00+02:00"]),
    ("V8 @hourly is a wildcard job", "@hourly", "Europe/Riga", "2021-10-31T02:30",
     ["03:00+03:00", "03:00+02:00", "04:00+02:00"]),
    ("V8 fixed time runs once, at the first occurrence", "30 2 * * *", "Europe/Berlin", "2026-10-24T12:00",
     ["2026-10-25T02:30+02:00", "2026-10-26T02:30+01:00"]),
    ("V8 a list in both fields is fixed-time", "0,30 2 * * *", "Europe/Berlin", "2026-10-25T00:00",
     ["02:00+02:00", "02:30+02:00", "2026-10-26T02:00+01:00"]),
    ("V8 '*' in the minute field is a wildcard job", "*/30 2 * * *", "Europe/Berlin", "2026-10-25T00:00",
     ["02:00+02:00", "02:30+02:00", "02:00+01:00", "02:30+01:00", "2026-10-26T02:00+01:00"]),
    ("V8 I16 sub-hourly list, wildcard hour", "15,45 * * * *", "America/New_York", "2025-11-02T00:50",
     ["01:15-04:00", "01:45-04:00", "01:15-05:00", "01:45-05:00", "02:15-05:00"]),
    ("V8 fixed time in the repeated hour", "30 1 * * *", "America/New_York", "2025-11-02T00:00",
     ["01:30-04:00", "2025-11-03T01:30-05:00"]),
    ("V8 30-minute fall-back, wildcard", "*/15 * * * *", "Australia/Lord_Howe", "2025-04-06T01:10",
     ["01:15+11:00", "01:30+11:00", "01:45+11:00", "01:30+10:30", "01:45+10:30", "02:00+10:30"]),
    ("V8 30-minute fall-back, fixed time", "45 1 * * *", "Australia/Lord_Howe", "2025-04-06T00:00",
     ["01:45+11:00", "2025-04-07T01:45+10:30"]),
    ("V8 fall-back at midnight, wildcard", "0 * * * *", "America/Sao_Paulo", "2018-02-17T21:30",
     ["22:00-02:00", "23:00-02:00", "23:00-03:00", "2018-02-18T00:00-03:00"]),
    ("V8 fall-back at midnight, fixed time", "30 23 * * *", "America/Sao_Paulo", "2018-02-17T12:00",
     ["23:30-02:00", "2018-02-18T23:30-03:00"]),
    # -- spring: the gap ---------------------------------------------------------------------------------------
    ("V8 I16 wildcard skips a time that does not exist", "7 * * * *", "Europe/London", "2025-03-30T00:00",
     ["00:07+00:00", "02:07+01:00", "03:07+01:00"]),
    ("V8 I16 sub-hourly list skips the gap", "15,45 * * * *", "America/New_York", "2025-03-09T01:00",
     ["01:15-05:00", "01:45-05:00", "03:15-04:00", "03:45-04:00"]),
    ("V8 hourly: no extra run at the end of the gap", "0 * * * *", "Europe/Berlin", "2026-03-29T01:30",
     ["03:00+02:00", "04:00+02:00"]),
    ("V8 fixed time in the gap runs right after it", "30 2 * * *", "Europe/Berlin", "2026-03-28T00:00",
     ["2026-03-28T02:30+01:00", "2026-03-29T03:00+02:00", "2026-03-30T02:30+02:00"]),
    ("V8 two fixed times in the gap run once", "0,30 2 * * *", "America/New_York", "2025-03-09T00:00",
     ["03:00-04:00", "2025-03-10T02:00-04:00"]),
    ("V8 30-minute gap, wildcard", "*/15 * * * *", "Australia/Lord_Howe", "2025-10-05T01:40",
     ["01:45+10:30", "02:30+11:00", "02:45+11:00"]),
    ("V8 30-minute gap, fixed time", "15 2 * * *", "Australia/Lord_Howe", "2025-10-05T00:00",
     ["02:30+11:00", "2025-10-06T02:15+11:00"]),
    ("V8 gap at midnight, fixed midnight job", "0 0 * * *", "America/Sao_Paulo", "2018-11-03T12:00",
     ["2018-11-04T01:00-02:00", "2018-11-05T00:00-02:00"]),
    ("V8 gap at midnight, wildcard", "*/30 * * * *", "America/Sao_Paulo", "2018-11-03T23:10",
     ["23:30-03:00", "2018-11-04T01:00-02:00", "2018-11-04T01:30-02:00"]),
    # -- day of month and day of week --------------------------------------------------------------------------
    ("C5 I16 '*/7' starts with '*': both must match (first Sunday)", "1 1 1-7 * */7", "UTC", "2025-01-01T00:00",
     ["2025-01-05T01:01+00:00", "2025-02-02T01:01+00:00", "2025-03-02T01:01+00:00"]),
    ("C5 crontab(5)'s example: either may match", "30 4 1,15 * 5", "UTC", "2025-01-01T00:00",
     ["2025-01-01T04:30+00:00", "2025-01-03T04:30+00:00", "2025-01-10T04:30+00:00", "2025-01-15T04:30+00:00",
      "2025-01-17T04:30+00:00"]),
    ("C5 I16 either may match", "0 0 1,15 * 1", "UTC", "2025-01-01T00:00",
     ["2025-01-06T00:00+00:00", "2025-01-13T00:00+00:00", "2025-01-15T00:00+00:00", "2025-01-20T00:00+00:00"]),
    ("C5 a day-of-month step starts with '*': both", "0 0 */10 * 1", "UTC", "2025-01-01T00:00",
     ["2025-03-31T00:00+00:00", "2025-04-21T00:00+00:00", "2025-07-21T00:00+00:00"]),
    ("C5 '1-31' does not start with '*': either (every day)", "0 0 1-31 * 1", "UTC", "2025-01-01T00:00",
     ["2025-01-02T00:00+00:00", "2025-01-03T00:00+00:00"]),
    ("C5 one field '*': the other decides", "0 0 * * 1", "UTC", "2025-01-01T00:00",
     ["2025-01-06T00:00+00:00", "2025-01-13T00:00+00:00"]),
    # -- macros and extensions -----------------------------------------------------------------------------------
    ("M5 @daily", "@daily", "Europe/Berlin", "2025-01-01T12:00",
     ["2025-01-02T00:00+01:00", "2025-01-03T00:00+01:00"]),
    ("M5 @midnight", "@midnight", "UTC", "2025-01-01T12:00", ["2025-01-02T00:00+00:00"]),
    ("M5 @weekly (Sunday)", "@weekly", "UTC", "2025-01-01T00:00",
     ["2025-01-05T00:00+00:00", "2025-01-12T00:00+00:00"]),
    ("M5 @monthly", "@MONTHLY", "UTC", "2025-01-01T00:00", ["2025-02-01T00:00+00:00", "2025-03-01T00:00+00:00"]),
    ("M5 @yearly", "@yearly", "UTC", "2025-01-01T00:00", ["2026-01-01T00:00+00:00"]),
    ("M5 @annually", "@annually", "UTC", "2025-06-01T00:00", ["2026-01-01T00:00+00:00"]),
    ("Q 5L last Friday", "0 9 * * 5L", "UTC", "2025-01-01T00:00",
     ["2025-01-31T09:00+00:00", "2025-02-28T09:00+00:00", "2025-03-28T09:00+00:00"]),
    ("Q L5 last Friday", "0 9 * * L5", "UTC", "2025-01-01T00:00", ["2025-01-31T09:00+00:00"]),
    ("Q 5#2 second Friday", "0 9 * * 5#2", "UTC", "2025-01-01T00:00",
     ["2025-01-10T09:00+00:00", "2025-02-14T09:00+00:00"]),
    ("Q L last day of February", "0 0 L 2 *", "UTC", "2027-01-01T00:00",
     ["2027-02-28T00:00+00:00", "2028-02-29T00:00+00:00"]),
]


def _local_runs(expr: str, tz: str, start: str, n: int) -> list[str]:
    z = zone(tz)
    t = Trigger.parse(cron=expr, tz=tz, now=0)
    after = datetime.fromisoformat(start).replace(tzinfo=z).timestamp()
    return [datetime.fromtimestamp(x, z).isoformat(timespec="minutes") for x in t.upcoming(n, after)]


@pytest.mark.parametrize("source,expr,tz,start,expected", VECTORS, ids=[v[0] for v in VECTORS])
def test_vector(source: str, expr: str, tz: str, start: str, expected: list[str]) -> None:
    day = start[:10]  # an expected time without a date is on the start's date
    want = [e if "T" in e else f"{day}T{e}" for e in expected]
    assert _local_runs(expr, tz, start, len(want)) == want


def test_every_minute_runs_all_120_minutes_of_the_repeated_hour() -> None:
    """V8 I16: ``* * * * *`` in Riga runs 03:00-03:59 twice on 2021-10-31 (00:00-02:00 UTC)."""
    t = Trigger.parse(cron="* * * * *", tz="Europe/Riga", now=0)
    start = datetime(2021, 10, 31, 0, 0, tzinfo=UTC).timestamp()
    runs = t.upcoming(121, start - 1)
    assert runs == [start + 60 * i for i in range(121)]  # every real minute, none skipped or doubled
    local = [datetime.fromtimestamp(x, zone("Europe/Riga")).strftime("%H:%M%z") for x in runs]
    assert local[0] == "03:00+0300" and local[59] == "03:59+0300" and local[60] == "03:00+0200"
    assert local[119] == "03:59+0200" and local[120] == "04:00+0200"


@pytest.mark.parametrize("tz,start", [
    ("Europe/Berlin", "2026-03-29T01:00"), ("Europe/Berlin", "2026-10-25T01:00"),
    ("America/New_York", "2025-03-09T00:30"), ("America/New_York", "2025-11-02T00:30"),
    ("Australia/Lord_Howe", "2025-04-06T01:00"), ("Australia/Lord_Howe", "2025-10-05T01:00"),
    ("America/Sao_Paulo", "2018-02-17T22:30"), ("America/Sao_Paulo", "2018-11-03T23:00"),
])
def test_every_15m_keeps_real_spacing_across_both_changes(tz: str, start: str) -> None:
    z = zone(tz)
    now = datetime.fromisoformat(start).replace(tzinfo=z).timestamp()
    t = Trigger.parse(every="15m", tz=tz, now=now)
    runs = t.upcoming(16, now)
    assert [b - a for a, b in zip([now, *runs], runs, strict=False)] == [900.0] * 16
    offsets = {datetime.fromtimestamp(x, z).utcoffset() for x in runs}
    assert len(offsets) == 2  # the window really crosses the change


# -- never-firing and unsupported expressions ----------------------------------------------------------------
NEVER = ["* * 30 2 *", "* * 31 2 *", "0 0 31 4,6,9,11 *", "0 0 */31 * 5#5"]


@pytest.mark.parametrize("expr", NEVER)
def test_never_firing_expression_is_refused(expr: str) -> None:
    with pytest.raises(BadParams, match="never fires: no date matches it"):
        Trigger.parse(cron=expr)


def test_expression_whose_every_time_falls_in_a_gap_is_refused() -> None:
    # 02:xx on the second Sunday of March never exists in New York (since 2007): a wildcard job skips it.
    with pytest.raises(BadParams, match="never fires in America/New_York"):
        Trigger.parse(cron="*/5 2 * 3 0#2", tz="America/New_York", now=datetime(2025, 1, 1, tzinfo=UTC).timestamp())
    assert Trigger.parse(cron="30 2 * 3 0#2", tz="America/New_York")  # fixed time: runs right after the gap


@pytest.mark.parametrize("expr", NEVER + ["61 * * * *", "0 0 * * 1-5,L0", "H * * * *"])
def test_next_after_never_raises_for_a_stored_bad_expression(expr: str) -> None:
    assert Trigger("cron", expr, "Europe/Berlin").next_after(0) is None


@pytest.mark.parametrize("expr,message", [
    ("@reboot", "@reboot is not a schedule"),
    ("@fortnightly", "unknown cron macro"),
    ("0 0 * * 1-5,L0", "invalid cron expression"),
])
def test_unsupported_expressions_get_one_line(expr: str, message: str) -> None:
    with pytest.raises(BadParams, match=message) as exc:
        Trigger.parse(cron=expr)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("expr", ["* * 30 2 *", "* * 31 2 *", "0 0 31 4,6,9,11 *", "@reboot"])
def test_cli_refuses_never_firing_expressions_with_one_line(home: Path, jm: JobManager, expr: str) -> None:
    result = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "schedule", "add", "x", "sleep",
                                          "--cron", expr], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "never fires" in lines[0] or "@reboot" in lines[0]
    assert query_store(home, "SELECT count(*) FROM schedules")[0][0] == 0


def test_descriptions_follow_the_day_rule() -> None:
    assert Trigger.parse(cron="1 1 1-7 * */7").describe() == \
        "At 01:01, between day 1 and 7 of the month, and only on Sunday (UTC)"
    assert Trigger.parse(cron="0 0 1,15 * 1").describe() == "At 00:00, on day 1 and 15 of the month, or on Monday (UTC)"
    assert Trigger.parse(cron="@daily", tz="Europe/Berlin").describe() == "At 00:00 (Europe/Berlin)"
    assert Trigger.parse(cron="0 9 * * 5L").describe() == "At 09:00, on the last Friday of the month (UTC)"


# -- the firing path through a real agent, across a change it lives through ------------------------------------
def _write_zone(path: Path, transition: int, before: int, after: int) -> None:
    """A TZif file (RFC 8536, version 2) with one change at ``transition``: UTC offset ``before`` seconds,
    then ``after``. A change of seconds, not an hour, so a test lives through it in real time."""
    import struct

    def block(time_fmt: str) -> bytes:
        header = b"TZif2" + bytes(15) + struct.pack(">6l", 0, 0, 0, 1, 2, 8)
        return (header + struct.pack(">" + time_fmt, transition) + bytes([1])
                + struct.pack(">lBB", before, 0, 0) + struct.pack(">lBB", after, 0, 4) + b"BEF\0AFT\0")

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(block("l") + block("q") + b"\n\n")


def test_agent_fires_across_a_fall_back_and_a_spring_forward(jm: JobManager, start_agent, tmp_path: Path,
                                                              monkeypatch) -> None:
    """Two zones change their UTC offset by 10 s at T, in real time, seen by the test and the agent alike.

    Fold (offset -10 s): the wall minute W happens at T-10 and again at T. A wildcard job (``* * * * *``)
    fires both; a fixed-time job at W fires once, at T-10 (V8).
    Gap (offset +10 s): wall times W-5 s to W+5 s never happen. The wildcard job skips W (its next run is
    W+1 min, at T+55); the fixed-time job at W fires right after the gap, at T (V8).
    """
    import time
    import zoneinfo

    from .conftest import wait_for

    T = int(time.time()) + 25
    fold_after = (-T) % 60  # T + fold_after is the whole minute W
    gap_after = (-T) % 60 + 5
    tzdir = tmp_path / "zones"
    _write_zone(tzdir / "JMTest" / "Fold", T, fold_after + 10, fold_after)
    _write_zone(tzdir / "JMTest" / "Gap", T, gap_after - 10, gap_after)
    monkeypatch.setenv("PYTHONTZPATH", str(tzdir))  # the agent process reads it at start-up
    zoneinfo.reset_tzpath([str(tzdir), *zoneinfo.TZPATH])
    try:
        w = datetime.fromtimestamp(T + fold_after, UTC)
        fixed = f"{w.minute} {w.hour} * * *"
        for name, expr, tz in (("fold-wild", "* * * * *", "JMTest/Fold"), ("fold-fixed", fixed, "JMTest/Fold"),
                               ("gap-wild", "* * * * *", "JMTest/Gap"), ("gap-fixed", fixed, "JMTest/Gap")):
            jm.schedule(name, "sleep", {"tasks": 1}, cron=expr, tz=tz)
        assert jm.store.schedules.get("fold-wild")["next_run_at"] == T - 10
        assert jm.store.schedules.get("gap-wild")["next_run_at"] == T + 55  # W does not exist: skipped
        assert jm.store.schedules.get("gap-fixed")["next_run_at"] == T  # right after the gap
        start_agent("a1")
        wait_for(lambda: len(jm.store.schedules.runs("fold-wild")) >= 2 and jm.store.schedules.runs("gap-fixed"),
                 timeout=60, what="the runs at T")
        time.sleep(max(0.0, T + 2 - time.time()))

        def dues(name: str) -> list[float]:
            return sorted(r["due_at"] for r in jm.store.schedules.runs(name, limit=100) if r["job_id"])

        assert dues("fold-wild") == [T - 10, T]  # the repeated minute ran twice, 10 s apart
        assert dues("fold-fixed") == [T - 10]  # once, at its first occurrence
        assert jm.store.schedules.get("fold-fixed")["next_run_at"] == T + 86400  # tomorrow's W, new offset
        assert dues("gap-fixed") == [T]
        assert dues("gap-wild") == [] and jm.store.schedules.get("gap-wild")["next_run_at"] == T + 55
    finally:
        for name in ("fold-wild", "fold-fixed", "gap-wild", "gap-fixed"):
            jm.disable_schedule(name) if any(s["name"] == name for s in jm.store.schedules.list_all()) else None
        zoneinfo.reset_tzpath()
        zoneinfo.ZoneInfo.clear_cache(only_keys=["JMTest/Fold", "JMTest/Gap"])
