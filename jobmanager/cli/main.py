"""The ``jobmanager`` command: short click functions over the service.

Each command opens the home, calls one service method and prints the result.
Every error the user can cause becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from jobmanager import validate
from jobmanager.cli.common import (
    JOB_ID,
    SMALL_INT,
    TASK,
    Seconds,
    Whole,
    cli,
    echo,
    handle_errors,
    parse_params,
    print_frame,
    read_submissions,
    service_of,
)
from jobmanager.errors import BadParams, JobManagerError, NotFound
from jobmanager.models import Job
from jobmanager.notify import rules as notify_rules
from jobmanager.service import JobManager


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
        from jobmanager.backends import set_backends

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
@click.option("--metrics-port", type=Whole(1, 65535), metavar="PORT",
              help="Also serve Prometheus metrics (the home's, as `jobmanager metrics`, plus this agent "
                   "process's own) on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="IP address for --metrics-port; the metrics name job types, queues and agents.")
@click.option("--queues", default="default", show_default=True, metavar="Q1,Q2",
              help="The queues to take tasks from, comma-separated.")
@click.pass_context
@handle_errors
def agent(ctx: click.Context, name: str | None, workers: int, heartbeat: float | None,
          agent_imports: tuple[str, ...], shutdown_timeout: float, metrics_port: int | None = None,
          metrics_host: str = "127.0.0.1", queues: str = "default") -> None:
    """Run an agent: a Huey consumer that runs tasks and sends heartbeats."""
    from jobmanager import metrics
    from jobmanager.engine.agent import Agent
    from jobmanager.home import Home

    served = tuple(validate.queue_name(q.strip(), "--queues") for q in queues.split(","))
    registry = None
    if metrics_port is not None:  # the port first: an agent that cannot serve its metrics never registers
        registry = metrics.new_registry()
        metrics.serve(registry, metrics_host, metrics_port)
    home = Home.open(ctx.obj["home"])
    a = Agent(home, name=name, workers=workers, interval=heartbeat,
              imports=tuple(ctx.obj["imports"]) + agent_imports, shutdown_timeout=shutdown_timeout,
              queues=served)
    a.prepare()
    if registry is not None:
        metrics.add_store(registry, a.store)
    a.run()


@cli.command()
@click.argument("type")
@click.option("--param", "-p", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A parameter; VALUE is read as JSON when it parses (3, true, [1,2]), else as text.")
@click.option("--params-json", help="All parameters as one JSON object.")
@click.option("--name", help="A name for the job.")
@click.option("--priority", type=SMALL_INT, default=0, show_default=True, help="Higher runs first.")
@click.option("--case", help="The case the job belongs to (access control).")
@click.option("--retries", type=Whole(0, validate.MAX_RETRIES), help="Automatic retries of a failed task.")
@click.option("--queue", help="The queue to run on (default: the job type's).")
@click.option("--soft-limit", type=Seconds(0, validate.MAX_TIME_LIMIT_S), metavar="SECONDS",
              help="Ask a task to stop after this long (default: the job type's).")
@click.option("--hard-limit", type=Seconds(0, validate.MAX_TIME_LIMIT_S), metavar="SECONDS",
              help="End a task after this long, whatever it does (default: the job type's).")
@click.option("--notify", "notify", multiple=True, metavar="RULE",
              help="EVENTS:TARGET: notify TARGET (mailto:ADDRESS or an http(s) URL) on EVENTS (comma-separated: "
                   "failed, completed_with_errors, completed or succeeded, cancelled), e.g. "
                   "failed,succeeded:mailto:ops@example.org (repeatable; added to the job type's rules).")
@click.pass_context
@handle_errors
def submit(ctx: click.Context, type: str, pairs: tuple[str, ...], params_json: str | None, name: str | None,
           priority: int, case: str | None, retries: int | None, queue: str | None, soft_limit: float | None,
           hard_limit: float | None, notify: tuple[str, ...] = ()) -> None:
    """Submit a job of TYPE; prints its id once it is safely stored.

    If the queue cannot be written after that, the job is still stored: a warning on stderr says so, the
    exit status is 0, and an agent's sweep sends it (submitting again would make a duplicate)."""
    params = parse_params(pairs, params_json)
    rules = [notify_rules.parse(text, "--notify") for text in notify] or None
    click.echo(service_of(ctx).submit(type, params, name=name, priority=priority, case=case, retries=retries,
                                      queue=queue, soft_limit=soft_limit, hard_limit=hard_limit, notify=rules))


