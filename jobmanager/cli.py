"""The ``jobmanager`` command: short click functions over the service.

Each command opens the home, calls one service method and prints the result.
Every error the user can cause becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pandas as pd

from . import validate
from .errors import BadParams, JobManagerError, NotFound, QueueNotReached
from .service import JobManager


class CLIError(click.ClickException):
    exit_code = 2


def echo(text: Any = "", *, lines: bool = False, err: bool = False) -> None:
    """Print to the terminal without control characters: every CLI output of names, errors, tables and logs
    goes through here, so a job named "\\x1b]0;pwned\\x07" cannot retitle the terminal (``lines`` keeps
    newlines and tabs)."""
    click.echo(validate.printable(text, keep_lines=lines), err=err)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", QueueNotReached)
                result = fn(*args, **kwargs)
            for warning in caught:  # stored, but the queue was not reached: not an error (exit 0)
                if issubclass(warning.category, QueueNotReached):
                    echo(f"warning: {warning.message}", err=True)
                else:
                    warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
            return result
        except JobManagerError as exc:
            raise CLIError(validate.printable(exc)) from None
        except OSError as exc:  # e.g. -o into a folder that does not exist
            where = f"{exc.filename}: " if exc.filename else ""
            raise CLIError(validate.printable(f"{where}{exc.strerror or exc}")) from None

    return wrapper


class Whole(click.ParamType):
    """A whole number typed in ASCII digits (``int()`` would also take ``' 1'`` and ``'१'``), checked by
    :func:`jobmanager.validate.integer` (or :func:`~jobmanager.validate.job_id` for ids)."""

    name = "integer"

    def __init__(self, low: int, high: int, what: str | None = None) -> None:
        self.low, self.high, self.what = low, high, what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, str):
            value = int(value) if re.fullmatch(r"[+-]?[0-9]{1,20}", value) else value
        try:
            if self.what is not None:
                return validate.job_id(value, self.what)
            return int(validate.integer(value, "the value", self.low, self.high))
        except BadParams as exc:
            self.fail(validate.printable(exc), param, ctx)


class Seconds(click.ParamType):
    """A finite number in a range (NaN and infinities refused), checked by :func:`jobmanager.validate.number`."""

    name = "seconds"

    def __init__(self, low: float = 0, high: float = 10 * 365 * 86400) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return validate.number(float(value) if isinstance(value, str) else value, "the value", self.low,
                                   self.high)
        except (BadParams, ValueError):
            self.fail(f"{validate.shown(value)} is not a finite number between {self.low:g} and {self.high:g}",
                      param, ctx)


#: ids and numbers as the store keeps them (a bigger number is bad input, not an OverflowError)
JOB_ID = Whole(1, validate.MAX_ID, "job id")
TASK = Whole(1, validate.MAX_ID, "task number")
SMALL_INT = Whole(*validate.INT32)


def _jm(ctx: click.Context) -> JobManager:
    obj = ctx.ensure_object(dict)
    if obj.get("jm") is None:
        obj["jm"] = JobManager(obj["home"], user=obj["user"], imports=tuple(obj.get("imports", ())), interface="cli")
        ctx.call_on_close(obj["jm"].close)
    return obj["jm"]


def _print_frame(df: pd.DataFrame, as_json: bool) -> None:
    if as_json:  # JSON escapes control characters itself
        click.echo(df.to_json(orient="records", date_format="iso", indent=2))
    elif df.empty:
        echo("(none)")
    else:
        df = df.map(lambda v: validate.printable(v) if isinstance(v, str) else v)
        with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
            echo(df.to_string(index=False), lines=True)


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
    from .home import private_umask

    previous = private_umask()  # files this command (an agent, the dashboard) writes in the home: 0600
    ctx.call_on_close(lambda: os.umask(previous))
    ctx.ensure_object(dict)
    ctx.obj.update(home=home, user=user, imports=imports)


@cli.command()
@click.option("--admin", default="admin", show_default=True, help="Name of the first administrator.")
@click.option("--password-stdin", is_flag=True,
              help="Read the administrator's password from standard input (else $JOBMANAGER_ADMIN_PASSWORD, "
                   "else a one-time password is printed).")
@click.option("--store", "store_url", metavar="URL",
              help="Job store: 'sqlite' (default) or postgresql://user@host/db; written to jobmanager.toml.")
@click.option("--queue", "queue_url", metavar="URL",
              help="Queue: 'sqlite' (default) or redis://host:port/db; written to jobmanager.toml.")
@click.pass_context
@handle_errors
def init(ctx: click.Context, admin: str, password_stdin: bool, store_url: str | None = None,
         queue_url: str | None = None) -> None:
    """Create a home folder (store, queue, logs) and its first administrator, or check an existing one."""
    if store_url or queue_url:
        from .backends import set_backends

        set_backends(ctx.obj["home"], store=store_url, queue=queue_url)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    jm = JobManager.init(ctx.obj["home"], admin=admin, admin_password=password)
    click.echo(f"Job Manager home ready at {jm.home.path}")
    if jm.initial_password:
        click.echo(f"administrator {admin!r} created; one-time password: {jm.initial_password}")
        click.echo(f"change it now: jobmanager --home {jm.home.path} --user {admin} user passwd {admin}")
    jm.close()


@cli.command()
@click.option("--name", help="Agent name (default: host-pid); must be unique among running agents.")
@click.option("--workers", type=click.IntRange(1, 256), default=2, show_default=True, help="Worker threads.")
@click.option("--heartbeat", type=Seconds(0.1, 3600), help="Seconds between heartbeats.")
@click.option("--import", "agent_imports", multiple=True, metavar="MODULE", help="Module with job types.")
@click.option("--shutdown-timeout", type=Seconds(0, 86400), default=10.0, show_default=True,
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
    """Parameters from --params-json and -p KEY=VALUE; their limits (depth, size) are the service's
    (:func:`jobmanager.validate.params`), here only what the JSON parser itself cannot take."""
    params: dict[str, Any] = {}
    if params_json:
        try:
            params = validate.json_text(params_json, "--params-json")
        except json.JSONDecodeError as exc:
            raise BadParams(f"--params-json is not valid JSON: {exc}") from None
        if not isinstance(params, dict):
            raise BadParams("--params-json must be a JSON object")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadParams(f"--param {validate.shown(pair)}: expected KEY=VALUE")
        try:
            params[key] = validate.json_text(value, f"--param {validate.shown(key)}")
        except json.JSONDecodeError:
            params[key] = value
    return params


@cli.command()
@click.argument("type")
@click.option("--param", "-p", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A parameter; VALUE is read as JSON when it parses (3, true, [1,2]), else as text.")
@click.option("--params-json", help="All parameters as one JSON object.")
@click.option("--name", help="A name for the job.")
@click.option("--priority", type=SMALL_INT, default=0, show_default=True, help="Higher runs first.")
@click.option("--case", help="The case the job belongs to (access control).")
@click.option("--retries", type=Whole(0, validate.MAX_RETRIES), help="Automatic retries of a failed task.")
@click.pass_context
@handle_errors
def submit(ctx: click.Context, type: str, pairs: tuple[str, ...], params_json: str | None, name: str | None,
           priority: int, case: str | None, retries: int | None) -> None:
    """Submit a job of TYPE; prints its id once it is safely stored.

    If the queue cannot be written after that, the job is still stored: a warning on stderr says so, the
    exit status is 0, and an agent's sweep sends it (submitting again would make a duplicate)."""
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
@click.argument("job_id", type=JOB_ID)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def show(ctx: click.Context, job_id: int, as_json: bool) -> None:
    """Show one job with its tasks."""
    job = _jm(ctx).job(job_id)
    if as_json:
        click.echo(job.to_json())
        return
    echo(f"job {job.id}: {job.name}  [{job.type}]  {job.state}  {job.progress:.0%}")
    echo(f"owner {job.owner}  case {job.case or '-'}  priority {job.priority}  "
         f"tasks {job.tasks_succeeded} ok / {job.tasks_failed} failed / {job.tasks_total}")
    if job.error:
        echo(f"error: {job.error}")
    for t in job.tasks:
        err = f"  {t.error}" if t.error else ""
        echo(f"  {t.seq:>4}  {t.state:<10} {t.name}  attempts {t.attempts}/{t.max_attempts}  {t.agent or '-'}{err}")


