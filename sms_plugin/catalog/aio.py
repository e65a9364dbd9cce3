"""The catalog for async code: each transaction runs in a thread of the catalog's own bounded pool.

An event loop shared by many runs (the sms worker) or requests (the gateway) must never wait for
the database: an SQLite writer may wait up to ``SQLITE_BUSY_SECONDS`` for another's lock, and
every run's output and every kill on that loop would wait with it. The facade runs the same
synchronous repository functions the CLI uses, so each query is written once::

    script = await catalog.aio.run(get_script, "hello")          # one transaction
    await catalog.aio.run(update_run, run_id, ended_at=now)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy.orm import Session

P = ParamSpec("P")
T = TypeVar("T")

CATALOG_THREADS = 8
"""Transactions of one process at once; the others queue without holding a thread or a connection
(below the default connection pool of 5 + 10 overflow, so a thread never waits for a connection)."""


class AsyncCatalog:
    """Awaitable transactions of ``transact`` (a catalog's ``transaction``: reach it as ``catalog.aio``;
    one pool per catalog). It knows only that callable, so the catalog depends on it, never the reverse."""

    def __init__(self, transact: Callable[..., Any], name: str, threads: int = CATALOG_THREADS) -> None:
        self._transact = transact
        self._name = name
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sms-catalog")

    def __repr__(self) -> str:
        return f"AsyncCatalog({self._name})"

    async def run(self, work: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``work(session, *args, **kwargs)`` in one transaction, committed when it returns and rolled
        back when it raises (its exception is raised here); run again when the database aborted it
        (``Catalog.transaction``). A caller cancelled while the transaction
        runs returns at once; the transaction still ends, committed or rolled back, in its thread."""
        transaction = functools.partial(self._transact, work, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, transaction)

    def close(self) -> None:
        """Stop the pool's threads once their transactions have ended."""
        self._pool.shutdown(wait=True)
