"""Input rules for every public entry point, each written once.

The service's public methods call these before they touch the store, and the
CLI's click types call the same functions, so a rule and its message cannot
differ between the Python API, the CLI and the dashboard. Every refusal is one
:class:`~jobmanager.errors.BadParams` line; a value is quoted shortened, so a
10 MB name cannot flood a terminal or a message bar.

Limits (also in the README):

- names (job names, job types, cases, owners, agents, artifacts): 1 to 200
  characters, no control characters (C0, DEL, C1, NUL), no line or paragraph
  separators, no bidirectional overrides, no lone surrogates;
- search text: up to 200 characters, the same characters as names;
- job parameters: a JSON object nested at most 32 deep, at most 1 MB encoded,
  no NUL or lone surrogate in any string (PostgreSQL and UTF-8 cannot store them);
- retries 0 to 100; priorities a 32-bit signed number;
- job ids and task numbers: 1 to 2**63-1, from an integer (NumPy's too) or a string of ASCII digits
  only (``' 1'`` and ``'१'`` are refused, though ``int()`` would take them);
- timeouts: finite seconds >= 0 (NaN or infinity would wait forever).

:func:`printable` is the output side: what the CLI prints to a terminal goes
through it, so a job named ``"\\x1b]0;pwned\\x07"`` cannot retitle the terminal.
"""

from __future__ import annotations

import json
import math
import numbers
import operator
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jobmanager.errors import BadParams

MAX_NAME = 200
MAX_SEARCH = 200
MAX_PARAMS_DEPTH = 32
MAX_PARAMS_BYTES = 1_000_000
MAX_ID = 2**63 - 1
MAX_RETRIES = 100
INT32 = (-(2**31), 2**31 - 1)
#: the most jobs one ``submit_many`` call stores, the most tasks they may plan together, and the most bytes
#: their parameters may hold together (as JSON; a submit-many file's limit too)
MAX_SUBMIT_MANY = 10_000
MAX_SUBMIT_MANY_TASKS = 200_000
MAX_SUBMIT_MANY_BYTES = 64 * 1024 * 1024

#: characters a name may not hold and a terminal must never receive: every control character (Cc: C0,
#: DEL, C1), line and paragraph separators, bidirectional embeddings/overrides/isolates, lone surrogates
_OTHER_UNSAFE = r"\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE_RE = re.compile(rf"[\x00-\x1f{_OTHER_UNSAFE}]")
#: the same, but keeping tab (\x09) and newline (\x0a): log text, multi-line output
_UNSAFE_KEEP_LINES_RE = re.compile(rf"[\x00-\x08\x0b-\x1f{_OTHER_UNSAFE}]")
#: what can never be stored (PostgreSQL text/jsonb refuse NUL; UTF-8 cannot encode a lone surrogate)
_UNSTORABLE_RE = re.compile(r"[\x00\ud800-\udfff]")


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (always one line: repr escapes control characters)."""
    try:
        text = repr(value) if not isinstance(value, str) or len(value) < 4 * limit else repr(value[: 2 * limit])
    except Exception:  # a hostile __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(text: Any, *, keep_lines: bool = False) -> str:
    """``text`` without control characters, for a terminal (``keep_lines`` keeps newlines and tabs)."""
    text = str(text)
    if keep_lines:
        return _UNSAFE_KEEP_LINES_RE.sub("", text.replace("\r\n", "\n"))
    return _UNSAFE_RE.sub("", text)


def _whole(value: Any) -> int | None:
    """``value`` as a Python int if it is an integer: Python's, or NumPy's (an id taken from a DataFrame); never a
    bool (``True`` is not 1 here). Converted before any comparison (NumPy 1 compares a uint64 with an int as floats)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return operator.index(value)
    return None


