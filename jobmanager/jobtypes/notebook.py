"""``notebook``: run a Jupyter notebook with parameters (papermill); keep it executed and as HTML.

Progress is reported per executed cell through a papermill engine that wraps the
execution manager's ``cell_complete`` hook (papermill itself only drives a tqdm
bar). A failing cell fails the task with the cell's number and its error
(``ValueError: bad input``); the full traceback goes to the task's log.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..context import Cancelled, TaskContext
from ..home import safe_name
from ..models import NewTask
from . import JobType, job_type

ENGINE = "jobmanager"


class NotebookCellError(Exception):
    """A cell of the notebook raised; the message is the cell's error."""


class NotebookParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notebook: str = Field(..., min_length=1, description=".ipynb to run; relative paths resolve against base_dir")
    parameters: dict[str, Any] = Field(default_factory=dict, description="injected into the 'parameters' cell")
    base_dir: str | None = Field(None, description="folder relative notebook paths start from (default: the home)")
    kernel: str = Field("python3", min_length=1, description="Jupyter kernel name")
    cell_timeout: float | None = Field(None, gt=0, description="seconds one cell may run (default: no limit)")

    @field_validator("notebook")
    @classmethod
    def _ipynb(cls, notebook: str) -> str:
        if not notebook.strip().lower().endswith(".ipynb"):
            raise ValueError(f"{notebook!r} is not a .ipynb notebook")
        return notebook.strip()

    @field_validator("base_dir")
    @classmethod
    def _absolute_base(cls, base: str | None) -> str | None:
        return str(Path(base).expanduser().resolve()) if base else None


def _register_engine() -> None:
    """Register a papermill engine calling ``on_cell(done, total)`` after each cell (idempotent)."""
    from papermill.engines import NBClientEngine, papermill_engines

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            on_cell: Callable[[int, int], None] | None = kwargs.pop("on_cell", None)
            if on_cell is not None:
                complete = nb_man.cell_complete
                total = len(nb_man.nb.cells)

                def cell_complete(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                    result = complete(cell, cell_index=cell_index, **kw)
                    on_cell((cell_index or 0) + 1, total)
                    return result

                nb_man.cell_complete = cell_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(ENGINE, ProgressEngine)


@job_type("notebook")
class Notebook(JobType):
    """Execute a notebook with parameters; outputs the executed .ipynb and an HTML rendering."""

    Params = NotebookParams

    def plan(self, params: NotebookParams) -> list[NewTask]:  # type: ignore[override]
        return [NewTask(Path(params.notebook).name, {})]

    def check_inputs(self, home: Any, params: NotebookParams, case: str | None) -> None:  # type: ignore[override]
        """Refuse at submit a notebook outside the notebook folders, or one that does not exist."""
        home.resolve_input(params.notebook, case=case, base_dir=params.base_dir, kind="notebook", must_exist=True)

    def run(self, ctx: TaskContext, params: NotebookParams, task: dict[str, Any]) -> None:  # type: ignore[override]
        import papermill
        from papermill.exceptions import PapermillExecutionError

        # only from the notebook folders (never the home's dashboard copy, logs or artifacts), re-checked here
        source = ctx.input_path(params.notebook, params.base_dir, notebook=True)
        if not source.is_file():
            raise FileNotFoundError(f"notebook {params.notebook} does not exist")
        stem = safe_name(source.stem)
        executed = ctx.output_path(f"{stem}.ipynb", "application/x-ipynb+json")
        _register_engine()

        def on_cell(done: int, total: int) -> None:
            ctx.progress(done, total)
            if ctx.cancelled():
                raise Cancelled()

        ctx.log.info("running %s with %s on kernel %s", source, params.parameters, params.kernel)
        try:
            papermill.execute_notebook(
                str(source), str(executed), parameters=params.parameters, engine_name=ENGINE,
                kernel_name=params.kernel, progress_bar=False, log_output=True, cwd=str(source.parent),
                execution_timeout=params.cell_timeout, on_cell=on_cell,
            )
        except PapermillExecutionError as exc:
            ctx.log.error("cell %s failed:\n%s", exc.exec_count, "\n".join(exc.traceback))
            ctx.log.info("the partly executed notebook is kept at %s", executed)
            raise NotebookCellError(
                f"cell [{exc.exec_count}] failed: {exc.ename}: {exc.evalue}".strip().rstrip(":")
            ) from None
        html = ctx.output_path(f"{stem}.html", "text/html")
        html.write_text(to_html(executed), encoding="utf-8")
        ctx.log.info("executed %s; wrote %s and %s", source.name, executed.name, html.name)


def to_html(notebook: Path) -> str:
    """The executed notebook as one stand-alone HTML page (nbconvert)."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(notebook), as_version=4))
    return body
