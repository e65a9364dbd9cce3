"""A run's output as Server-Sent Events, followed live until the run ends (``GET /runs/{id}/output/stream``).

Events (docs/gateway.md#live-output)::

    id: 7
    event: line
    data: {"seq": 7, "stream": "stdout", "host": "web-01", "text": "copied 12 files"}

    event: state
    data: {"state": "COMPLETED", "exit_code": 0}

Lines come from the run's log as ``sms logs`` reads it (``runs.logs``: Elasticsearch when
configured, else Prefect's log API), a page at a time: the server holds one page whatever the
output's size, and a slow reader slows the reading (each event is sent before the next is read).
``host`` is the host that printed the line: the run's host, or for a fleet run the line's own host
where the log source records it (Elasticsearch), else empty. ``seq`` counts lines from 1; a client
resuming with ``Last-Event-ID: N`` gets the lines after the N-th.
The stream ends with the run's terminal ``state`` event, or an ``error`` event if the run's log
cannot be read. A closed connection cancels the stream, and with it the polling.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from prefect.exceptions import PrefectException

from sms_plugin import runs as run_services
from sms_plugin.catalog import Catalog
from sms_plugin.errors import SMSError

POLL_SECONDS = 0.5
STDERR_LEVELS = frozenset({"WARNING", "ERROR", "CRITICAL"})


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One Server-Sent Event (``data`` as one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def output_events(catalog: Catalog, run_id: str, hosts: list[str], after: int) -> AsyncIterator[bytes]:
    """The run's lines (on ``hosts``, the run's) after the ``after``-th, then its terminal state."""
    only = hosts[0] if len(hosts) == 1 else ""
    seq = after
    try:
        async for line in run_services.logs(run_id, follow=True, poll=POLL_SECONDS, offset=after):
            seq += 1
            stream = "stderr" if line.level in STDERR_LEVELS else "stdout"
            yield sse("line", {"seq": seq, "stream": stream, "host": line.host or only, "text": line.message}, seq)
        result = await run_services.result(catalog, run_id)
    except (SMSError, httpx.HTTPError, PrefectException) as error:
        yield sse("error", {"detail": f"cannot follow the run's output: {error}"})
        return
    yield sse("state", {"state": result.state, "exit_code": result.exit_code})