def job_id(value: Any, what: str = "job id") -> int:
    """A job id (or task number): an integer, or a string of ASCII digits, in 1..2**63-1."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    whole = _whole(value)
    if whole is not None and 1 <= whole <= MAX_ID:
        return whole
    raise BadParams(f"{what} must be a whole number between 1 and {MAX_ID}, not {shown(value)}")


def job_ids(values: Any, what: str = "job ids", limit: int = 100_000) -> list[int]:
    """A list of job ids (at most ``limit``)."""
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise BadParams(f"{what} must be a list of job ids, not {shown(values)}")
    out = []
    for value in values:
        out.append(job_id(value))
        if len(out) > limit:
            raise BadParams(f"{what}: at most {limit} at once")
    return out


def submissions(values: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """``submit_many``'s jobs: a list of 1 to MAX_SUBMIT_MANY mappings, each naming its ``type`` and holding
    no key but ``keys`` (a typo such as ``prio`` would otherwise be dropped without a word)."""
    if not isinstance(values, list | tuple):
        raise BadParams(f"jobs must be a list of mappings (each one job's submit arguments), not {shown(values)}")
    if not values:
        raise BadParams("jobs: the list is empty")
    if len(values) > MAX_SUBMIT_MANY:
        raise BadParams(f"jobs: {len(values)} in one call, at most {MAX_SUBMIT_MANY}; submit them in parts")
    for i, item in enumerate(values):
        if not isinstance(item, dict):
            problem = f"must be a mapping of submit arguments, not {shown(item)}"
        elif unknown := [k for k in item if k not in keys]:
            problem = f"unknown key {shown(unknown[0])}; the keys are: {', '.join(keys)}"
        elif "type" not in item:
            problem = 'no "type" (the job type to submit)'
        else:
            continue
        refused = BadParams(f"job {i + 1} of {len(values)}: {problem}")
        refused.item = i
        raise refused
    return list(values)


def _check_chars(value: str, what: str) -> str:
    bad = _UNSAFE_RE.search(value)
    if bad:
        raise BadParams(f"{what} may not contain control characters (found {bad.group()!r} at {bad.start()})")
    return value


def name(value: Any, what: str = "name", *, optional: bool = False, max_len: int = MAX_NAME) -> Any:
    """A name: a string of 1..``max_len`` characters without control characters (None if ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BadParams(f"{what} must be text, not {shown(value)}")
    if not value:
        raise BadParams(f"{what} may not be empty")
    if len(value) > max_len:
        raise BadParams(f"{what} is {len(value)} characters long: at most {max_len}")
    return _check_chars(value, what)


_QUEUE_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
#: the longest time limit a task may be given (a week)
MAX_TIME_LIMIT_S = 7 * 86400


def queue_name(value: Any, what: str = "queue") -> str:
    """A queue name: 1..64 of lower-case letters, digits, ``_``, ``.``, ``-`` (it names Huey queues and
    Redis keys, so nothing else)."""
    text = name(value, what, max_len=64)
    if not _QUEUE_RE.fullmatch(text):
        raise BadParams(f"{what} {shown(text)} is not a queue name: use lower-case letters, digits, '_', '.', '-'")
    return text


def time_limit(value: Any, what: str) -> float | None:
    """A per-task time limit in seconds: None for none, else more than 0 and at most a week."""
    if value is None:
        return None
    seconds = number(value, what, 0, MAX_TIME_LIMIT_S)
    if seconds <= 0:
        raise BadParams(f"{what} must be more than 0 seconds, not {shown(value)}")
    return seconds


def path(value: Any, what: str = "path") -> str:
    """A file path given by a user: text or ``os.PathLike``, at most 4096 characters, no control characters
    (a NUL would be a ValueError deep in the OS layer)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return str(name(value, what, max_len=4096))


def search(value: Any, what: str = "search") -> str | None:
    """Search text (matched literally): up to MAX_SEARCH characters; None or "" for no search."""
    if value is None or value == "":
        return None
    return name(value, what, max_len=MAX_SEARCH)


def integer(value: Any, what: str, low: int, high: int, *, optional: bool = False) -> Any:
    """A whole number in ``low..high`` (``True`` is not a number here)."""
    if value is None and optional:
        return None
    whole = _whole(value)
    if whole is not None and low <= whole <= high:
        return whole
    raise BadParams(f"{what} must be a whole number between {low} and {high}, not {shown(value)}")


def number(value: Any, what: str, low: float, high: float) -> float:
    """A finite number in ``low..high`` (int or float; NaN and infinities are refused)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):  # NumPy's numbers too
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number) and low <= number <= high:
            return number
    raise BadParams(f"{what} must be a number between {low:g} and {high:g}, not {shown(value)}")


def timeout(value: Any, what: str = "timeout") -> float | None:
    """Seconds to wait: None for no limit, else a finite number >= 0 (at most ten years)."""
    if value is None:
        return None
    try:
        return number(value, what, 0, 10 * 365 * 86400)
    except BadParams:
        raise BadParams(f"{what} must be a finite number of seconds >= 0, not {shown(value)}") from None


