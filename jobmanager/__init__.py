"""Job Manager: run, watch and fix background jobs from notebooks, a dashboard and a CLI."""

__version__ = "0.1.0"

from jobmanager.engine.context import Cancelled, TaskContext, TimeLimitExceeded  # noqa: E402
from jobmanager.errors import (  # noqa: E402
    BadParams,
    HomeError,
    InvalidState,
    JobManagerError,
    NotFound,
    PermissionDenied,
    Timeout,
)
from jobmanager.jobtypes import JobType, job_type  # noqa: E402
from jobmanager.models import Job, NewTask, Task  # noqa: E402
from jobmanager.service import JobManager  # noqa: E402

__all__ = [
    "BadParams", "Cancelled", "HomeError", "InvalidState", "Job", "JobManager", "JobManagerError", "JobType",
    "NewTask", "NotFound", "PermissionDenied", "Task", "TaskContext", "TimeLimitExceeded", "Timeout", "job_type",
]