def _action(name: str, doc: str) -> None:
    @cli.command(name=name, help=doc)
    @click.argument("job_id", type=JOB_ID)
    @click.pass_context
    @handle_errors
    def command(ctx: click.Context, job_id: int) -> None:
        getattr(_jm(ctx), name)(job_id)
        click.echo(f"job {job_id}: {name} done")


_action("pause", "Pause a job: no new task starts; running ones finish.")
_action("resume", "Resume a paused job.")
_action("cancel", "Cancel a job: queued tasks never run, running ones are asked to stop.")


@cli.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--task", type=TASK, help="Retry only this task (its number in the job).")
@click.pass_context
@handle_errors
def retry(ctx: click.Context, job_id: int, task: int | None) -> None:
    """Re-queue the failed tasks of a finished job (or one task)."""
    _jm(ctx).retry(job_id, task=task)
    click.echo(f"job {job_id}: retry queued")


@cli.command()
@click.argument("job_id", type=JOB_ID)
@click.argument("priority", type=SMALL_INT)
@click.pass_context
@handle_errors
def priority(ctx: click.Context, job_id: int, priority: int) -> None:
    """Set the priority of a job in progress (higher runs first)."""
    _jm(ctx).set_priority(job_id, priority)
    click.echo(f"job {job_id}: priority {priority}")


