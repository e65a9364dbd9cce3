"""Per-host concurrency: at most ``max_parallel_sessions`` scripts run on a host at once.

Each host has a Prefect global concurrency limit named ``host:<host name>`` whose limit is the
host block's ``max_parallel_sessions``. A run holds one slot of it from before the transport is
opened until the transport is closed::

    async with host_slot("web-01", host_block.max_parallel_sessions, holder_id=flow_run.id):
        transport = await host_block.open_transport()
        ...

The limit is created or updated when a host is added (:func:`ensure_host_limit`) and again by
every run before it asks for a slot, so a block edited in the Prefect UI is honoured by the next
run. Slots are *leases*: the run renews its lease every 45 s (a task of the run's event loop),
releases it when the script ends, is stopped or fails, and a run whose process dies
without releasing (SIGKILL, lost machine) loses its slot when the lease expires: at most
:data:`LEASE_SECONDS` after the last renewal, plus the server's lease reaper interval (15 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import (
    ConcurrencyLeaseHolder,
    ConcurrencyLimitConfig,
    ConcurrencyLimitStrategy,
    StateType,
)
from prefect.client.schemas.sorting import FlowRunSort
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from sms_plugin.errors import Conflict, ErrorMap, ServiceError, SMSError

PREFIX = "host:"
LEASE_SECONDS = 60.0
"""How long a slot outlives its run's last renewal; 60 s is the shortest lease Prefect accepts."""
MAX_RETRY_SECONDS = 30.0
"""A run waiting for a full host asks again at the interval the server suggests, at most this."""
SERVER_ERROR_RETRIES = 8
"""How often a run asks again for a slot after the server answered 5xx (about 2 minutes in all)."""
WAIT_NOTICE_SECONDS = 0.5
"""A slot not granted within this time means the host is full: the run says it is waiting."""

_log = logging.getLogger(__name__)

PREFECT_ERRORS = ErrorMap(
    (httpx.HTTPStatusError, lambda error, what: ServiceError(
        f"{what}: the Prefect API answered {error.response.status_code} ({error.response.text[:200] or 'no detail'})"
    )),
    (httpx.HTTPError, lambda error, what: ServiceError(f"{what}: cannot reach the Prefect API ({error or type(error).__name__})")),
)
"""This module's one error table: what the Prefect client raises, as ServiceError."""


def host_limit_name(host: str) -> str:
    """The name of host ``host``'s global concurrency limit, e.g. ``host:web-01``."""
    return f"{PREFIX}{host}"


async def ensure_host_limit(host: str, limit: int) -> GlobalConcurrencyLimitResponse:
    """Creates host ``host``'s limit with ``limit`` slots, or updates it when it differs (also
    re-activates it and removes any slot decay, which would let slots vanish under a running
    script). Returns the limit as it is now."""
    name = host_limit_name(host)
    with PREFECT_ERRORS.boundary(f"setting the limit {name}"):
        async with get_client() as client:
            try:
                current = await client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    await client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=0.0)
                    )
                except ObjectAlreadyExists:  # another run created it meanwhile
                    pass
                return await _matching(client, name, limit)
            if current.limit == limit and current.active and not current.slot_decay_per_second:
                return current
            return await _matching(client, name, limit)


LIMITS_PAGE = 200
"""Limits read per request (the Prefect API's largest page)."""


LIMITS_AT_ONCE = 16
"""Missing or differing limits :func:`ensure_host_limits` creates or corrects at once."""


async def ensure_host_limits(limits: Mapping[str, int]) -> None:
    """:func:`ensure_host_limit` for many hosts (host name → slots) at the cost of reading every
    limit page by page: a missing limit then costs one request (its creation), a differing one
    :func:`ensure_host_limit`'s few, :data:`LIMITS_AT_ONCE` at a time."""
    with PREFECT_ERRORS.boundary(f"setting the limits of {len(limits)} hosts"):
        async with get_client() as client:
            current: dict[str, GlobalConcurrencyLimitResponse] = {}
            while page := await client.read_global_concurrency_limits(limit=LIMITS_PAGE, offset=len(current)):
                current.update((limit.name, limit) for limit in page)
                if len(page) < LIMITS_PAGE:
                    break
            turns = asyncio.Semaphore(LIMITS_AT_ONCE)

            async def ensure(host: str, limit: int) -> None:
                async with turns:
                    existing = current.get(host_limit_name(host))
                    if existing is None:
                        try:
                            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(
                                name=host_limit_name(host), limit=limit, slot_decay_per_second=0.0))
                            return
                        except ObjectAlreadyExists:  # created meanwhile: made to match below
                            pass
                    elif existing.limit == limit and existing.active and not existing.slot_decay_per_second:
                        return
                    await ensure_host_limit(host, limit)

            await asyncio.gather(*(ensure(host, limit) for host, limit in limits.items()))