def params(value: Any, what: str = "parameters") -> dict[str, Any]:
    """Job parameters: a dict with text keys, nested at most MAX_PARAMS_DEPTH deep, at most MAX_PARAMS_BYTES as
    JSON, and no NUL or lone surrogate in any key or text (the store could not hold them)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadParams(f"{what} must be a mapping of names to values, not {shown(value)}")
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:  # iterative: a 100,000-deep structure costs no recursion
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_PARAMS_DEPTH:
                raise BadParams(f"{what} are nested more than {MAX_PARAMS_DEPTH} deep")
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise BadParams(f"{what}: every key must be text, not {shown(key)}")
                _storable(key, what)
                stack.append((sub, depth + 1))
        elif isinstance(item, list | tuple):
            if depth > MAX_PARAMS_DEPTH:
                raise BadParams(f"{what} are nested more than {MAX_PARAMS_DEPTH} deep")
            stack.extend((sub, depth + 1) for sub in item)
        elif isinstance(item, str):
            _storable(item, what)
    try:
        size = len(json.dumps(value, default=str))
    except ValueError:  # an int of more than 4300 digits (Python's limit for turning it into text)
        raise BadParams(f"{what} hold a number of more than {sys.get_int_max_str_digits()} digits") from None
    if size > MAX_PARAMS_BYTES:
        raise BadParams(f"{what} are {size} bytes as JSON: at most {MAX_PARAMS_BYTES}")
    return value


def _storable(text: str, what: str) -> None:
    bad = _UNSTORABLE_RE.search(text)
    if bad:
        raise BadParams(f"{what} may not contain {bad.group()!r} (in {shown(text)})")


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's keys, each once: ``{"type": "sleep", "type": "notebook"}`` is refused, not read as its last."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


@contextmanager
def _json_limits(what: str) -> Iterator[None]:
    """What the parser cannot take, as BadParams: nesting too deep for it, a number longer than Python
    reads, a key twice in an object. Text that is not JSON stays ``json.JSONDecodeError``."""
    try:
        yield
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise BadParams(f"{what} is nested more than {MAX_PARAMS_DEPTH} deep") from None
    except _DuplicateKey as exc:
        raise BadParams(f"{what} holds the key {shown(exc.args[0])} twice in one object") from None
    except ValueError:  # int("1" * 5000): "Exceeds the limit (4300 digits) for integer string conversion"
        raise BadParams(f"{what} holds a number of more than {sys.get_int_max_str_digits()} digits") from None


def json_text(text: str, what: str, *, max_len: int = MAX_PARAMS_BYTES) -> Any:
    """Parse JSON a user typed or sent (``--params-json``, ``-p k=v``, a line of a submit-many file): at most
    ``max_len`` long; what the parser cannot take is BadParams (:func:`_json_limits`), and the service's
    :func:`params` then applies the depth limit. Raises ``json.JSONDecodeError`` for text that is not JSON."""
    if len(text) > max_len:
        raise BadParams(f"{what} is {len(text)} characters long: at most {max_len}")
    with _json_limits(what):
        return _DECODER.decode(text)


def json_array_items(text: str, what: str, limit: int) -> list[tuple[int, Any]]:
    """The items of the JSON array ``text``, each with the line it starts on, parsed one at a time: an array
    of more than ``limit`` items is refused at item ``limit + 1``, not once all of it is in memory. The
    rules of :func:`json_text`."""

    def skip(pos: int) -> int:
        return _JSON_SPACE.match(text, pos).end()  # type: ignore[union-attr]

    items: list[tuple[int, Any]] = []
    pos = skip(0)
    if not text.startswith("[", pos):
        raise json.JSONDecodeError("Expecting '['", text, pos)
    pos = skip(pos + 1)
    with _json_limits(what):
        while not text.startswith("]", pos):
            if items:
                if not text.startswith(",", pos):
                    raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
                pos = skip(pos + 1)
            if len(items) == limit:
                raise BadParams(f"{what}: more than {limit} jobs; submit them in parts")
            value, end = _DECODER.raw_decode(text, pos)
            items.append((text.count("\n", 0, pos) + 1, value))
            pos = skip(end)
    if skip(pos + 1) != len(text):
        raise json.JSONDecodeError("Extra data", text, skip(pos + 1))
    return items
