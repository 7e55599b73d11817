"""Job types for the tests of lost agents (agents load this module with ``--import jm_loss_types``)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from jobmanager import JobType, NewTask, TaskContext, job_type
from jobmanager.jobtypes.sleep import Sleep


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def kill_own_agent() -> None:
    """SIGKILL the agent process running this task: a crash, as a segfaulting library would cause."""
    os.kill(os.getpid(), signal.SIGKILL)


@job_type("kill_agent")
class KillAgent(JobType[NoParams]):
    """A poison task: it kills every agent it lands on."""

    Params = NoParams

    def plan(self, params: NoParams) -> list[NewTask]:
        return [NewTask("poison", {})]

    def run(self, ctx: TaskContext, params: NoParams, task: dict[str, Any]) -> None:
        kill_own_agent()


@job_type("kill_agent_max2")
class KillAgentMax2(KillAgent):
    """The same poison, from a type that allows two losses."""

    max_losses = 2


@job_type("unsafe_sleep")
class UnsafeSleep(Sleep):
    """``sleep``, declared not safe to run again after its agent was lost."""

    rerun_safe = False


class RunsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    folder: str
    #: what run N (1-based, counted across agents by files in ``folder``) does: "fail", "nul" (fail with a NUL
    #: in the error), "kill" or "ok"
    script: list[str]


@job_type("scripted")
class Scripted(JobType[RunsParams]):
    """One task whose every run does the next step of ``script``: fail, kill its agent, or succeed."""

    Params = RunsParams

    def plan(self, params: RunsParams) -> list[NewTask]:
        return [NewTask("scripted", {})]

    def run(self, ctx: TaskContext, params: RunsParams, task: dict[str, Any]) -> None:
        folder = Path(params.folder)
        run = len(list(folder.glob("run-*"))) + 1
        (folder / f"run-{run}-attempt-{ctx.attempt}").touch()
        step = params.script[min(run, len(params.script)) - 1]
        if step == "fail":
            raise RuntimeError(f"run {run} failed on purpose")
        if step == "nul":  # an error text with a NUL character, which PostgreSQL's text columns refuse
            raise RuntimeError(f"run {run} failed\x00with a NUL")
        if step == "kill":
            kill_own_agent()
