"""``export_report``: run one read-only SQL query with DuckDB and keep the result as CSV, Parquet or Excel.

The query reads either a CSV/Parquet file (``source``, visible as the table ``source``) or the
history's views (``SELECT * FROM jobs``), and either way it runs in the same sandbox as
``jm.sql`` (:mod:`jobmanager.history.sandbox`): a fresh DuckDB holding only those rows, with no
store attached, no extension, no file access. The views are read through the service as the
job's owner, so the report holds only the rows its owner may see (``jm.sql``'s scope); the
source file is read by the agent (from the job's input folders) before the query runs. A query
that is not exactly one SELECT is refused when the job is submitted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobmanager.engine.context import TaskContext
from jobmanager.errors import BadParams
from jobmanager.home import safe_name
from jobmanager.jobtypes import JobType, job_type
from jobmanager.models import NewTask

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

    query: str = Field(..., min_length=1, description="one SELECT; reads the table `source`, or the history's views")
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


def read_source(path: Path) -> Any:
    """A CSV or Parquet file as an Arrow table, read by a DuckDB that runs nothing else."""
    duckdb = _duckdb()
    if not path.is_file():
        raise FileNotFoundError(f"source {path} does not exist")
    reader = "read_parquet" if path.suffix.lower() in (".parquet", ".pq") else "read_csv_auto"
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        return con.execute(f"SELECT * FROM {reader}({_sql_string(str(path))})").arrow().read_all()
    finally:
        con.close()


@job_type("export_report")
class ExportReport(JobType[ExportReportParams]):
    """Run a read-only query over a file or the job store; the result is the job's output file."""

    Params = ExportReportParams

    def plan(self, params: ExportReportParams) -> list[NewTask]:
        return [NewTask(f"export {params.format}", {})]

    def check_inputs(self, home: Any, params: ExportReportParams, case: str | None) -> None:
        if params.source:  # only from the job's input folders (never the home's logs, artifacts or store)
            home.resolve_input(params.source, case=case, must_exist=True)

    def run(self, ctx: TaskContext, params: ExportReportParams, task: dict[str, Any]) -> None:
        ctx.progress(0, 3)
        ctx.log.info("query on %s: %s", params.source or "the job history", params.query)
        if params.source is None:
            # The history is read through the service, as the job's owner: the views' rows the owner may
            # see, in the sandbox, and DuckDB in a process of its own (never beside this agent's
            # connections to the store; see jobmanager.history.process).
            from jobmanager.service import JobManager

            with JobManager(ctx.home, user=ctx.owner, interface="agent") as jm:
                df = jm.sql(params.query)
        else:
            from jobmanager.history import sandbox as history_sandbox

            table = read_source(Path(ctx.input_path(params.source)))
            history_sandbox.plan(params.query, {"source": table.column_names})
            df = history_sandbox.run(params.query, None, {"source": table})
        ctx.progress(1, 3)
        out = ctx.output_path(f"{params.name}.{params.format}", FORMATS[params.format])
        # written by pandas: the sandbox's DuckDB may not touch files
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
        ctx.progress(3, 3)
        ctx.log.info("wrote %s: %d row(s), %d bytes", out.name, rows, out.stat().st_size)
