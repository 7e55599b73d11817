"""What every ``jobmanager`` command shares: the ``cli`` group and its options, opening the service,
the click types that validate ids and numbers, one-line errors, and terminal-safe output.

Command modules (main, admin, schedules, backends) import from here only, so the package has no
import circle; :mod:`jobmanager.cli.main` imports them all and runs the group.
"""

from __future__ import annotations

import functools
import json
import os
import re
import warnings
from collections.abc import Callable
from typing import Any

import click
import pandas as pd

from jobmanager import validate
from jobmanager.errors import BadParams, JobManagerError, QueueNotReached
from jobmanager.service import JobManager


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


def service_of(ctx: click.Context) -> JobManager:
    obj = ctx.ensure_object(dict)
    if obj.get("jm") is None:
        obj["jm"] = JobManager(obj["home"], user=obj["user"], imports=tuple(obj.get("imports", ())), interface="cli")
        ctx.call_on_close(obj["jm"].close)
    return obj["jm"]


def print_frame(df: pd.DataFrame, as_json: bool) -> None:
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
    from jobmanager.home import private_umask

    previous = private_umask()  # files this command (an agent, the dashboard) writes in the home: 0600
    ctx.call_on_close(lambda: os.umask(previous))
    ctx.ensure_object(dict)
    ctx.obj.update(home=home, user=user, imports=imports)



#: a line of a JSON Lines file that holds more than blanks (lines end at \n only: U+2028 may stand in a string)
_JSON_LINE = re.compile(r"^[ \t\r]*[^ \t\r\n][^\n]*", re.MULTILINE)


def read_submissions(path: str) -> tuple[list[Any], list[int]]:
    """The jobs of a ``submit-many`` file (``-``: stdin) and the line each starts on: one JSON array, or one
    JSON value a line (JSON Lines: lines end at ``\\n`` only, blank ones skipped). What the parser cannot
    take is checked here (text, size, count, JSON, nesting; :mod:`jobmanager.validate`'s JSON rules), each
    before the next is parsed; each job's arguments are the service's to check (:meth:`JobManager.submit_many`)."""
    limit = validate.MAX_SUBMIT_MANY_BYTES
    with click.open_file(path, "rb") as stream:
        data = stream.read(limit + 1)
    where = "stdin" if path == "-" else path
    if len(data) > limit:
        raise BadParams(f"{where}: more than {limit // (1024 * 1024)} MB; submit the jobs in parts")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadParams(f"{where}: not UTF-8 text (byte {exc.start})") from None
    if text.lstrip(" \t\r\n").startswith("["):
        try:
            items = validate.json_array_items(text, where, validate.MAX_SUBMIT_MANY)
        except json.JSONDecodeError as exc:
            raise BadParams(f"{where}: not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})") from None
        return [value for _, value in items], [line for line, _ in items]
    numbered: list[tuple[int, str]] = []
    number, seen = 1, 0
    for match in _JSON_LINE.finditer(text):  # found in C, so 64 MB of blank lines or of "{}" cost no Python loop
        number += text.count("\n", seen, match.start())
        seen = match.start()
        numbered.append((number, match.group()))
        if len(numbered) > validate.MAX_SUBMIT_MANY:
            raise BadParams(f"{where}: more than {validate.MAX_SUBMIT_MANY} jobs; submit them in parts")
    jobs = []
    for n, line in numbered:
        try:
            jobs.append(validate.json_text(line, f"{where}, line {n}", max_len=limit))
        except json.JSONDecodeError as exc:
            raise BadParams(f"{where}, line {n}: not valid JSON ({exc.msg}: column {exc.colno})") from None
    return jobs, [n for n, _ in numbered]


def parse_params(pairs: tuple[str, ...], params_json: str | None) -> dict[str, Any]:
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