@cli.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--task", type=TASK, help="Only this task's log.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to FILE.")
@click.pass_context
@handle_errors
def logs(ctx: click.Context, job_id: int, task: int | None, output: str | None) -> None:
    """Print (or save) a job's log: all task logs in order."""
    text = _jm(ctx).log(job_id, task=task)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        echo(f"wrote {len(text.encode())} bytes to {output}")
    else:
        click.echo(validate.printable(text, keep_lines=True), nl=False)


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
    echo(f"agent {name}: stop requested")


@cli.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--timeout", type=Seconds(), help="Give up after S seconds (exit 2).")
@click.pass_context
@handle_errors
def wait(ctx: click.Context, job_id: int, timeout: float | None) -> None:
    """Wait for a job to finish; prints its final state."""
    job = _jm(ctx).wait(job_id, timeout=timeout)
    click.echo(job.state)


@cli.command()
@click.option("--agents", "n_agents", type=click.IntRange(0, 16), default=2, show_default=True)
@click.option("--run-for", type=Seconds(1), help="Stop by itself after S seconds (default: Ctrl-C).")
@click.option("--port", type=click.IntRange(1, 65535), default=8866, show_default=True,
              help="Port of the dashboard (on 127.0.0.1).")
@click.option("--no-dashboard", is_flag=True, help="Only agents and jobs, no dashboard.")
@click.pass_context
@handle_errors
def demo(ctx: click.Context, n_agents: int, run_for: float | None, port: int, no_dashboard: bool) -> None:
    """The main job: demo jobs in every state, agents and the dashboard on demo data. Ctrl-C stops all."""
    from .demo import run_demo

    run_demo(ctx.obj["home"] or "demo-home", n_agents=n_agents, run_for=run_for,
             dashboard_port=None if no_dashboard else port)