async def _matching(client, name: str, limit: int) -> GlobalConcurrencyLimitResponse:
    current = await client.read_global_concurrency_limit_by_name(name)
    if current.limit != limit or not current.active or current.slot_decay_per_second:
        await client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(limit=limit, active=True, slot_decay_per_second=0.0)
        )
        current = await client.read_global_concurrency_limit_by_name(name)
    return current


@asynccontextmanager
async def host_slot(
    host: str,
    limit: int,
    *,
    holder_id: UUID | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> AsyncIterator[float]:
    """Holds one slot of host ``host``'s limit (made to be ``limit`` first) while the block runs;
    yields the seconds spent waiting for it. A run that has not got its slot after
    :data:`WAIT_NOTICE_SECONDS` logs once "waiting for a free slot on host X (limit N)" and
    waits as long as it takes (Prefect retries at the interval its server suggests, at most 30 s)."""
    log = logger or _log
    await ensure_host_limit(host, limit)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=holder_id) if holder_id else None
    began = time.monotonic()
    announced = False

    async def announce() -> None:
        nonlocal announced
        await asyncio.sleep(WAIT_NOTICE_SECONDS)
        announced = True
        log.info(f"waiting for a free slot on host {host} (limit {limit})")

    notice = asyncio.create_task(announce())
    try:
        async with _leased_slot(host_limit_name(host), holder, log):
            notice.cancel()
            waited = time.monotonic() - began
            if announced:
                log.info(f"got a slot on host {host} after {waited:.1f} s")
            yield waited
    finally:
        notice.cancel()


@asynccontextmanager
async def _leased_slot(
    name: str, holder: ConcurrencyLeaseHolder | None, log: logging.Logger | logging.LoggerAdapter
) -> AsyncIterator[None]:
    """One slot of limit ``name`` under a lease renewed by a task of this event loop.

    Prefect's ``concurrency()`` does the same with a thread per lease and one acquisition at a time
    per process and limit; an sms worker starting hundreds of runs on one host needs neither."""
    async with get_client() as client:
        with PREFECT_ERRORS.boundary(f"taking a slot of {name}"):
            lease = Lease([name], holder, await _acquire(client, [name], holder, log))
        renewal = asyncio.create_task(renew_lease(client, lease, log))
        try:
            yield
        finally:
            renewal.cancel()
            try:
                await asyncio.shield(client.release_concurrency_slots_with_lease(lease.id))
            except Exception as error:  # noqa: BLE001 - the lease expires by itself
                log.warning(f"could not release the slot of {name} ({error}); it frees itself within {LEASE_SECONDS:g} s")


async def _acquire(
    client: PrefectClient, names: list[str], holder: ConcurrencyLeaseHolder | None,
    log: logging.Logger | logging.LoggerAdapter,
) -> UUID:
    """Takes a slot of each limit ``names`` under one lease, waiting as long as one is full (the
    server says how long to wait); server errors are retried as :func:`acquire_many` says. The
    caller maps what the client raises at last."""
    failures = 0
    while True:
        try:
            granted = await _increment(client, names, holder)
        except httpx.HTTPStatusError as error:
            failures = await _after_server_error(error, failures, names, log)
            continue
        if isinstance(granted, Full):
            await asyncio.sleep(min(granted.retry_after, MAX_RETRY_SECONDS))
            continue
        if missing := sorted(set(names) - granted.names):
            await client.release_concurrency_slots_with_lease(granted.lease_id)
            raise SMSError(f"the concurrency limit(s) {', '.join(missing)} do not exist")
        return granted.lease_id


@dataclass(frozen=True)
class Granted:
    """Slots taken under one lease: ``names`` are the limits it holds (an inactive or missing
    limit is left out by the server)."""

    lease_id: UUID
    names: frozenset[str]


@dataclass(frozen=True)
class Full:
    """A limit asked for was full: nothing was taken; ask again after ``retry_after`` seconds."""

    retry_after: float


async def acquire_many(
    client: PrefectClient, names: list[str], holder: ConcurrencyLeaseHolder | None,
    log: logging.Logger | logging.LoggerAdapter,
) -> Granted | Full:
    """One slot of each limit in ``names`` under one lease, all or none (Prefect grants a request
    whole or not at all); the caller maps what the client raises at last.

    A server error (5xx) is retried, after 1, 2, 4 … s (at most :data:`MAX_RETRY_SECONDS`),
    at most :data:`SERVER_ERROR_RETRIES` times: an overloaded Prefect server times out on the
    limit's row, which every run of the host updates, and the transaction is rolled back."""
    failures = 0
    while True:
        try:
            return await _increment(client, names, holder)
        except httpx.HTTPStatusError as error:
            failures = await _after_server_error(error, failures, names, log)


