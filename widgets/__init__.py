"""The Job Manager's ipywidgets UI, importable as ``jobmanager.widgets``.

>>> from jobmanager.widgets import JobManagerApp
>>> JobManagerApp("~/jobs")            # sign in, then four tabs
>>> JobManagerApp("~/jobs", user="ana")  # in your own kernel: no sign-in
"""

from .app import Dashboard, JobManagerApp, SignIn

__all__ = ["Dashboard", "JobManagerApp", "SignIn"]
