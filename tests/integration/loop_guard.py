"""A guard that no synchronous catalog statement runs on an event loop's thread: async code
reaches the catalog through ``catalog.aio`` (a pool of threads of its own). Import the fixture
into a test module to police every loop but the tests' own (the gateway's, a flow's run loop)::

    from tests.integration.loop_guard import catalog_off_loops  # noqa: F401 - fixture
    pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("catalog_off_loops")]
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event


class BlockingCatalogCall(AssertionError):
    """A catalog statement ran on the thread of a running event loop."""


class LoopGuard:
    """Raises BlockingCatalogCall in the offender and keeps a list of what it caught."""

    def __init__(self) -> None:
        self.caught: list[str] = []

    def check(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        thread = threading.current_thread()
        if thread is threading.main_thread():
            return  # the tests' own loop: a test body may read the catalog directly
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a thread without a loop (the catalog's pool, Starlette's thread pool): fine
        offence = f"thread {thread.name!r} ran {statement.split()[0]} on its event loop"
        self.caught.append(offence)
        raise BlockingCatalogCall(offence)


@contextmanager
def guarding() -> Iterator[LoopGuard]:
    """Police every engine (existing and new) while the block runs."""
    guard = LoopGuard()
    event.listen(Engine, "before_cursor_execute", guard.check)
    try:
        yield guard
    finally:
        event.remove(Engine, "before_cursor_execute", guard.check)


@pytest.fixture
def catalog_off_loops() -> Iterator[LoopGuard]:
    """The test fails if any catalog statement ran on a loop other than the tests' own."""
    with guarding() as guard:
        yield guard
    assert guard.caught == [], f"synchronous catalog calls on an event loop: {guard.caught}"
