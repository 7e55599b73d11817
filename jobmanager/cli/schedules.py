"""The ``jobmanager schedule ...`` commands (they join the ``cli`` group of :mod:`jobmanager.cli.main`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from jobmanager import validate
from jobmanager.cli.common import (
    SMALL_INT,
    Seconds,
    cli,
    echo,
    handle_errors,
    parse_params,
    print_frame,
    service_of,
)


# -- schedules ---------------------------------------------------------------------------------------
@cli.group()
def schedule() -> None:
    """One-time and recurring schedules (the Scheduled tab)."""


def _trigger_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--cron", help='A cron expression, e.g. "0 2 * * 1-5" (weekdays at 02:00).'),
        click.option("--every", help="An interval: 30s, 15m, 2h, 1d."),
        click.option("--at", "at", help="Once, at this local date-time (ISO, e.g. 2026-12-01T09:00)."),
        click.option("--tz", help="IANA time zone of the trigger (default UTC)."),
        click.option("--misfire", type=click.Choice(["run_once", "skip"]),
                     help="After downtime: run a missed run once now (default) or skip it."),
        click.option("--param", "-p", "pairs", multiple=True, metavar="KEY=VALUE", help="A job parameter."),
        click.option("--params-json", help="All job parameters as one JSON object."),
        click.option("--case", help="The case the jobs belong to."),
        click.option("--priority", type=SMALL_INT, help="Priority of the jobs."),
        click.option("--queue", help="The queue its jobs run on (default: the job type's)."),
        click.option("--soft-limit", type=Seconds(0, validate.MAX_TIME_LIMIT_S), metavar="SECONDS",
                     help="Ask a task of its jobs to stop after this long."),
        click.option("--hard-limit", type=Seconds(0, validate.MAX_TIME_LIMIT_S), metavar="SECONDS",
                     help="End a task of its jobs after this long, whatever it does."),
        click.option("--notify", "notify", multiple=True, metavar="RULE",
                     help="EVENTS:TARGET, as for submit (e.g. failed:mailto:ops@example.org); repeatable."),
    ]):
        fn = option(fn)
    return fn


def _schedule_fields(pairs: tuple[str, ...], params_json: str | None, **kw: Any) -> dict[str, Any]:
    from jobmanager.notify.rules import parse

    options = {key: kw.pop(key, None) for key in ("queue", "soft_limit", "hard_limit")}
    notify = kw.pop("notify", ())
    if notify:
        options["notify"] = [parse(text, "--notify") for text in notify]
    fields = {k: v for k, v in kw.items() if v is not None}
    if any(v is not None for v in options.values()):
        fields["options"] = {k: v for k, v in options.items() if v is not None}
    if pairs or params_json:
        fields["params"] = parse_params(pairs, params_json)
    return fields


@schedule.command("add")
@click.argument("name")
@click.argument("type")
@_trigger_options
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@click.pass_context
@handle_errors
def schedule_add(ctx: click.Context, name: str, type: str, pairs: tuple[str, ...], params_json: str | None,
                 disabled: bool, **kw: Any) -> None:
    """Create schedule NAME running a job of TYPE (exactly one of --cron, --every, --at)."""
    fields = _schedule_fields(pairs, params_json, **kw)
    fields.setdefault("tz", "UTC")
    row = service_of(ctx).create_schedule(name, type, fields.pop("params", {}), source="cli",
                                   enabled=not disabled, **fields)
    echo(f"schedule {row['name']} created; next run {_when(row['next_run_at'])}")


@schedule.command("edit")
@click.argument("name")
@_trigger_options
@click.pass_context
@handle_errors
def schedule_edit(ctx: click.Context, name: str, pairs: tuple[str, ...], params_json: str | None, **kw: Any) -> None:
    """Change a schedule's trigger, parameters, zone, misfire policy, case, priority or its jobs' options."""
    row = service_of(ctx).edit_schedule(name, **_schedule_fields(pairs, params_json, **kw))
    echo(f"schedule {name} updated; next run {_when(row['next_run_at'])}")


def _when(ts: float | None) -> str:
    import datetime as dt

    return "none" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def schedule_list(ctx: click.Context, as_json: bool) -> None:
    """List schedules with their next and last runs."""
    df = service_of(ctx).schedules()
    if not as_json:
        df = df[["name", "type", "description", "enabled", "next_run", "last_job_id", "last_job_state",
                 "runs_as", "source_kind"]]
    print_frame(df, as_json)


@schedule.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def schedule_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one schedule and its recent runs."""
    row = service_of(ctx).get_schedule(name)
    if as_json:
        click.echo(json.dumps(row, indent=2, default=str))
        return
    echo(f"{row['name']}: {row['type']}  {row['description']}  {'enabled' if row['enabled'] else 'disabled'}")
    echo(f"next run {_when(row['next_run_at'])}; misfire {row['misfire']}; runs as {row['runs_as']}")
    echo(f"configured in {row['source_kind']}{': ' + row['source_ref'] if row['source_ref'] else ''}")
    echo(f"params {json.dumps(row['params'])}")
    options = dict(row.get("options") or {})
    rules = options.pop("notify", None) or []
    if options:
        echo("job options " + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in sorted(options.items())))
    for rule in rules:
        echo(f"notify {','.join(rule['on'])}:{rule['to']}")
    for run in row["runs"][:10]:
        echo(f"  {_when(run['fired_at'])}  {run['outcome']:<8} job {run['job_id'] or '-'}"
                   f"  {run['job_state'] or ''}  {run['message'] or ''}")


def _schedule_action(name: str, method: str, doc: str) -> None:
    @schedule.command(name=name, help=doc)
    @click.argument("schedule_name")
    @click.pass_context
    @handle_errors
    def command(ctx: click.Context, schedule_name: str) -> None:
        result = getattr(service_of(ctx), method)(schedule_name)
        echo(f"schedule {schedule_name}: {name} done" + (f" (job {result})" if result else ""))


_schedule_action("enable", "enable_schedule", "Enable a schedule (its next run is computed from now).")
_schedule_action("disable", "disable_schedule", "Disable a schedule; it keeps its configuration.")
_schedule_action("delete", "delete_schedule", "Delete a schedule (its past jobs stay).")
_schedule_action("run-now", "run_schedule_now", "Submit the schedule's job now; prints the job id.")


@schedule.command("sync")
@click.pass_context
@handle_errors
def schedule_sync(ctx: click.Context) -> None:
    """Load schedules.toml from the home and make the store match it."""
    summary = service_of(ctx).sync_schedules_file()
    click.echo(", ".join(f"{k} {v}" for k, v in summary.items()))
