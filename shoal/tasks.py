"""asyncio tasks whose end nobody may wait for."""

from __future__ import annotations

import asyncio
from typing import Any


def read_outcome(task: asyncio.Future[Any]) -> None:
    """A done-callback that reads a task's failure, so that asyncio does not log it as
    "Task exception was never retrieved" (with its traceback) once nobody waits for it."""
    if not task.cancelled():
        task.exception()


def let_go(task: asyncio.Future[Any]) -> None:
    """A task no longer wanted: cancelled, and its outcome read whenever it ends. A task
    can still fail after ``cancel()`` when the cancellation is lost on its way (3.11's
    ``wait_for`` can lose one): flash-32's agent logs held 45 such tracebacks over 12
    runs, each for an edge probe given up."""
    task.cancel()
    task.add_done_callback(read_outcome)
