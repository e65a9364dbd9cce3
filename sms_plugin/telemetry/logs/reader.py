"""Reading output lines back from Elasticsearch: one run (paged, any size, or followed live) and
searches across runs. The CLI, the SDK and the REST API call these functions.

Example::

    async for entry in run_output(run_id):
        print(entry.line, entry.stream, entry.message)
    async for entry in search("disk full", script="backup", since="1h"):
        print(entry.run_id, entry.message)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from elasticsearch import ApiError, Elasticsearch, TransportError

from sms_plugin.errors import InvalidInput, SMSError
from sms_plugin.telemetry.logs.documents import INDEX_PATTERN
from sms_plugin.telemetry.logs.elastic import connect, describe

PAGE = 5000
FOLLOW_POLL = 0.15
_SINCE = re.compile(r"^\d+[smhdw]$")
_RUN_ORDER = [{"sms.attempt": "asc"}, {"sms.line": "asc"}]
_NEWEST_FIRST = [{"@timestamp": "desc"}, {"sms.run_id": "desc"}, {"sms.attempt": "desc"}, {"sms.line": "desc"}]


@dataclass(frozen=True)
class LogEntry:
    """One output line as stored in Elasticsearch."""

    timestamp: datetime
    level: str
    """INFO (stdout) or WARNING (stderr), as in Prefect's run log."""
    message: str
    stream: str
    script: str
    version: int | None
    host: str
    run_id: str
    attempt: int
    line: int


async def run_output(
    run_id: str,
    *,
    follow: bool = False,
    ended: Callable[[], Awaitable[bool]] | None = None,
    poll: float = FOLLOW_POLL,
    client: Elasticsearch | None = None,
    host: str | None = None,
) -> AsyncIterator[LogEntry]:
    """Every output line of run ``run_id`` (on ``host`` only, if given) in order (attempt, then line
    number). With ``follow``, new lines as they arrive until ``ended()`` says the run is over."""
    client = client or connect()
    terms = [{"term": {"sms.run_id": run_id}}] + ([{"term": {"host.name": host}}] if host is not None else [])
    query = {"bool": {"filter": terms}}
    after: list[Any] | None = None
    while True:
        finished = not follow or ended is None or await ended()
        # Make lines delivered since the index's last refresh searchable now: a live tail sees
        # them within a second, the final page misses none (costs one small segment per poll).
        await asyncio.to_thread(_refresh, client)
        while hits := await asyncio.to_thread(_page, client, query, _RUN_ORDER, after, PAGE):
            for hit in hits:
                yield _entry(hit)
            after = hits[-1]["sort"]
        if finished:
            return
        await asyncio.sleep(poll)


async def search(
    text: str,
    *,
    script: str | None = None,
    run_id: str | None = None,
    since: str | None = None,
    limit: int = 100,
    client: Elasticsearch | None = None,
) -> AsyncIterator[LogEntry]:
    """Lines of any run matching ``text`` (simple query syntax: words, "phrases", -not, a|b,
    prefix*), newest first, at most ``limit``; ``since`` is a span like ``15m``, ``1h``, ``7d``."""
    if since is not None and not _SINCE.match(since):
        raise InvalidInput(f"--since {since!r}: use a number and a unit s, m, h, d or w (e.g. 1h)")
    if limit < 1:
        raise InvalidInput("the limit must be at least 1")
    filters: list[dict[str, Any]] = []
    if script:
        filters.append({"term": {"sms.script": script}})
    if run_id:
        filters.append({"term": {"sms.run_id": run_id}})
    if since:
        filters.append({"range": {"@timestamp": {"gte": f"now-{since}"}}})
    match = {"simple_query_string": {"query": text, "fields": ["message"], "default_operator": "and"}}
    query = {"bool": {"must": [match] if text.strip() else [], "filter": filters}}
    client = client or connect()
    after: list[Any] | None = None
    while limit > 0 and (hits := await asyncio.to_thread(_page, client, query, _NEWEST_FIRST, after, min(limit, PAGE))):
        for hit in hits:
            yield _entry(hit)
        limit -= len(hits)
        after = hits[-1]["sort"]


def _page(client: Elasticsearch, query: dict[str, Any], sort: list[Any], after: list[Any] | None, size: int) -> list[Any]:
    try:
        response = client.search(
            index=INDEX_PATTERN, query=query, sort=sort, size=size, search_after=after,
            track_total_hits=False, ignore_unavailable=True, allow_no_indices=True,
        )
    except (ApiError, TransportError) as error:
        raise SMSError(describe(error, "cannot read logs from Elasticsearch")) from error
    return list(response["hits"]["hits"])


def _refresh(client: Elasticsearch) -> None:
    try:
        client.indices.refresh(index=INDEX_PATTERN, ignore_unavailable=True, allow_no_indices=True)
    except (ApiError, TransportError) as error:
        raise SMSError(describe(error, "cannot read logs from Elasticsearch")) from error


def _entry(hit: dict[str, Any]) -> LogEntry:
    source = hit["_source"]
    sms = source["sms"]
    return LogEntry(
        timestamp=datetime.fromisoformat(source["@timestamp"]),
        level=source["log"]["level"].upper(),
        message=source["message"],
        stream=sms["stream"],
        script=sms["script"],
        version=sms.get("version"),
        host=source["host"]["name"],
        run_id=sms["run_id"],
        attempt=sms["attempt"],
        line=sms["line"],
    )
