"""Free SQL in a sandbox: a DuckDB connection that holds only the rows the user may see.

A user's query never runs where the store is attached. :func:`plan` parses it with DuckDB's own
parser (one statement, of type SELECT; ``WITH ... SELECT`` is one) and walks the syntax tree
(``json_serialize_sql``) for what it reads: every table must be one of the history's views (or a
CTE of the query), every table function one of :data:`TABLE_FUNCTIONS`. The caller then selects
the scoped rows of only those views, and of them only the columns the query names, as Arrow
tables; :func:`run` registers them (zero-copy) on a new connection to an empty in-memory DuckDB
with nothing attached, no extension loaded or loadable, no file or network access, Python
replacement scans off and its configuration locked, runs the query there and closes it (what is
registered on one connection is invisible to every other).

So the refusal of ``sqlite_query``, ``store.users``, ``read_csv`` or ``ATTACH`` is not a deny-list:
there is nothing in the sandbox to reach. The checks here only give a clear one-line reason.

Column pruning is an over-approximation and safe: a view keeps every column whose name appears
anywhere in the query, and all its columns whenever the query's meaning depends on the set of
columns (``*``, ``COLUMNS(...)``, NATURAL joins, PIVOT/UNPIVOT, a table used as a row value).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from jobmanager.errors import BadParams

#: table functions that read nothing but their arguments
TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
#: scalar functions refused although the sandbox holds nothing to reveal: they describe the process
REFUSED_FUNCTIONS = frozenset({"getenv", "current_setting"})
REFUSED_PREFIXES = ("duckdb_", "pragma_")
#: the FROM-clause shapes a SELECT over the views may use
TABLE_REFS = frozenset({"BASE_TABLE", "JOIN", "SUBQUERY", "TABLE_FUNCTION", "EMPTY", "EXPRESSION_LIST",
                        "PIVOT"})
#: the keys under which a serialized query holds table references
REF_KEYS = frozenset({"from_table", "left", "right", "source"})
#: DuckDB settings of every sandbox (``lock_configuration`` last: nothing can change them after)
SANDBOX_CONFIG: dict[str, Any] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,  # no Python variable is ever read as a table
    "enable_external_access": False,      # no files, no network, no LOAD
    "lock_configuration": True,           # no SET, no PRAGMA that changes a setting
}


def _duckdb() -> Any:
    import duckdb

    return duckdb


_database: Any = None
_database_lock = threading.Lock()


def connect() -> Any:
    """A new connection to the sandbox: an empty, locked-down in-memory DuckDB.

    The database is made once per process (opening one costs 20-100 ms on two busy cores); each
    query gets a connection of its own (``cursor()``, ~10 us). What a query may read is registered
    on its connection only, invisible to every other, and a SELECT can leave nothing behind in the
    database: it holds no table, its settings are locked, and no other statement type gets here.
    """
    global _database
    with _database_lock:
        if _database is None:
            _database = _duckdb().connect(":memory:", config=dict(SANDBOX_CONFIG))
        return _database.cursor()


def _parse(query: str) -> tuple[list[Any], dict[str, Any]]:
    """DuckDB's statements of ``query`` and the syntax tree of the first (``json_serialize_sql`` parses;
    it does not run the query)."""
    con = connect()
    try:
        statements = con.extract_statements(query)
        if len(statements) != 1 or statements[0].type.name != "SELECT":
            return statements, {}
        return statements, json.loads(con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()[0])
    finally:
        con.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Walk:
    """What a serialized SELECT reads: tables, CTE names, functions, column names, set-of-columns uses."""

    def __init__(self) -> None:
        self.tables: list[tuple[str, str, str, str]] = []  # (catalog, schema, table, alias)
        self.ctes: set[str] = set()
        self.table_functions: set[str] = set()
        self.functions: set[str] = set()
        self.names: set[str] = set()
        self.singles: set[str] = set()  # unqualified names: ``j`` in ``SELECT j FROM jobs j`` is a whole row
        self.whole = False  # the query depends on which columns exist
        self.refused_ref: str | None = None

    def visit(self, node: Any, key: str = "") -> None:
        if isinstance(node, list):
            for item in node:
                self.visit(item, key)
            return
        if not isinstance(node, dict):
            return
        cls, kind = node.get("class"), node.get("type")
        if isinstance(node.get("cte_map"), dict):
            self.ctes |= {str(c.get("key", "")).lower() for c in node["cte_map"].get("map", [])}
        if key in REF_KEYS and cls is None and isinstance(kind, str) and not kind.endswith("_NODE"):
            self._table_ref(node, kind)
        if cls == "STAR":
            self.whole = True
        elif cls == "COLUMN_REF":
            parts = [str(n).lower() for n in node.get("column_names", [])]
            self.names |= set(parts)
            if len(parts) == 1:
                self.singles.add(parts[0])
        elif cls == "FUNCTION" and key != "function":
            self.functions.add(str(node.get("function_name", "")).lower())
        for child_key, value in node.items():
            self.visit(value, child_key)

    def _table_ref(self, node: dict[str, Any], kind: str) -> None:
        if kind == "BASE_TABLE":
            self.tables.append((str(node.get("catalog_name") or ""), str(node.get("schema_name") or ""),
                                str(node.get("table_name", "")).lower(), str(node.get("alias") or "").lower()))
        elif kind == "TABLE_FUNCTION":
            fn = node.get("function") or {}
            self.table_functions.add(str(fn.get("function_name", "")).lower())
        elif kind == "JOIN":
            if node.get("ref_type") == "NATURAL":
                self.whole = True
            self.names |= {str(n).lower() for n in node.get("using_columns", [])}
        elif kind == "PIVOT":
            self.whole = True
        elif kind == "SHOW_REF":
            self.refused_ref = "SHOW, DESCRIBE and SUMMARIZE"
        elif kind not in TABLE_REFS:
            self.refused_ref = self.refused_ref or f"a {kind.lower()} reference"


def plan(query: Any, views: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Check ``query`` and say which columns of which views it reads: ``{view: [columns]}``.

    Raises BadParams (one line) for anything but one SELECT over ``views``, their CTEs and
    :data:`TABLE_FUNCTIONS`.
    """
    duckdb = _duckdb()
    if not isinstance(query, str) or not query.strip():
        raise BadParams("give a SQL query")
    listed = ", ".join(views)
    try:
        statements, tree = _parse(query)
    except duckdb.Error as exc:
        raise BadParams(f"SQL error: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise BadParams(f"give exactly one SQL statement, not {len(statements)}")
    kind = statements[0].type.name
    if kind != "SELECT":
        raise BadParams(f"the history is read-only: {kind} statements are refused (give one SELECT or WITH)")
    if tree.get("error"):
        raise BadParams(f"SQL error: {str(tree.get('error_message') or 'cannot parse the query').splitlines()[0]}")
    walk = _Walk()
    walk.visit(tree.get("statements", []))
    if walk.refused_ref:
        raise BadParams(f"the history's SQL reads only the views {listed}: {walk.refused_ref} is refused")
    for catalog, schema, table, _ in walk.tables:
        if catalog or schema:
            raise BadParams(f"the history's SQL reads only the views {listed}, "
                            f"not {'.'.join(p for p in (catalog, schema, table) if p)!r}")
        if table not in views and table not in walk.ctes:
            raise BadParams(f"the history's SQL reads only the views {listed}, not {table!r}")
    for fn in sorted(walk.table_functions - TABLE_FUNCTIONS):
        raise BadParams(f"the history's SQL reads only the views {listed}: the table function {fn}() is refused")
    for fn in sorted(walk.functions):
        if fn in REFUSED_FUNCTIONS or fn.startswith(REFUSED_PREFIXES):
            raise BadParams(f"the history's SQL reads only the views {listed}: the function {fn}() is refused")
    used = {t for _, _, t, _ in walk.tables if t in views}
    row_refs = set(views) | walk.ctes | {alias for *_, alias in walk.tables if alias}
    whole = walk.whole or bool(walk.singles & row_refs)
    needed: dict[str, list[str]] = {}
    for view in views:
        if view in used:
            columns = list(views[view])
            needed[view] = columns if whole else ([c for c in columns if c.lower() in walk.names] or columns[:1])
    return needed


def run(query: str, params: list[Any] | dict[str, Any] | None, tables: Mapping[str, Any]) -> pd.DataFrame:
    """Run a query :func:`plan` accepted over ``tables`` (name -> Arrow table or DataFrame) in a sandbox."""
    duckdb = _duckdb()
    con = connect()
    try:
        for name, table in tables.items():
            con.register(name, table)
        try:
            return con.execute(query, params).df()
        except duckdb.Error as exc:
            raise BadParams(f"SQL error: {_first_line(exc)}") from None
    finally:
        con.close()
