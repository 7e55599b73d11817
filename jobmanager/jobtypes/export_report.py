"""``export_report``: run one read-only SQL query with DuckDB and keep the result as CSV, Parquet or Excel.

The query reads either a CSV/Parquet file (``source``, visible as the view
``source``) or the home's job store, attached READ_ONLY through DuckDB's sqlite
extension (or its postgres extension for a PostgreSQL store) as the default schema
(``SELECT * FROM jobs``). Writing statements are
refused when the job is submitted: the query must parse as exactly one SELECT.
The extension is loaded by path from the ``duckdb-extension-sqlite-scanner``
package with automatic extension installing/loading off, so nothing is ever
downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..context import TaskContext
from ..errors import BadParams
from ..home import safe_name
from ..models import NewTask
from . import JobType, job_type

if TYPE_CHECKING:
    import duckdb

FORMATS = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet",
           "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
#: Excel's own limit on rows in one sheet (header included)
EXCEL_MAX_ROWS = 1_048_576


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise BadParams("export_report needs DuckDB: pip install 'jobmanager[history]'") from None
    return duckdb


def check_read_only(query: str) -> str:
    """The query without its trailing semicolon, if it is exactly one SELECT; else ValueError."""
    duckdb = _duckdb()
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise ValueError(f"not valid SQL: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise ValueError(f"expected exactly one statement, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        name = getattr(kind, "name", str(kind))
        raise ValueError(f"only a read-only SELECT query is allowed, not {name}")
    return query.strip().rstrip(";").strip()


class ExportReportParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, description="one SELECT; reads the view `source`, or the store's tables")
    source: str | None = Field(None, description="a CSV or Parquet file to query as `source` (default: the store)")
    format: Literal["csv", "parquet", "xlsx"] = Field("csv", description="output format")
    name: str = Field("report", min_length=1, max_length=100, description="output file name without extension")

    @field_validator("query")
    @classmethod
    def _read_only(cls, query: str) -> str:
        return check_read_only(query)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if safe_name(name) != name:
            raise ValueError(f"name {name!r} must be a plain file name (letters, digits, - _ .)")
        return name

    @field_validator("source")
    @classmethod
    def _source(cls, source: str | None) -> str | None:
        if not source:
            return None
        path = Path(source).expanduser().resolve()  # agents run in other working folders
        if path.suffix.lower() not in (".csv", ".tsv", ".parquet", ".pq"):
            raise ValueError(f"source must be a .csv or .parquet file, not {path.name!r}")
        return str(path)


def sqlite_extension_path() -> Path:
    """The sqlite extension file shipped by the pip package matching the installed DuckDB."""
    try:
        import duckdb_extension_sqlite_scanner as pkg
    except ImportError:
        raise BadParams("querying the store needs: pip install 'jobmanager[history]'") from None
    version = _duckdb().__version__
    roots = [Path(p) for p in pkg.__path__]
    found = [p for r in roots for p in r.glob(f"extensions/v{version}/sqlite_scanner.duckdb_extension")]
    found = found or [p for r in roots for p in r.rglob("sqlite_scanner.duckdb_extension")]
    if not found:
        raise BadParams(f"no sqlite_scanner extension for DuckDB {version} in {roots}")
    return found[0]


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(source: str | None, store_path: Path | str) -> "duckdb.DuckDBPyConnection":
    """An in-memory DuckDB with the source (or the store, read-only) in view and its configuration locked.

    ``store_path`` is the SQLite store file, or a PostgreSQL store's URL (ATTACHed with DuckDB's
    postgres extension, see :mod:`jobmanager.history_pg`)."""
    duckdb = _duckdb()
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        if source is not None:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"source {path} does not exist")
            reader = "read_parquet" if path.suffix.lower() in (".parquet", ".pq") else "read_csv_auto"
            # a table, not a view: then file access can be switched off for the user's query
            con.execute(f"CREATE TABLE source AS SELECT * FROM {reader}({_sql_string(str(path))})")
            con.execute("SET enable_external_access = false")
        elif isinstance(store_path, str) and store_path.startswith(("postgresql://", "postgres://")):
            from ..history_pg import attach_postgres

            attach_postgres(con, store_path)  # the postgres extension, by path; READ_ONLY
            con.execute("USE store")
        else:
            store_path = Path(store_path)
            if not store_path.is_file():
                raise FileNotFoundError(f"no job store at {store_path}")
            con.execute(f"LOAD {_sql_string(str(sqlite_extension_path()))}")
            con.execute(f"ATTACH {_sql_string(str(store_path))} AS store (TYPE sqlite, READ_ONLY)")
            con.execute("USE store")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


@job_type("export_report")
class ExportReport(JobType):
    """Run a read-only query over a file or the job store; the result is the job's output file."""

    Params = ExportReportParams

    def plan(self, params: ExportReportParams) -> list[NewTask]:  # type: ignore[override]
        return [NewTask(f"export {params.format}", {})]

    def check_inputs(self, home: Any, params: ExportReportParams, case: str | None) -> None:  # type: ignore[override]
        if params.source:  # only from the job's input folders (never the home's logs, artifacts or store)
            home.resolve_input(params.source, case=case, must_exist=True)

    def run(self, ctx: TaskContext, params: ExportReportParams, task: dict[str, Any]) -> None:  # type: ignore[override]
        ctx.progress(0, 3)
        if params.source is None:
            # The store is read through the service, as the job's owner: the history's views only, their
            # permissions and cases, and DuckDB in a process of its own (never beside this agent's
            # connections to the store; see jobmanager.history_process).
            from ..service import JobManager

            with JobManager(ctx.home, user=ctx.owner, interface="agent") as jm:
                frame = jm.sql(params.query)
            con = _duckdb().connect(config={"autoinstall_known_extensions": False,
                                            "autoload_known_extensions": False})
            con.register("result", frame)
            query = "SELECT * FROM result"
        else:
            con = connect(str(ctx.input_path(params.source)), "")
            query = params.query
        try:
            ctx.log.info("query on %s: %s", params.source or "the job history", params.query)
            rel = con.sql(query)
            ctx.progress(1, 3)
            out = ctx.output_path(f"{params.name}.{params.format}", FORMATS[params.format])
            df = rel.df()  # written by pandas: DuckDB itself may not touch files (external access is off)
            if params.format == "csv":
                df.to_csv(out, index=False)
            elif params.format == "parquet":
                df.to_parquet(out, index=False)
            else:
                if len(df) >= EXCEL_MAX_ROWS:
                    raise ValueError(f"{len(df)} rows do not fit in one Excel sheet; export CSV or Parquet")
                for col in df.select_dtypes(include=["datetimetz"]).columns:
                    df[col] = df[col].dt.tz_localize(None)  # Excel has no time zones
                df.to_excel(out, index=False, sheet_name="report")
            ctx.progress(2, 3)
            rows = len(df)
        finally:
            con.close()
        ctx.progress(3, 3)
        ctx.log.info("wrote %s: %d row(s), %d bytes", out.name, rows, out.stat().st_size)
