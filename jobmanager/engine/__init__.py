"""The engine: job and task states and their transitions, the agent (a Huey consumer with heartbeats),
the runner of one task, the task context, and the queue backends (SQLite, Redis)."""
