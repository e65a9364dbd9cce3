"""How a run asks Prefect for a host slot when the server answers 423 or 5xx (the client is faked;
tests/integration/test_limits.py covers the real server)."""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import Coroutine
from typing import Any

import httpx
import pytest

from sms_plugin import limits


class SlotServer:
    """Answers increment requests with the given status codes, then grants a lease."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.calls = 0
        self.lease = uuid.uuid4()

    async def increment_concurrency_slots_with_lease(self, **_: object) -> httpx.Response:
        self.calls += 1
        request = httpx.Request("POST", "http://prefect.test/api/v2/concurrency_limits/increment-with-lease")
        if self.statuses:
            response = httpx.Response(self.statuses.pop(0), headers={"Retry-After": "0"}, request=request)
            raise httpx.HTTPStatusError("refused", request=request, response=response)
        return httpx.Response(200, json={"limits": [{"name": "host:web-1"}], "lease_id": str(self.lease)}, request=request)


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Records the waits `limits` asks for and skips them; any other caller of asyncio.sleep (a
    background thread's loop left by an earlier test) sleeps for real, so it cannot spin here."""
    waits: list[float] = []
    real_sleep = asyncio.sleep

    def sleep(seconds: float) -> Coroutine[Any, Any, None]:
        if sys._getframe(1).f_globals.get("__name__") != limits.__name__:
            return real_sleep(seconds)
        waits.append(seconds)
        return real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return waits


async def test_server_errors_are_retried_with_growing_delays(no_waiting, caplog):
    server = SlotServer(500, 503, 423, 500)
    with caplog.at_level(logging.WARNING):
        lease = await limits._acquire(server, ["host:web-1"], None, logging.getLogger("test"))  # type: ignore[arg-type]
    assert lease == server.lease and server.calls == 5
    assert no_waiting == [1.0, 2.0, 0.0, 4.0]  # a full host (423) waits as the server says
    assert sum("failed to grant a slot of host:web-1 (500)" in r.message for r in caplog.records) == 2


async def test_server_errors_give_up_after_the_retries():
    server = SlotServer(*[500] * (limits.SERVER_ERROR_RETRIES + 1))
    with pytest.raises(httpx.HTTPStatusError):
        await limits._acquire(server, ["host:web-1"], None, logging.getLogger("test"))  # type: ignore[arg-type]
    assert server.calls == limits.SERVER_ERROR_RETRIES + 1


async def test_a_client_error_is_not_retried():
    server = SlotServer(404)
    with pytest.raises(httpx.HTTPStatusError):
        await limits._acquire(server, ["host:web-1"], None, logging.getLogger("test"))  # type: ignore[arg-type]
    assert server.calls == 1


class DroppingServer(SlotServer):
    """Has dropped the run's lease (a late renewal): renewing answers 410 Gone once."""

    def __init__(self) -> None:
        super().__init__()
        self.renewals = 0

    async def renew_concurrency_lease(self, lease_id: uuid.UUID, lease_duration: float) -> httpx.Response:
        self.renewals += 1
        if self.renewals > 1:
            raise asyncio.CancelledError  # ends the renewal loop of this test
        request = httpx.Request("POST", f"http://prefect.test/api/v2/concurrency_limits/leases/{lease_id}/renew")
        raise httpx.HTTPStatusError("gone", request=request, response=httpx.Response(410, request=request))


async def test_a_dropped_lease_is_replaced_by_a_new_slot(caplog):
    server = DroppingServer()
    lease = limits.Lease(["host:web-1"], None, uuid.uuid4())
    with caplog.at_level(logging.WARNING), pytest.raises(asyncio.CancelledError):
        await limits.renew_lease(server, lease, logging.getLogger("test"))  # type: ignore[arg-type]
    assert lease.id == server.lease and server.calls == 1  # released at the end with the new id
    assert any("dropped host slot lease" in r.message for r in caplog.records)