@cli.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--artifact", "-a", "name", metavar="NAME", help="The output to download (default: the main one).")
@click.option("--log", "want_log", is_flag=True, help="Download the job's log instead (every task, then finish).")
@click.option("--task", type=TASK, help="With --log: only this task's log.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE ('-': stdout; default ./NAME).")
@click.pass_context
@handle_errors
def download(ctx: click.Context, job_id: int, name: str | None, want_log: bool, task: int | None,
             output: str | None) -> None:
    """Download a job's output file (e.g. merged.pdf) or its log."""
    jm = _jm(ctx)
    if want_log and name:
        raise BadParams("choose --artifact or --log, not both")
    if task is not None and not want_log:
        raise BadParams("--task goes with --log")
    if want_log:
        data = jm.log(job_id, task=task).encode("utf-8")
        default = f"job-{job_id}.log" if task is None else f"job-{job_id}-task-{task}.log"
    else:
        if name is None:
            name = jm.main_artifact(job_id)
        if name is None:
            df = jm.artifacts(job_id)
            if df.empty:
                raise NotFound(f"job {job_id} has no outputs (yet)")
            _print_frame(df[["name", "media_type", "size"]], False)
            raise BadParams(f"job {job_id} has {len(df)} outputs; choose one with --artifact NAME")
        data = jm.open_artifact(job_id, name).read_bytes()
        default = name
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    dest = Path(output or default)
    dest.write_bytes(data)
    echo(f"wrote {len(data)} bytes to {dest}")


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8866, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback belongs behind a TLS reverse proxy (see README).")
@click.option("--notebook", type=click.Path(dir_okay=False, exists=True),
              help="The notebook to serve (default: notebooks/dashboard.ipynb).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser.")
@click.option("--cull-after", type=Seconds(1), default=60.0, show_default=True,
              help="Stop a page's kernel when no browser has been connected to it for S seconds.")
@click.pass_context
@handle_errors
def dashboard(ctx: click.Context, port: int, host: str, notebook: str | None, no_browser: bool,
              cull_after: float) -> None:
    """Serve the dashboard with Voila (each page view gets its own kernel)."""
    from .dashboard_server import serve

    click.echo(f"Job Manager dashboard: http://{host}:{port}/  (Ctrl-C stops it)")
    serve(ctx.obj["home"], host=host, port=port, notebook=notebook, open_browser=not no_browser,
          cull_after=cull_after, cull_interval=max(1, min(10, int(cull_after // 4))))


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
@click.option("--format", "format_", type=click.Choice(["csv", "parquet", "excel"]), default=None,
              help="File format (default: from the extension, else csv).")
@click.option("--tab", type=click.Choice(["in-progress", "completed"]), help="Only this tab's jobs.")
@click.option("--state", help="Only jobs in this state.")
@click.option("--type", "type_", help="Only jobs of this type.")
@click.option("--case", help="Only jobs of this case.")
@click.option("--owner", help="Only jobs of this owner.")
@click.option("--agent", help="Only jobs that had a task on this agent.")
@click.option("--since", help="Created at or after this time (ISO, UTC).")
@click.option("--until", help="Created before this time (ISO, UTC).")
@click.option("--search", help="Text in the job name or error.")
@click.pass_context
@handle_errors
def export(ctx: click.Context, path: str, format_: str | None, tab: str | None, state: str | None,
           type_: str | None, case: str | None, owner: str | None, agent: str | None, since: str | None,
           until: str | None, search: str | None) -> None:
    """Export the jobs the grid shows (with its columns) to PATH as csv, parquet or excel."""
    if format_ is None:
        suffix = Path(path).suffix.lower()
        format_ = {".parquet": "parquet", ".xlsx": "excel", ".xls": "excel"}.get(suffix, "csv")
    out = _jm(ctx).export(path, format_, tab=tab, state=state, type=type_, case=case, owner=owner, agent=agent,
                          since=since, until=until, search=search)
    echo(f"wrote {out}")


@cli.command("demo-data")
@click.option("--jobs", "n_jobs", type=click.IntRange(1, 10_000_000), default=1000, show_default=True)
@click.option("--days", type=Seconds(0.01, 3650), default=30.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
@handle_errors
def demo_data(ctx: click.Context, n_jobs: int, days: float, seed: int) -> None:
    """Fill the home with a synthetic job history (for demos, analysis and benchmarks)."""
    counts = _jm(ctx).demo_data(jobs=n_jobs, days=days, seed=seed)
    click.echo(", ".join(f"{v} {k}" for k, v in counts.items()))


@cli.command()
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.pass_context
@handle_errors
def sql(ctx: click.Context, query: str, as_json: bool) -> None:
    """Run one read-only SQL query over the history (views jobs, tasks, events, agents, artifacts)."""
    _print_frame(_jm(ctx).sql(query), as_json)


from . import cli_admin, cli_backends, cli_schedules  # noqa: E402,F401  (their commands join `cli`)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
