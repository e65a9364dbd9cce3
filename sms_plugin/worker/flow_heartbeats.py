"""Prefect's flow-run heartbeats for every run of the sms worker, from one thread.

Prefect 3.9 sends a ``prefect.flow-run.heartbeat`` event for a running flow every
``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (default 180) from a thread of the run's own that
wakes every second. With 1,000 runs in one worker that is 1,000 threads taking the GIL a thousand
times a second: a fifth of the worker's samples in a py-spy profile of 200 sleeping runs.
:func:`send_heartbeats` (put in place of Prefect's ``_send_heartbeats`` by
:mod:`sms_plugin.worker.prefect_hooks`) registers the run with one emitter thread instead, which sends the same events at the same interval::

    with send_heartbeats(engine):   # what Prefect's engine does around the flow's body
        ...
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

TICK_SECONDS = 1.0
"""How often the emitter looks for runs whose heartbeat is due."""

_log = logging.getLogger(__name__)


@dataclass
class _Beating:
    engine: Any  # Prefect's flow run engine (private class)
    context: contextvars.Context  # the run's settings (API URL) for the events client
    resource: dict[str, str]
    related: list[Any]
    seconds: float
    due: float


class _Emitter:
    """Sends the heartbeats of the registered runs when they are due."""

    def __init__(self) -> None:
        self._runs: dict[int, _Beating] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, beating: _Beating) -> None:
        with self._lock:
            self._runs[id(beating.engine)] = beating
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="sms-flow-heartbeats", daemon=True)
                self._thread.start()

    def remove(self, engine: Any) -> None:
        with self._lock:
            self._runs.pop(id(engine), None)

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                due = [b for b in self._runs.values() if b.due <= now]
            for beating in due:
                beating.due = now + beating.seconds
                state = beating.engine.flow_run.state if beating.engine.flow_run else None
                if state is not None and state.is_final():
                    continue
                try:
                    beating.context.run(beating.engine._emit_flow_run_heartbeat, beating.resource, beating.related)
                except Exception:  # noqa: BLE001 - as Prefect's own loop: a lost heartbeat is logged
                    _log.debug("failed to emit a flow run heartbeat", exc_info=True)
            time.sleep(TICK_SECONDS)


_EMITTER = _Emitter()


@contextlib.contextmanager
def send_heartbeats(engine: Any, join_on_exit: bool = True) -> Iterator[None]:  # noqa: ARG001 - Prefect's signature
    """Heartbeats for ``engine``'s flow run while the block runs (none if Prefect's are off)."""
    seconds = engine.heartbeat_seconds
    if seconds is None:
        yield
        return
    resource, related = engine._build_heartbeat_event_template()
    _EMITTER.add(_Beating(engine, contextvars.copy_context(), resource, related, float(seconds), time.monotonic()))
    try:
        yield
    finally:
        _EMITTER.remove(engine)


def one_thread_for_all_runs(_prefect_send_heartbeats: object) -> object:
    """Prefect's ``_send_heartbeats`` replaced by :func:`send_heartbeats`."""
    return send_heartbeats
