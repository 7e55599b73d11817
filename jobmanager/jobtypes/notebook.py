"""``notebook``: run a Jupyter notebook with parameters (papermill); keep it executed and as HTML.

Progress is reported per executed cell through a papermill engine that wraps the
execution manager's ``cell_complete`` hook (papermill itself only drives a tqdm
bar). A failing cell fails the task with the cell's number and its error
(``ValueError: bad input``); the full traceback goes to the task's log.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobmanager.engine.context import Cancelled, TaskContext
from jobmanager.home import safe_name
from jobmanager.jobtypes import JobType, job_type
from jobmanager.models import NewTask

ENGINE = "jobmanager"


class NotebookCellError(Exception):
    """A cell of the notebook raised; the message is the cell's error."""


#: how deeply lists and dicts may nest in a parameter's value
MAX_DEPTH = 20
#: a parameter name's length limit (names are pasted into the generated cell)
MAX_NAME = 100
#: a Jupyter kernel name as jupyter_client allows it (letters, digits, ``-``, ``.``, ``_``), no path in it
KERNEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def _shown(text: str, limit: int = 60) -> str:
    """``repr`` of user text, cut short: safe in a one-line message (control characters come out escaped)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def check_parameter_name(name: object) -> str:
    """A parameter name papermill may paste into the generated cell as ``name = value``.

    papermill writes names unchecked, so a name is the one place a submitter could write code: it must
    be a Python identifier and not a keyword. Names starting with ``__`` are refused too: they are the
    interpreter's own (``__builtins__``, ``__name__``, ``__spec__``...), which the notebook's code and
    IPython trust, and no parameter needs one.
    """
    if not isinstance(name, str):
        raise ValueError(f"parameter name {name!r} must be a string")
    if not name.isidentifier():
        raise ValueError(f"parameter name {_shown(name)} is not a Python identifier (letters, digits and _, "
                         "not starting with a digit)")
    if keyword.iskeyword(name):
        raise ValueError(f"parameter name {_shown(name)} is a Python keyword")
    if len(name) > MAX_NAME:
        raise ValueError(f"parameter name {_shown(name)} is longer than {MAX_NAME} characters")
    if name.startswith("__"):
        raise ValueError(f"parameter name {_shown(name)} starts with '__' (reserved for Python itself)")
    return name


def check_json_value(name: str, value: object, depth: int = 0) -> None:
    """Only what JSON holds: None, bool, int, finite float, str, and lists / string-keyed dicts of these,
    nested at most :data:`MAX_DEPTH` deep (exact types: no subclass with its own ``repr``)."""
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return
    if kind is float:
        if not math.isfinite(cast(float, value)):
            raise ValueError(f"parameter {_shown(name)}: {value} is not a JSON number")
        return
    if kind not in (list, dict):
        raise ValueError(f"parameter {_shown(name)}: a value of type {kind.__name__} is not JSON "
                         "(use null, true/false, numbers, strings, lists and objects)")
    if depth >= MAX_DEPTH:
        raise ValueError(f"parameter {_shown(name)} nests deeper than {MAX_DEPTH} levels")
    if kind is dict:
        for key, item in cast(dict[object, object], value).items():
            if type(key) is not str:
                raise ValueError(f"parameter {_shown(name)}: object keys must be strings, not {key!r}")
            check_json_value(name, item, depth + 1)
    else:
        for item in cast(list[object], value):
            check_json_value(name, item, depth + 1)


def _no_control(what: str, text: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValueError(f"{what} {_shown(text)} contains control characters")
    return text


class NotebookParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notebook: str = Field(..., min_length=1, max_length=4096,
                          description=".ipynb to run; relative paths resolve against base_dir")
    parameters: dict[str, Any] = Field(default_factory=dict, description="injected into the 'parameters' cell")
    base_dir: str | None = Field(None, max_length=4096,
                                 description="folder relative notebook paths start from (default: the home)")
    kernel: str = Field("python3", min_length=1, description="Jupyter kernel name (a Python kernel)")
    cell_timeout: float | None = Field(None, gt=0, allow_inf_nan=False,
                                       description="seconds one cell may run (default: no limit)")

    @field_validator("notebook")
    @classmethod
    def _ipynb(cls, notebook: str) -> str:
        _no_control("notebook", notebook)
        if not notebook.strip().lower().endswith(".ipynb"):
            raise ValueError(f"{_shown(notebook)} is not a .ipynb notebook")
        return notebook.strip()

    @field_validator("base_dir")
    @classmethod
    def _absolute_base(cls, base: str | None) -> str | None:
        # Only where a relative notebook path starts: the notebook itself must still pass the home's
        # input check (ctx.home.check_input) at run time, whatever this says.
        return str(Path(_no_control("base_dir", base)).expanduser().resolve()) if base else None

    @field_validator("parameters")
    @classmethod
    def _safe_parameters(cls, parameters: Any) -> Any:
        if isinstance(parameters, dict):
            for name, value in parameters.items():
                check_json_value(check_parameter_name(name), value)
        return parameters

    @field_validator("kernel")
    @classmethod
    def _plain_kernel(cls, kernel: str) -> str:
        if not KERNEL_NAME.fullmatch(kernel) or ".." in kernel:
            raise ValueError(f"kernel {_shown(kernel)} is not a plain kernel name (letters, digits, - . _)")
        return kernel


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
class Notebook(JobType[NotebookParams]):
    """Execute a notebook with parameters; outputs the executed .ipynb and an HTML rendering."""

    Params = NotebookParams
    #: running a notebook is running code on the agents: a permission of its own
    requires = "run_notebooks"

    def plan(self, params: NotebookParams) -> list[NewTask]:
        return [NewTask(Path(params.notebook).name, {})]

    def check_inputs(self, home: Any, params: NotebookParams, case: str | None) -> None:
        """Refuse at submit a notebook outside the notebook folders, or one that does not exist."""
        home.resolve_input(params.notebook, case=case, base_dir=params.base_dir, kind="notebook", must_exist=True)

    def run(self, ctx: TaskContext, params: NotebookParams, task: dict[str, Any]) -> None:
        import papermill
        from papermill.exceptions import PapermillExecutionError

        # only from the notebook folders (never the home's dashboard copy, logs or artifacts), re-checked here
        source = ctx.input_path(params.notebook, params.base_dir, notebook=True)
        if not source.is_file():
            raise FileNotFoundError(f"notebook {params.notebook} does not exist")
        stem = safe_name(source.stem)
        executed = ctx.output_path(f"{stem}.ipynb", "application/x-ipynb+json")
        _register_engine()
        python_kernel(params.kernel)

        def on_cell(done: int, total: int) -> None:
            ctx.progress(done, total)
            if ctx.cancelled():
                raise Cancelled()

        ctx.log.info("running %s with %s on kernel %s", source, params.parameters, params.kernel)
        try:
            papermill.execute_notebook(
                str(source), str(executed), parameters=params.parameters, engine_name=ENGINE,
                kernel_name=params.kernel, language="python", progress_bar=False, log_output=True,
                cwd=str(source.parent), execution_timeout=params.cell_timeout, on_cell=on_cell,
            )
        except PapermillExecutionError as exc:
            ctx.log.error("cell %s failed:\n%s", exc.exec_count, "\n".join(exc.traceback))
            partial = ctx.output_path(f"{stem}.html", "text/html")
            try:
                partial.write_text(to_html(executed), encoding="utf-8")
            except Exception as html_exc:  # the notebook itself is still worth keeping
                ctx.log.warning("could not render the partly executed notebook as HTML: %s", html_exc)
            ctx.record_outputs()  # a failed run's partial notebook and HTML are downloadable too
            ctx.log.info("the partly executed notebook is kept as %s and %s", executed.name, partial.name)
            raise NotebookCellError(
                f"cell [{exc.exec_count}] failed: {exc.ename}: {exc.evalue}".strip().rstrip(":")
            ) from None
        html = ctx.output_path(f"{stem}.html", "text/html")
        html.write_text(to_html(executed), encoding="utf-8")
        ctx.log.info("executed %s; wrote %s and %s", source.name, executed.name, html.name)


def python_kernel(kernel: str) -> None:
    """Refuse a kernel that is not a Python kernel installed here.

    Parameters are written as Python (``language="python"``): papermill's translators for other
    languages do not escape every string interpolation (Julia's ``$(...)``, PowerShell's), so a
    string value could become code in such a kernel.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        raise ValueError(f"no Jupyter kernel {kernel!r} on this agent") from None
    if (spec.language or "").lower() != "python":
        raise ValueError(f"kernel {kernel!r} runs {spec.language}, not Python: notebook jobs run Python kernels")


def to_html(notebook: Path) -> str:
    """The executed notebook as one stand-alone HTML page (nbconvert)."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(notebook), as_version=4))
    return body
