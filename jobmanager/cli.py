"""The ``jobmanager`` command: short click functions over the service.

Each command opens the home, calls one service method and prints the result.
Every error the user can cause becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pandas as pd

from .errors import BadParams, JobManagerError
from .service import JobManager


class CLIError(click.ClickException):
    exit_code = 2


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JobManagerError as exc:
            raise CLIError(str(exc)) from None

    return wrapper


def _jm(ctx: click.Context) -> JobManager:
    obj = ctx.find_object(dict)
    if obj.get("jm") is None:
        obj["jm"] = JobManager(obj["home"], user=obj["user"], imports=tuple(obj.get("imports", ())))
        ctx.call_on_close(obj["jm"].close)
    return obj["jm"]


def _print_frame(df: pd.DataFrame, as_json: bool) -> None:
    if as_json:
        click.echo(df.to_json(orient="records", date_format="iso", indent=2))
    elif df.empty:
        click.echo("(none)")
    else:
        with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
            click.echo(df.to_string(index=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", envvar="JOBMANAGER_HOME", type=click.Path(file_okay=False),
              help="The Job Manager home folder (default: $JOBMANAGER_HOME).")
@click.option("--user", envvar="JOBMANAGER_USER", help="Act as this user (default: your login name).")
@click.option("--import", "imports", multiple=True, metavar="MODULE",
              help="Import a module that registers job types (repeatable).")
@click.version_option(package_name="jobmanager")
@click.pass_context
def cli(ctx: click.Context, home: str | None, user: str | None, imports: tuple[str, ...]) -> None:
    """Run, watch and fix background jobs."""
    ctx.ensure_object(dict)
    ctx.obj.update(home=home, user=user, imports=imports)


@cli.command()
@click.pass_context
@handle_errors
def init(ctx: click.Context) -> None:
    """Create a home folder (store, queue, logs), or check an existing one."""
    jm = JobManager.init(ctx.obj["home"], user=ctx.obj["user"])
    click.echo(f"Job Manager home ready at {jm.home.path}")
    jm.close()


@cli.command()
@click.option("--name", help="Agent name (default: host-pid); must be unique among running agents.")
@click.option("--workers", type=click.IntRange(1, 256), default=2, show_default=True, help="Worker threads.")
@click.option("--heartbeat", type=click.FloatRange(0.1, 3600), help="Seconds between heartbeats.")
@click.option("--import", "agent_imports", multiple=True, metavar="MODULE", help="Module with job types.")
@click.option("--shutdown-timeout", type=float, default=10.0, show_default=True,
              help="Seconds running tasks get to finish on stop before they are handed back.")
@click.pass_context
@handle_errors
def agent(ctx: click.Context, name: str | None, workers: int, heartbeat: float | None,
          agent_imports: tuple[str, ...], shutdown_timeout: float) -> None:
    """Run an agent: a Huey consumer that runs tasks and sends heartbeats."""
    from .agent import Agent
    from .home import Home

    home = Home.open(ctx.obj["home"])
    a = Agent(home, name=name, workers=workers, interval=heartbeat,
              imports=tuple(ctx.obj["imports"]) + agent_imports, shutdown_timeout=shutdown_timeout)
    a.prepare()
    a.run()


def _parse_params(pairs: tuple[str, ...], params_json: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if params_json:
        try:
            params = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise BadParams(f"--params-json is not valid JSON: {exc}") from None
        if not isinstance(params, dict):
            raise BadParams("--params-json must be a JSON object")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadParams(f"--param {pair!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


@cli.command()
@click.argument("type")
@click.option("--param", "-p", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A parameter; VALUE is read as JSON when it parses (3, true, [1,2]), else as text.")
@click.option("--params-json", help="All parameters as one JSON object.")
@click.option("--name", help="A name for the job.")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option("--case", help="The case the job belongs to (access control).")
@click.option("--retries", type=click.IntRange(0, 100), help="Automatic retries of a failed task.")
@click.pass_context
@handle_errors
def submit(ctx: click.Context, type: str, pairs: tuple[str, ...], params_json: str | None, name: str | None,
           priority: int, case: str | None, retries: int | None) -> None:
    """Submit a job of TYPE; prints its id once it is safely stored."""
    params = _parse_params(pairs, params_json)
    click.echo(_jm(ctx).submit(type, params, name=name, priority=priority, case=case, retries=retries))


@cli.command()
@click.option("--tab", type=click.Choice(["in-progress", "completed"]), help="Only this tab's jobs.")
@click.option("--state", help="Only jobs in this state.")
@click.option("--type", "type_", help="Only jobs of this type.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.pass_context
@handle_errors
def jobs(ctx: click.Context, tab: str | None, state: str | None, type_: str | None, limit: int,
         as_json: bool) -> None:
    """List jobs, newest first."""
    df = _jm(ctx).jobs(tab=tab, state=state, type=type_, limit=limit)
    if not as_json:
        df = df[["id", "name", "type", "state", "progress", "owner", "tasks_total", "tasks_failed", "created_at"]]
        df = df.assign(progress=(df["progress"] * 100).round().astype(int).astype(str) + "%",
                       created_at=df["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S"))
    _print_frame(df, as_json)


@cli.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def show(ctx: click.Context, job_id: int, as_json: bool) -> None:
    """Show one job with its tasks."""
    job = _jm(ctx).job(job_id)
    if as_json:
        click.echo(job.to_json())
        return
    click.echo(f"job {job.id}: {job.name}  [{job.type}]  {job.state}  {job.progress:.0%}")
    click.echo(f"owner {job.owner}  case {job.case or '-'}  priority {job.priority}  "
               f"tasks {job.tasks_succeeded} ok / {job.tasks_failed} failed / {job.tasks_total}")
    if job.error:
        click.echo(f"error: {job.error}")
    for t in job.tasks:
        err = f"  {t.error}" if t.error else ""
        click.echo(f"  {t.seq:>4}  {t.state:<10} {t.name}  attempts {t.attempts}/{t.max_attempts}"
                   f"  {t.agent or '-'}{err}")


def _action(name: str, doc: str) -> None:
    @cli.command(name=name, help=doc)
    @click.argument("job_id", type=int)
    @click.pass_context
    @handle_errors
    def command(ctx: click.Context, job_id: int) -> None:
        getattr(_jm(ctx), name)(job_id)
        click.echo(f"job {job_id}: {name} done")


_action("pause", "Pause a job: no new task starts; running ones finish.")
_action("resume", "Resume a paused job.")
_action("cancel", "Cancel a job: queued tasks never run, running ones are asked to stop.")


@cli.command()
@click.argument("job_id", type=int)
@click.option("--task", type=int, help="Retry only this task (its number in the job).")
@click.pass_context
@handle_errors
def retry(ctx: click.Context, job_id: int, task: int | None) -> None:
    """Re-queue the failed tasks of a finished job (or one task)."""
    _jm(ctx).retry(job_id, task=task)
    click.echo(f"job {job_id}: retry queued")


@cli.command()
@click.argument("job_id", type=int)
@click.argument("priority", type=int)
@click.pass_context
@handle_errors
def priority(ctx: click.Context, job_id: int, priority: int) -> None:
    """Set the priority of a job in progress (higher runs first)."""
    _jm(ctx).set_priority(job_id, priority)
    click.echo(f"job {job_id}: priority {priority}")


@cli.command()
@click.argument("job_id", type=int)
@click.option("--task", type=int, help="Only this task's log.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to FILE.")
@click.pass_context
@handle_errors
def logs(ctx: click.Context, job_id: int, task: int | None, output: str | None) -> None:
    """Print (or save) a job's log: all task logs in order."""
    text = _jm(ctx).log(job_id, task=task)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {len(text.encode())} bytes to {output}")
    else:
        click.echo(text, nl=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def agents(ctx: click.Context, as_json: bool) -> None:
    """List agents with their status (busy, idle, lost, offline)."""
    df = _jm(ctx).agents()
    if not as_json:
        df = df[["name", "status", "host", "pid", "workers", "busy", "heartbeat_age_s", "done", "failed",
                 "cpu_percent", "rss_mb", "uptime_s"]]
    _print_frame(df, as_json)


@cli.command("stop-agent")
@click.argument("name")
@click.pass_context
@handle_errors
def stop_agent(ctx: click.Context, name: str) -> None:
    """Ask an agent to stop gracefully at its next heartbeat."""
    _jm(ctx).stop_agent(name)
    click.echo(f"agent {name}: stop requested")


@cli.command()
@click.argument("job_id", type=int)
@click.option("--timeout", type=float, help="Give up after S seconds (exit 2).")
@click.pass_context
@handle_errors
def wait(ctx: click.Context, job_id: int, timeout: float | None) -> None:
    """Wait for a job to finish; prints its final state."""
    job = _jm(ctx).wait(job_id, timeout=timeout)
    click.echo(job.state)


@cli.command()
@click.option("--agents", "n_agents", type=click.IntRange(0, 16), default=2, show_default=True)
@click.option("--run-for", type=click.FloatRange(1), help="Stop by itself after S seconds (default: Ctrl-C).")
@click.pass_context
@handle_errors
def demo(ctx: click.Context, n_agents: int, run_for: float | None) -> None:
    """The main job: a home with demo jobs in every state and running agents. Ctrl-C stops all."""
    from .demo import run_demo

    run_demo(ctx.obj["home"] or "demo-home", n_agents=n_agents, run_for=run_for)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