async def _increment(client: PrefectClient, names: list[str], holder: ConcurrencyLeaseHolder | None) -> Granted | Full:
    """One request for a slot of each limit ``names``; Full on 423, other errors raised."""
    try:
        response = await client.increment_concurrency_slots_with_lease(
            names=names, slots=1, mode="concurrency", lease_duration=LEASE_SECONDS, holder=holder
        )
    except httpx.HTTPStatusError as error:
        if error.response.status_code == 423:
            return Full(float(error.response.headers.get("Retry-After", 1)))
        raise
    body = response.json()
    return Granted(UUID(body["lease_id"]), frozenset(limit["name"] for limit in body.get("limits") or []))


async def _after_server_error(
    error: httpx.HTTPStatusError, failures: int, names: list[str], log: logging.Logger | logging.LoggerAdapter
) -> int:
    """Waits before asking again after a server error (the ``failures``-th so far), and returns
    the new count; raises ``error`` for a client error or once the retries are spent."""
    status = error.response.status_code
    if status < 500 or failures >= SERVER_ERROR_RETRIES:
        raise error
    delay = min(2.0**failures, MAX_RETRY_SECONDS)
    log.warning(f"the Prefect server failed to grant {_slots_of(names)} ({status}); asking again in {delay:g} s")
    await asyncio.sleep(delay)
    return failures + 1


def _slots_of(names: list[str]) -> str:
    """``a slot of host:web-1``, or ``slots of 20 limits (host:web-1, ...)``."""
    return f"a slot of {names[0]}" if len(names) == 1 else f"slots of {len(names)} limits ({names[0]}, ...)"


@dataclass
class Lease:
    """The lease a run holds on a slot of each limit ``names`` (a new one if the server dropped it)."""

    names: list[str]
    holder: ConcurrencyLeaseHolder | None
    id: UUID


async def renew_lease(client: PrefectClient, lease: Lease, log: logging.Logger | logging.LoggerAdapter) -> None:
    """Renews the lease at 3/4 of its duration; a failed renewal (e.g. the server restarting) is
    logged and retried, never stops the script. A lease the server has already dropped (410 Gone:
    a renewal came too late, e.g. from an overloaded server) is replaced by a new slot."""
    while True:
        await asyncio.sleep(LEASE_SECONDS * 0.75)
        try:
            await client.renew_concurrency_lease(lease.id, lease_duration=LEASE_SECONDS)
        except httpx.HTTPStatusError as error:
            if error.response.status_code != 410:
                log.warning(f"could not renew the host slot lease {lease.id}: {error}")
                continue
            log.warning(f"the Prefect server dropped host slot lease {lease.id}; taking {_slots_of(lease.names)} again")
            lease.id = await _acquire(client, lease.names, lease.holder, log)
        except Exception as error:  # noqa: BLE001
            log.warning(f"could not renew the host slot lease {lease.id}: {error}")


# ------------------------------------------------------------------ single-instance scripts

#: single_instance → the collision strategy of Prefect's deployment concurrency (limit 1):
#: "queue" makes a second run wait (Prefect reschedules it as Scheduled/AwaitingConcurrencySlot
#: until the first has ended), "reject" ends it at once as Cancelled with the message
#: "Deployment concurrency limit reached.". Schedules, the Prefect UI and the API obey it alike.
_COLLISION = {"queue": ConcurrencyLimitStrategy.ENQUEUE, "reject": ConcurrencyLimitStrategy.CANCEL_NEW}
REJECTED_MESSAGE = "Deployment concurrency limit reached."
"""The message of the Cancelled state Prefect gives a run refused by "reject"."""


def deployment_concurrency(single_instance: str) -> ConcurrencyLimitConfig | None:
    """The ``concurrency_limit`` of a script's deployment: None for "off" (parallel runs)."""
    if single_instance not in _COLLISION:
        return None
    return ConcurrencyLimitConfig(limit=1, collision_strategy=_COLLISION[single_instance])


_BUSY = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]


async def refuse_second_run(client: PrefectClient, script: str, deployment_id: UUID) -> None:
    """For a "reject" script: Conflict if a run of its deployment is Pending, Running or
    Cancelling, so that the CLI and SDK say why at once (Prefect itself would cancel the new run)."""
    with PREFECT_ERRORS.boundary(f"looking for runs of {script}"):
        busy = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_BUSY))),
            sort=FlowRunSort.START_TIME_ASC,
            limit=1,
        )
    if busy:
        run = busy[0]
        state = run.state.name if run.state else "active"
        raise Conflict(
            f"script {script} allows one run at a time and run {run.id} is still {state}; stop it or wait"
        )