@cli.command(name="submit-many")
@click.argument("file", type=click.Path(allow_dash=True))
@click.pass_context
@handle_errors
def submit_many(ctx: click.Context, file: str) -> None:
    """Submit every job of FILE ('-': stdin) at once; prints their ids, one a line, once all are stored.

    FILE holds one JSON object a line (JSON Lines), or one JSON array of them; each holds submit's
    arguments: {"type": "sleep", "params": {"tasks": 3}, "name": "night run", "priority": 5} (also case,
    retries, queue, soft_limit, hard_limit, notify). Every job is checked before any is stored: one refused
    refuses the file, the message names it, and nothing is stored. The jobs are stored in one transaction
    and queued in one write: many small jobs go in far faster than one submit each."""
    jobs, lines = read_submissions(file)
    try:
        ids = service_of(ctx).submit_many(jobs)
    except JobManagerError as exc:
        if exc.item is None:
            raise
        where = "stdin" if file == "-" else file  # the refused job named by its line in the file
        raise type(exc)(f"{where}, line {lines[exc.item]}: {exc}") from None
    for job_id in ids:
        click.echo(job_id)


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
    df = service_of(ctx).jobs(tab=tab, state=state, type=type_, limit=limit)
    if not as_json:
        df = df[["id", "name", "type", "state", "progress", "owner", "tasks_total", "tasks_failed", "created_at"]]
        df = df.assign(progress=(df["progress"] * 100).round().astype(int).astype(str) + "%",
                       created_at=df["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S"))
    print_frame(df, as_json)


@cli.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def show(ctx: click.Context, job_id: int, as_json: bool) -> None:
    """Show one job with its tasks."""
    job = service_of(ctx).job(job_id)
    if as_json:
        details = job.to_dict()
        details["notifications"] = json.loads(service_of(ctx).notifications(job_id).to_json(
            orient="records", date_format="iso"))
        click.echo(json.dumps(details, indent=2, default=str))
        return
    echo(f"job {job.id}: {job.name}  [{job.type}]  {job.state}  {job.progress:.0%}")
    echo(f"owner {job.owner}  case {job.case or '-'}  priority {job.priority}  "
         f"tasks {job.tasks_succeeded} ok / {job.tasks_failed} failed / {job.tasks_total}")
    if job.error:
        echo(f"error: {job.error}")
    for t in job.tasks:
        err = f"  {t.error}" if t.error else ""
        lost = f"  losses {t.losses}/{job.max_losses}" if t.losses else ""
        echo(f"  {t.seq:>4}  {t.state:<10} {t.name}  attempts {t.attempts}/{t.max_attempts}{lost}"
             f"  {t.agent or '-'}{err}")
    _show_notifications(service_of(ctx), job)


def _show_notifications(jm: JobManager, job: Job) -> None:
    """``jobmanager show``: the job's notification rules and each delivery."""
    for rule in notify_rules.describe(job.notify):
        echo(f"notify: {rule}")
    df = jm.notifications(job.id)
    if not df.empty:
        echo("notifications:")
    for n in df.itertuples():
        when = f"  {n.delivered_at:%Y-%m-%d %H:%M:%S}" if n.state == "sent" else ""
        err = f"  {n.last_error}" if n.last_error and n.state != "sent" else ""
        echo(f"  {n.trigger:<21} {n.target}  {n.state}  attempts {n.attempts}{when}{err}")


def _action(name: str, doc: str) -> None:
    @cli.command(name=name, help=doc)
    @click.argument("job_id", type=JOB_ID)
    @click.pass_context
    @handle_errors
    def command(ctx: click.Context, job_id: int) -> None:
        getattr(service_of(ctx), name)(job_id)
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
    service_of(ctx).retry(job_id, task=task)
    click.echo(f"job {job_id}: retry queued")


@cli.command()
@click.argument("job_id", type=JOB_ID)
@click.argument("priority", type=SMALL_INT)
@click.pass_context
@handle_errors
def priority(ctx: click.Context, job_id: int, priority: int) -> None:
    """Set the priority of a job in progress (higher runs first)."""
    service_of(ctx).set_priority(job_id, priority)
    click.echo(f"job {job_id}: priority {priority}")


