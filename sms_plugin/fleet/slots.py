"""The host slots of a fleet run, asked for many hosts at a time.

Every host execution holds one slot of its host's limit (``host:<name>``, the host block's
``max_parallel_sessions``, shared with single runs and other fleet runs: :mod:`sms_plugin.limits`)
from before it connects until it has closed. One request per host is what made a fleet run slow,
so a fleet run asks for the slots of the hosts about to start together: the hosts that ask while a
request is under way go in the next one (at most :data:`GROUP_HOSTS`), under one lease that one
task renews. Prefect grants a request whole or not at all; when it refuses one (one of its hosts is
full), each host of it asks on its own and waits for its host as a single run does
(:func:`sms_plugin.limits.host_slot`). A lease holds the slots of its group until the last host
of the group has ended: a host's slot may be held up to that long after its own end, never
less than its execution::

    async with BulkSlots(client, holder) as slots:
        async with slots.held("web-01", 4, logger):
            ...  # connect, run, close
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Self

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import ConcurrencyLeaseHolder

from sms_plugin.limits import (
    LEASE_SECONDS,
    PREFECT_ERRORS,
    Full,
    Lease,
    acquire_many,
    host_limit_name,
    host_slot,
    renew_lease,
)

GROUP_HOSTS = 25
"""The most hosts whose slots one request asks for (and one lease holds)."""

Logger = logging.Logger | logging.LoggerAdapter


@dataclass(eq=False)
class _Group:
    """The hosts of one granted request: their lease is given back when the last has ended."""

    lease: Lease
    members: int
    renewal: asyncio.Task[None] | None = field(default=None)


class BulkSlots:
    """Grants the hosts of one run their slots, many per request (see the module)."""

    def __init__(self, client: PrefectClient, holder: ConcurrencyLeaseHolder | None, log: Logger) -> None:
        self.client = client
        self.holder = holder
        self.log = log
        self.requests = 0
        """How many requests for slots were made (for tests and benchmarks)."""
        self._waiting: list[tuple[str, asyncio.Future[_Group | None]]] = []
        self._asking: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Waits until every lease given back has been released (even if cancelled meanwhile)."""
        if self._asking is not None:
            self._asking.cancel()
        while self._releases:
            await asyncio.shield(asyncio.gather(*self._releases, return_exceptions=True))

    @asynccontextmanager
    async def held(self, host: str, limit: int, logger: Logger) -> AsyncIterator[None]:
        """Holds a slot of ``host``'s limit (made to be ``limit`` before the run) while inside."""
        future: asyncio.Future[_Group | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((host, future))
        if self._asking is None or self._asking.done():
            self._asking = asyncio.create_task(self._ask(), name="fleet host slots")
        try:
            group = await future  # cancelled while waiting: the future is cancelled, and left out
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.result() is not None:
                self._leave(future.result())  # granted just as its host was cancelled: not held
            raise
        if group is None:  # its request was refused: it asks on its own
            async with host_slot(host, limit, holder_id=self.holder.id if self.holder else None, logger=logger):
                yield
            return
        try:
            yield
        finally:
            self._leave(group)

    async def _ask(self) -> None:
        """Asks for the slots of the waiting hosts, :data:`GROUP_HOSTS` at a time, until none waits."""
        while self._waiting:
            batch, self._waiting = self._waiting[:GROUP_HOSTS], self._waiting[GROUP_HOSTS:]
            batch = [(host, future) for host, future in batch if not future.done()]
            if not batch:
                continue
            names = [host_limit_name(host) for host, _ in batch]
            self.requests += 1
            try:
                with PREFECT_ERRORS.boundary(f"taking slots of {len(names)} hosts"):
                    granted = await acquire_many(self.client, names, self.holder, self.log)
            except Exception as error:  # noqa: BLE001 - handed to each host that asked
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            if isinstance(granted, Full):
                self._answer(batch, None, set())
                continue
            group = _Group(Lease(sorted(granted.names), self.holder, granted.lease_id), members=0)
            self._answer(batch, group, granted.names)

    def _answer(self, batch: list[tuple[str, asyncio.Future[_Group | None]]], group: _Group | None,
                granted: set[str] | frozenset[str]) -> None:
        """Tells each host of ``batch`` its group, or to ask on its own (refused, or its limit is
        missing from the grant); a group no host is left to hold is given back at once."""
        for host, future in batch:
            if future.done():  # its host was cancelled while it waited
                continue
            if group is not None and host_limit_name(host) in granted:
                group.members += 1
                future.set_result(group)
            else:
                future.set_result(None)
        if group is None:
            return
        if group.members:
            group.renewal = asyncio.create_task(renew_lease(self.client, group.lease, self.log))
        else:
            self._release(group)

    def _leave(self, group: _Group) -> None:
        group.members -= 1
        if not group.members:
            self._release(group)

    def _release(self, group: _Group) -> None:
        if group.renewal is not None:
            group.renewal.cancel()
        task = asyncio.create_task(self._give_back(group.lease))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _give_back(self, lease: Lease) -> None:
        try:
            await self.client.release_concurrency_slots_with_lease(lease.id)
        except Exception as error:  # noqa: BLE001 - the lease expires by itself
            self.log.warning(f"could not release the slots of {len(lease.names)} hosts ({error}); "
                             f"they free themselves within {LEASE_SECONDS:g} s")
