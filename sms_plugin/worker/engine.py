"""Prefect's flow engine made fit for hundreds of runs in one process (installed by the sms worker).

Cancelled, not Crashed: Prefect's engine ends a run Cancelled (through Cancelling, running its ``on_cancellation`` hooks)
when the run is interrupted while the process-wide "cancel intent" is set; otherwise an
interrupted run is Crashed. That flag belongs to the whole process, while the sms worker cancels
one run among hundreds. :func:`install` makes the engine ask the *run's own* intent first: every
run task carries a :class:`RunControl` in a context variable, and :meth:`RunControl.cancel`
marks it before the task is cancelled.

No suspension observer per run: for every run of a deployment the engine starts a thread with its
own event loop and websocket, waits for it synchronously and polls it every 0.2 s, to notice a
``suspend_flow_run`` request. The run-script flow never suspends; in the sms worker that observer
would cost a thread, a connection and a blocked run loop per run, so :func:`install` turns it off.

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
from collections.abc import Callable, Iterator
import time
from contextvars import ContextVar
from uuid import UUID
from dataclasses import dataclass, field

import prefect.client.orchestration
import prefect.flow_engine
import prefect.results

from sms_plugin.worker import flow_heartbeats, log_delivery

RESULT_STORAGE_CACHE_SECONDS = 60.0

_CONTROL: ContextVar[RunControl | None] = ContextVar("sms_run_control", default=None)
_process_intent = prefect.flow_engine._termination_intent
_read_result_storage_id = prefect.results._read_server_default_result_storage_block_id
_aread_result_storage_id = prefect.results._aread_server_default_result_storage_block_id
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


def _termination_intent() -> str | None:
    control = _CONTROL.get()
    if control is not None and control.cancel_requested:
        return "cancel"
    return _process_intent()


@contextlib.contextmanager
def _no_suspension_observer(*_args: object, **_kwargs: object) -> Iterator[None]:
    yield


def _result_storage_is_stale() -> bool:
    return _result_storage is None or time.monotonic() - _result_storage[0] > RESULT_STORAGE_CACHE_SECONDS


def _cached_result_storage_id() -> UUID | None:
    global _result_storage
    if _result_storage_is_stale():
        _result_storage = (time.monotonic(), _read_result_storage_id())
    return _result_storage[1]  # type: ignore[index]


async def _acached_result_storage_id() -> UUID | None:
    global _result_storage
    if _result_storage_is_stale():
        _result_storage = (time.monotonic(), await _aread_result_storage_id())
    return _result_storage[1]  # type: ignore[index]


class _SharedSSLContexts:
    """The ``ssl`` module as Prefect's client module sees it: one default context per CA file."""

    def __getattr__(self, name: str) -> object:
        return getattr(ssl, name)

    @staticmethod
    @functools.cache
    def create_default_context(purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH, *, cafile: str | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(purpose, cafile=cafile)


def install() -> None:
    """Per-run cancel intents, no per-run suspension observer, one heartbeat thread for all
    runs, cached result storage and SSL contexts, counted log delivery (idempotent)."""
    prefect.flow_engine._termination_intent = _termination_intent
    prefect.flow_engine.observe_flow_run_suspension = _no_suspension_observer
    prefect.flow_engine._send_heartbeats = flow_heartbeats.send_heartbeats
    prefect.results._read_server_default_result_storage_block_id = _cached_result_storage_id
    prefect.results._aread_server_default_result_storage_block_id = _acached_result_storage_id
    log_delivery.install()
    prefect.client.orchestration.ssl = _SharedSSLContexts()  # type: ignore[assignment]
