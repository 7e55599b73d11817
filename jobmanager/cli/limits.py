"""The ``jobmanager limits ...`` and ``jobmanager queues`` commands (they join the ``cli`` group of
:mod:`jobmanager.cli.main`)."""

from __future__ import annotations

import click

from jobmanager.cli.common import Whole, cli, echo, handle_errors, print_frame, service_of
from jobmanager.service import MAX_LIMIT


@cli.group()
def limits() -> None:
    """Concurrency limits: at most N running tasks of a type, of a queue, or per case, across all agents."""


@limits.command("set")
@click.argument("name")
@click.option("--type", "type_", metavar="TYPE", help="Count only jobs of this type (default: any type).")
@click.option("--queue", help="Count only jobs in this queue (default: any queue).")
@click.option("--per-case", is_flag=True, help="Count separately in each case (jobs without a case together).")
@click.option("--max", "max_running", type=Whole(0, MAX_LIMIT), required=True,
              help="At most this many running at once (0 holds every matching task).")
@click.pass_context
@handle_errors
def limits_set(ctx: click.Context, name: str, type_: str | None, queue: str | None, per_case: bool,
               max_running: int) -> None:
    """Create or change limit NAME; tasks over it wait queued and start, in priority order, as slots free."""
    service_of(ctx).set_limit(name, type=type_, queue=queue, per_case=per_case, max_running=max_running)
    echo(f"limit {name} set")


@limits.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def limits_list(ctx: click.Context, as_json: bool) -> None:
    """List the limits with the tasks each matches running and waiting now."""
    df = service_of(ctx).limits()
    if not as_json:
        df = df[["name", "type", "queue", "per_case", "max_running", "running", "waiting"]]
    print_frame(df, as_json)


@limits.command("delete")
@click.argument("name")
@click.pass_context
@handle_errors
def limits_delete(ctx: click.Context, name: str) -> None:
    """Delete limit NAME; the tasks it held back start."""
    service_of(ctx).delete_limit(name)
    echo(f"limit {name} deleted")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def queues(ctx: click.Context, as_json: bool) -> None:
    """List queues: depth (runnable tasks), running and waiting tasks, the agents serving them, their limits."""
    print_frame(service_of(ctx).queues(), as_json)
