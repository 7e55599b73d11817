"""``sleep``: the diagnostic job type operators use to test agents (tests use it too)."""

from __future__ import annotations

import random
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobmanager.engine.context import TaskContext
from jobmanager.jobtypes import JobType, job_type
from jobmanager.models import NewTask


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: int = Field(1, ge=1, le=100_000, description="how many tasks")
    seconds: float = Field(0.0, ge=0, le=86_400, description="how long each task sleeps")
    fail_rate: float = Field(0.0, ge=0, le=1, description="chance that a task fails")
    fail_tasks: list[int] = Field(default_factory=list, description="task numbers (1-based) that fail")
    fail_attempts: int = Field(0, ge=0, description="fail only the first N attempts of a failing task (0 = all)")
    steps: int = Field(10, ge=1, le=10_000, description="progress reports per task")

    @model_validator(mode="after")
    def _fail_tasks_in_range(self) -> "SleepParams":
        bad = [n for n in self.fail_tasks if not 1 <= n <= self.tasks]
        if bad:
            raise ValueError(f"fail_tasks {bad} outside 1..{self.tasks}")
        return self


@job_type("sleep")
class Sleep(JobType[SleepParams]):
    """Each task sleeps ``seconds`` in ``steps`` steps, reporting progress, and may fail on purpose."""

    Params = SleepParams

    def plan(self, params: SleepParams) -> list[NewTask]:
        return [NewTask(f"sleep {i}", {"n": i}) for i in range(1, params.tasks + 1)]

    def run(self, ctx: TaskContext, params: SleepParams, task: dict[str, Any]) -> None:
        n = task["n"]
        ctx.log.info("task %s: sleeping %.3f s", n, params.seconds)
        step = params.seconds / params.steps if params.seconds else 0.0
        for i in range(params.steps if step else 0):
            if ctx.cancelled():
                ctx.log.info("cancel requested; stopping")
                return
            time.sleep(step)
            ctx.progress(i + 1, params.steps)
        fails = n in params.fail_tasks or (params.fail_rate and random.random() < params.fail_rate)
        if fails and (params.fail_attempts == 0 or ctx.attempt <= params.fail_attempts):
            raise RuntimeError(f"task {n} failed on purpose (attempt {ctx.attempt})")
        ctx.log.info("task %s: done", n)
