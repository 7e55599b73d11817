"""Job types for the time limit tests (agents load this module with --import jm_time_limit_types)."""

from __future__ import annotations

import os
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from jobmanager import JobType, TaskContext, job_type


class LoopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = 30.0  # how long the loop runs when nothing stops it
    call: Literal["progress", "log", "cancelled"] = "progress"  # what each turn of the loop calls
    artifact: bool = False  # write done.txt at the end


@job_type("limited_loop")
class LimitedLoop(JobType):
    """A loop that calls the context each turn, so a soft time limit can stop it."""

    Params = LoopParams
    soft_limit = 20.0  # the type's default; the tests override it at submit

    def run(self, ctx: TaskContext, params: LoopParams, task: dict[str, Any]) -> None:  # type: ignore[override]
        ctx.log.info("pid %d", os.getpid())
        end = time.monotonic() + params.seconds
        turns = 0
        while time.monotonic() < end:
            if params.call == "progress":
                ctx.progress(turns)
            elif params.call == "log":
                ctx.log.debug("turn %d", turns)
            elif ctx.cancelled():
                return  # stops politely without raising: still a timeout when the soft limit said so
            time.sleep(0.01)
            turns += 1
        if params.artifact:
            ctx.output_path("done.txt").write_text(f"done in pid {os.getpid()}")
        ctx.progress(turns, turns)
        ctx.log.info("loop done after %d turns", turns)


class EndlessParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@job_type("endless")
class Endless(JobType):
    """Spins forever and never calls its context: only a hard limit ends it."""

    Params = EndlessParams
    hard_limit = 3600.0  # the type's default; the tests override it at submit

    def run(self, ctx: TaskContext, params: EndlessParams, task: dict[str, Any]) -> None:  # type: ignore[override]
        ctx.log.info("pid %d", os.getpid())
        while True:
            pass
