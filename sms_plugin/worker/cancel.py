"""Cancelled, not Crashed: one run of many in a process is cancelled as Prefect cancels a run.

Prefect's engine ends a run Cancelled (through Cancelling, running its ``on_cancellation`` hooks)
when the run is interrupted while the process-wide "cancel intent" is set; otherwise an
interrupted run is Crashed. That flag belongs to the whole process, while the sms worker cancels
one run among hundreds. :func:`install` makes the engine ask the *run's own* intent first: every
run task carries a :class:`RunControl` in a context variable, and :meth:`RunControl.cancel`
marks it before the task is cancelled.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass, field

import prefect.flow_engine

_CONTROL: ContextVar[RunControl | None] = ContextVar("sms_run_control", default=None)
_process_intent = prefect.flow_engine._termination_intent


@dataclass
class RunControl:
    """The handle of one run's task: cancel it so that Prefect ends the run Cancelled."""

    task: asyncio.Task[object] | None = None
    cancel_requested: bool = field(default=False)

    def bind(self) -> None:
        """Called inside the run's task: this task's interruptions are this run's."""
        self.task = asyncio.current_task()
        _CONTROL.set(self)

    def cancel(self) -> None:
        """Cancels the run's task (call it in the task's loop); the engine then ends it Cancelled."""
        self.cancel_requested = True
        if self.task is not None:
            self.task.cancel("the run was cancelled in Prefect")


def _termination_intent() -> str | None:
    control = _CONTROL.get()
    if control is not None and control.cancel_requested:
        return "cancel"
    return _process_intent()


def install() -> None:
    """Makes Prefect's engine honour per-run cancel intents (idempotent)."""
    prefect.flow_engine._termination_intent = _termination_intent
