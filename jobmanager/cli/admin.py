"""The ``jobmanager user``, ``group``, ``audit`` and ``permissions`` commands (they join ``cli``)."""

from __future__ import annotations

import sys

import click

from jobmanager.cli.common import (
    cli,
    echo,
    handle_errors,
    print_frame,
    service_of,
)


# -- users, groups, audit --------------------------------------------------------------------------------
@cli.group()
def user() -> None:
    """Users who sign in to the Job Manager (administrators only)."""


def _read_password(prompt: bool) -> str:
    if prompt and sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return sys.stdin.readline().rstrip("\n")


@user.command("add")
@click.argument("username")
@click.option("--display-name", help="The name shown in the dashboard.")
@click.option("--group", "groups", multiple=True, help="Add the user to this group (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (else one is generated).")
@click.pass_context
@handle_errors
def user_add(ctx: click.Context, username: str, display_name: str | None, groups: tuple[str, ...],
             password_stdin: bool) -> None:
    """Create a user; prints a generated one-time password unless --password-stdin."""
    password = _read_password(False) if password_stdin else None
    generated = service_of(ctx).add_user(username, password, display_name=display_name, groups=groups)
    echo(f"user {username} created" + (f"; one-time password: {generated}" if generated else ""))


@user.command("passwd")
@click.argument("username")
@click.pass_context
@handle_errors
def user_passwd(ctx: click.Context, username: str) -> None:
    """Set a user's password (prompted, or read from standard input)."""
    service_of(ctx).set_password(username, _read_password(True))
    echo(f"password of {username} changed")


@user.command("disable")
@click.argument("username")
@click.pass_context
@handle_errors
def user_disable(ctx: click.Context, username: str) -> None:
    """Disable a user: they can no longer sign in or act."""
    service_of(ctx).disable_user(username)
    echo(f"user {username} disabled")


@user.command("enable")
@click.argument("username")
@click.pass_context
@handle_errors
def user_enable(ctx: click.Context, username: str) -> None:
    """Enable a disabled (or locked) user again."""
    service_of(ctx).enable_user(username)
    echo(f"user {username} enabled")


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def user_list(ctx: click.Context, as_json: bool) -> None:
    """List users and their groups (never their passwords)."""
    print_frame(service_of(ctx).users(), as_json)


@cli.group()
def group() -> None:
    """Groups: their members, Job Manager permissions and cases (administrators only)."""


def _group_command(name: str, method: str, arg: str, doc: str) -> None:
    @group.command(name=name, help=doc)
    @click.argument("group_name")
    @click.argument(arg)
    @click.pass_context
    @handle_errors
    def command(ctx: click.Context, group_name: str, **kw: str) -> None:
        getattr(service_of(ctx), method)(group_name, kw[arg])
        echo(f"group {group_name}: {name} {kw[arg]} done")


_group_command("grant", "grant", "permission", "Grant a permission to a group (see the Permissions List).")
_group_command("revoke", "revoke", "permission", "Revoke a permission from a group.")
_group_command("add-user", "add_to_group", "username", "Add a user to a group.")
_group_command("remove-user", "remove_from_group", "username", "Remove a user from a group.")
_group_command("add-case", "add_case", "case", "Let a group see a case ('*' for every case).")
_group_command("remove-case", "remove_case", "case", "Take a case away from a group.")


@group.command("add")
@click.argument("group_name")
@click.option("--description", default="", help="What the group is for.")
@click.pass_context
@handle_errors
def group_add(ctx: click.Context, group_name: str, description: str) -> None:
    """Create a group (with no permissions yet)."""
    service_of(ctx).add_group(group_name, description)
    echo(f"group {group_name} created")


@group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def group_list(ctx: click.Context, as_json: bool) -> None:
    """List groups with their members, permissions and cases."""
    print_frame(service_of(ctx).groups(), as_json)


@cli.command()
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def audit(ctx: click.Context, limit: int, as_json: bool) -> None:
    """The audit trail: every action, allowed or refused (administrators only)."""
    print_frame(service_of(ctx).audit_log(limit), as_json)


@cli.command()
def permissions() -> None:
    """Print the Permissions List."""
    from jobmanager.auth.permissions import PERMISSIONS

    for name, text in PERMISSIONS.items():
        echo(f"{name:<18} {text}")
