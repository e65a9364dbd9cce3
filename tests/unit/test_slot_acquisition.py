"""How a run asks Prefect for a host slot when the server answers 423 or 5xx (the client is faked;
tests/integration/test_limits.py covers the real server)."""

from __future__ import annotations

import logging
import uuid

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
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(limits.asyncio, "sleep", sleep)
    return waits


async def test_server_errors_are_retried_with_growing_delays(no_waiting, caplog):
    server = SlotServer(500, 503, 423, 500)
    with caplog.at_level(logging.WARNING):
        lease = await limits._acquire(server, "host:web-1", None, logging.getLogger("test"))  # type: ignore[arg-type]
    assert lease == server.lease and server.calls == 5
    assert no_waiting == [1.0, 2.0, 0.0, 4.0]  # a full host (423) waits as the server says
    assert sum("failed to grant a slot of host:web-1 (500)" in r.message for r in caplog.records) == 2


async def test_server_errors_give_up_after_the_retries():
    server = SlotServer(*[500] * (limits.SERVER_ERROR_RETRIES + 1))
    with pytest.raises(httpx.HTTPStatusError):
        await limits._acquire(server, "host:web-1", None, logging.getLogger("test"))  # type: ignore[arg-type]
    assert server.calls == limits.SERVER_ERROR_RETRIES + 1


async def test_a_client_error_is_not_retried():
    server = SlotServer(404)
    with pytest.raises(httpx.HTTPStatusError):
        await limits._acquire(server, "host:web-1", None, logging.getLogger("test"))  # type: ignore[arg-type]
    assert server.calls == 1
