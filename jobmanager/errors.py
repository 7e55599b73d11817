"""The errors the service raises.

Every error a user can cause is a :class:`JobManagerError` whose message is one
readable line; the CLI prints it and exits with status 2, the dashboard shows it
in its message bar. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class JobManagerError(Exception):
    """Base of every error caused by what the user asked for."""

    #: the item of a call on many (``submit_many``) that was refused, counted from 0: the CLI names its line
    item: int | None = None


class HomeError(JobManagerError):
    """The home folder is missing, or its store is not a Job Manager database."""


class NotFound(JobManagerError):
    """A job, task, agent or artifact that does not exist."""


class InvalidState(JobManagerError):
    """An action that does not fit the current state (resume of a running job...)."""


class BadParams(JobManagerError):
    """Parameters that do not fit the job type, or an unknown job type."""


class PermissionDenied(JobManagerError):
    """The acting user may not do this."""


class Timeout(JobManagerError):
    """``wait`` gave up before the job finished."""


class NotVisible(NotFound, PermissionDenied):
    """A job the acting user may not see, or one that does not exist: one error and one message
    ("no job N you may see") for both, so a refusal never tells whether the job exists."""


class QueueNotReached(UserWarning):
    """The store committed (the job is safe) but the queue could not be written; an agent's sweep
    re-sends the messages from the store, so submitting again would make a duplicate."""
