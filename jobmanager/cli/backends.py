"""``jobmanager doctor`` and ``jobmanager migrate`` (registered on the CLI group by cli.py)."""

from __future__ import annotations

import click

from jobmanager.backends import doctor as run_doctor
from jobmanager.backends import migrate as run_migrate
from jobmanager.cli.common import (
    CLIError,
    cli,
    handle_errors,
)
from jobmanager.home import Home


@cli.command()
@click.pass_context
@handle_errors
def doctor(ctx: click.Context) -> None:
    """Check that the store and the queue are reachable and the store's schema is current (exit 2 if not)."""
    home = Home.open(ctx.obj["home"])
    checks = run_doctor(home)
    for check in checks:
        click.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.what:<5}  {check.message}")
    bad = [c for c in checks if not c.ok]
    if bad:
        raise CLIError(f"{len(bad)} problem{'s' if len(bad) > 1 else ''} found")


@cli.command()
@click.pass_context
@handle_errors
def migrate(ctx: click.Context) -> None:
    """Move the store's schema forward to this jobmanager's version."""
    home = Home.open(ctx.obj["home"])
    old, new = run_migrate(home)
    click.echo(f"store schema version {new}" + (" (already current)" if old == new else f" (migrated from {old})"))
