"""Batch systems (PanDA and its embedded stand-in): the task-status vocabulary they share.

PanDA/JEDI task states are the contract: a task is over once its status is terminal; it
succeeded when that status is ``done`` (all jobs) or ``finished`` (as JEDI reports a task whose
jobs ended, possibly partially).
"""

from __future__ import annotations

SUBMITTED = "submitted"
RUNNING = "running"
FINISHED = "finished"
DONE = "done"
FAILED = "failed"
UNKNOWN = "unknown"  # the batch system could not tell (unreachable, no such task)

# "broken" is JEDI's terminal state for a task that could not even start (e.g. bad input).
TERMINAL_STATES = frozenset({"done", "finished", "failed", "aborted", "cancelled", "closed",
                             "broken"})
SUCCESS_STATES = frozenset({"done", "finished"})


def is_terminal(status: str | None) -> bool:
    return status in TERMINAL_STATES


def succeeded(status: str | None) -> bool:
    return status in SUCCESS_STATES