@cli.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--task", type=TASK, help="Only this task's log.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to FILE.")
@click.pass_context
@handle_errors
def logs(ctx: click.Context, job_id: int, task: int | None, output: str | None) -> None:
    """Print (or save) a job's log: all task logs in order."""
    text = service_of(ctx).log(job_id, task=task)
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
    df = service_of(ctx).agents()
    if not as_json:
        df = df[["name", "status", "host", "pid", "workers", "busy", "heartbeat_age_s", "done", "failed",
                 "cpu_percent", "rss_mb", "uptime_s"]]
    print_frame(df, as_json)


@cli.command("stop-agent")
@click.argument("name")
@click.pass_context
@handle_errors
def stop_agent(ctx: click.Context, name: str) -> None:
    """Ask an agent to stop gracefully at its next heartbeat."""
    service_of(ctx).stop_agent(name)
    echo(f"agent {name}: stop requested")


@cli.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--timeout", type=Seconds(), help="Give up after S seconds (exit 2).")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@click.pass_context
@handle_errors
def wait(ctx: click.Context, job_id: int, timeout: float | None, quiet: bool) -> None:
    """Wait for a job to finish; prints its final state.

    Meanwhile progress goes to stderr: a live bar (tasks done of total, failures, ETA) on a terminal,
    a plain line when the counts change when stderr is piped; stdout carries only the final state."""
    from jobmanager.cli.progress import Progress

    progress = None if quiet else Progress()
    try:
        job = service_of(ctx).wait(job_id, timeout=timeout, on_poll=progress)
    finally:
        if progress is not None:
            progress.done()
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
    from jobmanager.demo import run_demo

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
    jm = service_of(ctx)
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
            print_frame(df[["name", "media_type", "size"]], False)
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
    from jobmanager.dashboard.server import serve

    click.echo(f"Job Manager dashboard: http://{host}:{port}/  (Ctrl-C stops it)")
    serve(ctx.obj["home"], host=host, port=port, notebook=notebook, open_browser=not no_browser,
          cull_after=cull_after, cull_interval=max(1, min(10, int(cull_after // 4))))


@cli.command()
@click.option("--port", type=Whole(1, 65535), required=True, help="TCP port to serve /metrics on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="IP address to listen on. The metrics name job types, queues and agents: keep loopback, or "
                   "bind an address only your Prometheus can reach.")
@click.pass_context
@handle_errors
def metrics(ctx: click.Context, port: int, host: str) -> None:
    """Serve Prometheus metrics at http://HOST:PORT/metrics until stopped (Ctrl-C or SIGTERM).

    Task counters count from the moment this starts; queue depth, waits, running tasks and agents are
    read at each scrape. Needs the view_agents permission. One endpoint per home is enough."""
    import signal
    import threading

    from jobmanager.metrics import check_address, serve

    check_address(host, port)
    registry, collector = service_of(ctx).metrics()
    server = serve(registry, host, port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    shown = f"[{host}]" if ":" in host else host
    echo(f"Job Manager metrics: http://{shown}:{port}/metrics  (Ctrl-C stops it)")
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    server.shutdown()
    collector.close()


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8888, show_default=True)
@click.option("--notebooks", "folder", type=click.Path(file_okay=False, exists=True),
              help="The folder JupyterLab opens (default: the checkout's notebooks/).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser.")
@click.pass_context
@handle_errors
def lab(ctx: click.Context, port: int, folder: str | None, no_browser: bool) -> None:
    """Open JupyterLab on the notebooks, with this home (and --user) set for every notebook."""
    from jobmanager.dashboard.lab import serve as serve_lab

    serve_lab(ctx.obj["home"], user=ctx.obj.get("user"), folder=folder, port=port, open_browser=not no_browser)


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
    out = service_of(ctx).export(path, format_, tab=tab, state=state, type=type_, case=case, owner=owner, agent=agent,
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
    counts = service_of(ctx).demo_data(jobs=n_jobs, days=days, seed=seed)
    click.echo(", ".join(f"{v} {k}" for k, v in counts.items()))


@cli.command()
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.pass_context
@handle_errors
def sql(ctx: click.Context, query: str, as_json: bool) -> None:
    """Run one read-only SQL query over the history (views jobs, tasks, events, agents, artifacts)."""
    print_frame(service_of(ctx).sql(query), as_json)




# the other command modules join the group when imported
import jobmanager.cli.admin  # noqa: E402,F401
import jobmanager.cli.backends  # noqa: E402,F401
import jobmanager.cli.limits  # noqa: E402,F401
import jobmanager.cli.schedules  # noqa: E402,F401


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
