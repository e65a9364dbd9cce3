"""Prefect's flow engine made fit for hundreds of runs in one process: SMS's replacements of private
Prefect functions, applied by the sms worker through :mod:`sms_plugin.worker.prefect_hooks`.

Cancelled, not Crashed: Prefect's engine ends a run Cancelled (through Cancelling, running its ``on_cancellation`` hooks)
when the run is interrupted while the process-wide "cancel intent" is set; otherwise an
interrupted run is Crashed. That flag belongs to the whole process, while the sms worker cancels
one run among hundreds. The replaced ``_termination_intent`` asks the *run's own* intent first: every
run task carries a :class:`RunControl` in a context variable, and :meth:`RunControl.cancel`
marks it before the task is cancelled.

No suspension observer per run: for every run of a deployment the engine starts a thread with its
own event loop and websocket, waits for it synchronously and polls it every 0.2 s, to notice a
``suspend_flow_run`` request. The run-script flow never suspends; in the sms worker that observer
would cost a thread, a connection and a blocked run loop per run, so it is turned off.

Prefect's flow-run heartbeats come from one thread for all runs, not a thread per run
(:mod:`sms_plugin.worker.flow_heartbeats`).

The server's default result storage is read once a minute, not once or more per run (Prefect reads
it while setting up each run, through its async or its synchronous client; the synchronous read
stops every other run of the loop for a round trip). And every Prefect client (several per run) loads the CA
bundle into a fresh SSL context (tens of ms of CPU each); the worker's clients share one context
per CA file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import ModuleType
from uuid import UUID

RESULT_STORAGE_CACHE_SECONDS = 60.0

_CONTROL: ContextVar[RunControl | None] = ContextVar("sms_run_control", default=None)
_result_storage: tuple[float, UUID | None] | None = None


@dataclass
class RunControl:
    """The handle of one run's task: cancel it so that Prefect ends the run Cancelled."""

    task: asyncio.Task[object] | None = None
    cancel_requested: bool = field(default=False)
    on_started: Callable[[], None] | None = None
    """Called (in the run's loop) once the run's script runs on its host."""

    def bind(self) -> None:
        """Called inside the run's task: this task's interruptions are this run's."""
        self.task = asyncio.current_task()
        _CONTROL.set(self)

    def cancel(self) -> None:
        """Cancels the run's task (call it in the task's loop); the engine then ends it Cancelled."""
        self.cancel_requested = True
        if self.task is not None:
            self.task.cancel("the run was cancelled in Prefect")


def script_started() -> None:
    """Tells the sms worker running this run that its script now runs on its host (a no-op in a
    process of its own)."""
    control = _CONTROL.get()
    if control is not None and control.on_started is not None:
        control.on_started()


def in_shared_process() -> bool:
    """True inside a run executed by an sms worker (many runs share the process)."""
    return _CONTROL.get() is not None


# The replacements below take Prefect's object and return SMS's (sms_plugin.worker.prefect_hooks).


def per_run_termination_intent(process_intent: Callable[[], str | None]) -> Callable[[], str | None]:
    """Prefect's ``_termination_intent``, asking the current run's own intent first."""

    def termination_intent() -> str | None:
        control = _CONTROL.get()
        if control is not None and control.cancel_requested:
            return "cancel"
        return process_intent()

    return termination_intent


@contextlib.contextmanager
def _no_suspension_observer(*_args: object, **_kwargs: object) -> Iterator[None]:
    yield


def no_suspension_observer(_prefect_observer: object) -> Callable[..., contextlib.AbstractContextManager[None]]:
    """Prefect's ``observe_flow_run_suspension`` replaced by a context that observes nothing."""
    return _no_suspension_observer


def _result_storage_is_stale() -> bool:
    return _result_storage is None or time.monotonic() - _result_storage[0] > RESULT_STORAGE_CACHE_SECONDS


def cached_result_storage_id(read: Callable[[], UUID | None]) -> Callable[[], UUID | None]:
    """Prefect's synchronous read of the server's default result storage, at most once a minute."""

    def cached() -> UUID | None:
        global _result_storage
        if _result_storage_is_stale():
            _result_storage = (time.monotonic(), read())
        return _result_storage[1]  # type: ignore[index]

    return cached


def acached_result_storage_id(aread: Callable[[], Awaitable[UUID | None]]) -> Callable[[], Awaitable[UUID | None]]:
    """Prefect's asynchronous read of the server's default result storage, at most once a minute
    (sharing the synchronous read's cache)."""

    async def cached() -> UUID | None:
        global _result_storage
        if _result_storage_is_stale():
            _result_storage = (time.monotonic(), await aread())
        return _result_storage[1]  # type: ignore[index]

    return cached


class _SharedSSLContexts:
    """The ``ssl`` module as Prefect's client module sees it: one default context per CA file."""

    def __getattr__(self, name: str) -> object:
        return getattr(ssl, name)

    @staticmethod
    @functools.cache
    def create_default_context(purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH, *, cafile: str | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(purpose, cafile=cafile)


def shared_ssl_contexts(_ssl_module: ModuleType) -> _SharedSSLContexts:
    """The ``ssl`` module of Prefect's client module replaced by one sharing its default contexts."""
    return _SharedSSLContexts()
