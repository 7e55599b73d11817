"""Job types used by the tests (agents load this module with --import)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from jobmanager import JobType, NewTask, TaskContext, job_type


class MergeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parts: list[str]
    fail_parts: list[str] = []
    fail_attempts: int = 0  # a failing part fails only its first N attempts (0 = always)
    fail_finish: bool = False
    seconds: float = 0.0


@job_type("merge_text")
class MergeText(JobType):
    """One task per part writes part-N.txt; the finishing step merges them into merged.txt."""

    Params = MergeParams

    def plan(self, params: MergeParams) -> list[NewTask]:  # type: ignore[override]
        return [NewTask(f"part {p}", {"part": p}) for p in params.parts]

    def run(self, ctx: TaskContext, params: MergeParams, task: dict[str, Any]) -> None:  # type: ignore[override]
        time.sleep(params.seconds)
        if task["part"] in params.fail_parts and (not params.fail_attempts or ctx.attempt <= params.fail_attempts):
            raise ValueError(f"cannot render part {task['part']}")
        ctx.output_path(f"part-{task['part']}.txt").write_text(f"<{task['part']}>")
        ctx.log.info("wrote part %s", task["part"])

    def finish(self, ctx: TaskContext, params: MergeParams) -> None:  # type: ignore[override]
        if params.fail_finish:
            raise RuntimeError("merge failed on purpose")
        folder = ctx.home.job_artifacts(ctx.job_id)
        parts = [(folder / f"part-{p}.txt") for p in params.parts]
        ctx.output_path("merged.txt").write_text("".join(p.read_text() for p in parts if p.exists()))
        ctx.log.info("merged %d parts", len(parts))


class StallParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: int
    stall: int  # the task (1-based) that runs until it is cancelled or ``seconds`` have passed
    seconds: float = 60.0


@job_type("stall_at")
class StallAt(JobType):
    """Trivial tasks but one, which stalls: a long task right after short ones (the prefetch tests)."""

    Params = StallParams

    def plan(self, params: StallParams) -> list[NewTask]:  # type: ignore[override]
        return [NewTask(f"task {n}", {"n": n}) for n in range(1, params.tasks + 1)]

    def run(self, ctx: TaskContext, params: StallParams, task: dict[str, Any]) -> None:  # type: ignore[override]
        if task["n"] != params.stall:
            return
        end = time.monotonic() + params.seconds
        while time.monotonic() < end and not ctx.cancelled():
            time.sleep(0.02)
