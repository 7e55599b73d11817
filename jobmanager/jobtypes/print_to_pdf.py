"""``print_to_pdf``: one task renders one document; the finishing step merges them into merged.pdf.

A document that cannot be printed fails only its own task (with the file's name
and the reason); the other documents still print and the job ends
``completed_with_errors``. After the input is fixed, ``retry`` re-prints only
the failed documents and the finishing step, which runs again, rebuilds
merged.pdf from every document printed so far.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobmanager.engine.context import Cancelled, TaskContext
from jobmanager.home import Home, safe_name
from jobmanager.jobtypes import JobType, job_type
from jobmanager.models import NewTask

MERGED = "merged.pdf"


class PrintToPdfParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[str] = Field(..., min_length=1, max_length=10_000,
                                 description="files to print; relative to base_dir (or <home>/inputs)")
    base_dir: str | None = Field(None, description="folder that relative document paths start from")
    title: str = Field("Printed documents", max_length=200, description="title of the merged PDF's cover")

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
    """Print text, Markdown, CSV, HTML and image files into one merged PDF with a cover page."""

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
        from jobmanager.jobtypes.pdf import render_document

        document = task["document"]
        path = _resolve(ctx, params, document)
        ctx.log.info("printing %s", path)

        def cancelled() -> bool:
            if ctx.cancelled():
                raise Cancelled()
            return False

        out = ctx.output_path(document_pdf_name(task["index"], document), "application/pdf")
        pages = render_document(path, out, label=Path(document).name, on_page=lambda n: ctx.progress(n, None),
                                cancelled=cancelled)
        ctx.progress(pages, pages)
        ctx.log.info("printed %s: %d page(s)", document, pages)

    def finish(self, ctx: TaskContext, params: PrintToPdfParams) -> None:
        from jobmanager.jobtypes.pdf import Part, merge

        job = ctx.store.get_job(ctx.job_id, with_tasks=True)
        folder = ctx.home.job_artifacts(ctx.job_id)
        parts = []
        for t in sorted(job.tasks, key=lambda t: t.seq):
            label = Path(t.params["document"]).name
            if t.state == "succeeded":
                parts.append(Part(label, folder / document_pdf_name(t.params["index"], t.params["document"])))
            else:
                error = (t.error or t.state).removeprefix("RenderError: ")  # the cover names the file already
                parts.append(Part(label, error=error))
        pages = merge(parts, ctx.output_path(MERGED, "application/pdf"), title=params.title)
        printed = sum(p.pdf is not None for p in parts)
        ctx.log.info("merged %d of %d document(s) into %s: %d page(s)", printed, len(parts), MERGED, pages)
