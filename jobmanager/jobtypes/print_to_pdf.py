"""``print_to_pdf``: one task prints one document; the finishing step merges them into merged.pdf.

A document that cannot be printed fails only its own task (with the file's name
and the reason); the other documents still print and the job ends
``completed_with_errors``. A document that prints with something missing
(characters no installed font has, an image that was refused) succeeds with a
warning naming the file, shown with the task and on the cover. After the input is
fixed, ``retry`` re-prints only the failed documents and the finishing step, which
runs again, rebuilds merged.pdf from every document printed so far. Rendering is
:mod:`jobmanager.printing`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobmanager.engine.context import Cancelled, TaskContext
from jobmanager.errors import JobManagerError
from jobmanager.home import Home, safe_name
from jobmanager.jobtypes import JobType, job_type
from jobmanager.models import NewTask

MERGED = "merged.pdf"


class EndorseParams(BaseModel):
    """An endorsement line on every page of merged.pdf, with Bates-style control numbers."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field("{document} | page {page} of {pages} | {control}", min_length=1, max_length=300,
                          description="fields: {case} {document} {page} {pages} {control} {job_page} "
                                      "{job_pages} {title}")
    prefix: str = Field("", max_length=40, pattern=r"^[A-Za-z0-9_.\-]*$", description="control number prefix")
    start: int = Field(1, ge=0, le=10**12, description="the first control number")
    digits: int = Field(6, ge=1, le=15, description="zero-padded width of the number")
    case: str | None = Field(None, max_length=200, description="{case}; default: the job's case")
    header: bool = Field(False, description="at the top of the page instead of the foot")

    @field_validator("template")
    @classmethod
    def _known_fields(cls, template: str) -> str:
        from jobmanager.printing.merge import template_error

        error = template_error(template)
        if error:
            raise ValueError(error)
        return template


class PrintToPdfParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[str] = Field(..., min_length=1, max_length=10_000,
                                 description="files to print; relative to base_dir (or <home>/inputs)")
    base_dir: str | None = Field(None, description="folder that relative document paths start from")
    title: str = Field("Printed documents", max_length=200, description="title of the merged PDF's cover")
    endorse: EndorseParams | None = Field(None, description="stamp an endorsement line with control numbers")

    @field_validator("documents")
    @classmethod
    def _documents_not_blank(cls, docs: list[str]) -> list[str]:
        blank = [i + 1 for i, d in enumerate(docs) if not d.strip()]
        if blank:
            raise ValueError(f"document(s) {blank} are empty paths")
        return [d.strip() for d in docs]

    @field_validator("base_dir")
    @classmethod
    def _absolute_base(cls, base: str | None) -> str | None:
        # made absolute where the job is submitted: agents run in other working folders
        return str(Path(base).expanduser().resolve()) if base else None


def document_pdf_name(index: int, document: str) -> str:
    """The per-document PDF's artifact name: numbered, so equal file names never collide."""
    return f"{index:03d}-{safe_name(Path(document).name)}.pdf"


def _resolve(ctx: TaskContext, params: PrintToPdfParams, document: str) -> Path:
    # checked again when the task runs: the files may have changed (or become symlinks) since submit
    return ctx.input_path(document, params.base_dir)


@job_type("print_to_pdf")
class PrintToPdf(JobType[PrintToPdfParams]):
    """Print text, Markdown, HTML, tables, images, e-mails, PDFs and office files into one merged PDF."""

    Params = PrintToPdfParams

    def plan(self, params: PrintToPdfParams) -> list[NewTask]:
        return [NewTask(Path(doc).name or doc, {"index": i, "document": doc})
                for i, doc in enumerate(params.documents, 1)]

    def check_inputs(self, home: Home, params: PrintToPdfParams, case: str | None) -> None:
        """Refuse at submit a document the job may not read. A missing one is not refused: it fails
        only its own task, so the others still print and a retry after fixing it prints the rest."""
        for doc in params.documents:
            home.resolve_input(doc, case=case, base_dir=params.base_dir)

    def run(self, ctx: TaskContext, params: PrintToPdfParams, task: dict[str, Any]) -> None:
        from jobmanager.printing import render_document

        document = task["document"]
        path = _resolve(ctx, params, document)
        ctx.log.info("printing %s", path)

        def cancelled() -> bool:
            if ctx.cancelled():
                raise Cancelled()
            return False

        def may_read(linked: Path) -> bool:  # an image the document links: the job's reading rights apply
            try:
                ctx.input_path(str(linked))
            except JobManagerError:
                return False
            return True

        out = ctx.output_path(document_pdf_name(task["index"], document), "application/pdf")
        try:
            result = render_document(path, out, label=Path(document).name, numbers=params.endorse is None,
                                     may_read=may_read, on_page=lambda n: ctx.progress(n, None),
                                     cancelled=cancelled)
        finally:
            _free_layout()
        ctx.progress(result.pages, result.pages)
        for warning in result.warnings:
            ctx.warn(warning)
        ctx.log.info("printed %s: %d page(s)", document, result.pages)

    def finish(self, ctx: TaskContext, params: PrintToPdfParams) -> None:
        from jobmanager.printing.merge import Endorsement, Part, merge

        _free_layout()

        job = ctx.store.get_job(ctx.job_id, with_tasks=True)
        folder = ctx.home.job_artifacts(ctx.job_id)
        parts = []
        for t in sorted(job.tasks, key=lambda t: t.seq):
            label = Path(t.params["document"]).name
            if t.state == "succeeded":
                parts.append(Part(label, folder / document_pdf_name(t.params["index"], t.params["document"]),
                                  warning=t.warning))
            else:
                error = (t.error or t.state).removeprefix("RenderError: ")  # the cover names the file already
                parts.append(Part(label, error=error))
        endorse = None
        if params.endorse:
            e = params.endorse
            endorse = Endorsement(e.template, e.prefix, e.start, e.digits, e.case or ctx.case or "", e.header)
        pages = merge(parts, ctx.output_path(MERGED, "application/pdf"), title=params.title, endorse=endorse)
        printed = sum(p.pdf is not None for p in parts)
        ctx.log.info("merged %d of %d document(s) into %s: %d page(s)", printed, len(parts), MERGED, pages)


def _free_layout() -> None:
    """Collect the last document's layout now. A rendered document (fpdf2's pages, WeasyPrint's boxes) is a
    web of reference cycles that only the cyclic collector frees, and when it last ran depends on the other
    threads' allocations: the 4.9 MB word list's agent peaked at 392 MB instead of 248 MB in about one run
    of four (PostgreSQL store) because the document was still alive when the merge began."""
    import gc

    gc.collect()
