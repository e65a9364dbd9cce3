"""Full-text search over script output in Elasticsearch, cut to the runs the caller may read.

A caller whom no access rule narrows for ``read`` searches everything. For a narrowed caller, the
(script, host) pairs matching the search are listed first (a composite aggregation), each is judged
like a run of that script on that host, and the search then runs on the readable pairs only: the
total and the hits never count a line the caller may not read.

Example::

    total, hits = await search(client, LogQuery(q="disk full", since="1h"), reads=None)
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from elasticsearch import ApiError, Elasticsearch, TransportError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sms_plugin.errors import SMSError, Unavailable
from sms_plugin.telemetry.logs.documents import INDEX_PATTERN
from sms_plugin.telemetry.logs.elastic import describe

SPAN = re.compile(r"^[1-9][0-9]{0,5}[smhdw]$")
MAX_PAIRS = 10_000
"""More (script, host) pairs than this in a narrowed caller's search: 400, narrow it with script= or host=."""
TIMEOUT_SECONDS = 10.0


class TooWide(SMSError):
    """The search spans too many scripts and hosts to be cut for a narrowed caller (400)."""


class BadSearch(SMSError):
    """Elasticsearch refused the query as malformed (400)."""


class LogQuery(BaseModel):
    """``GET /logs/search``'s parameters; ``since``/``until``: an ISO 8601 time or a span back from now (``15m``)."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field("", max_length=500)
    script: str | None = Field(None, min_length=1, max_length=200)
    host: str | None = Field(None, min_length=1, max_length=200)
    run: str | None = Field(None, pattern=r"^[0-9a-fA-F-]{32,36}$")
    since: str | None = None
    until: str | None = None
    limit: int = Field(100, ge=1, le=1000)

    @field_validator("since", "until")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is None or SPAN.match(value):
            return value
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("use an ISO 8601 time (2026-12-01T08:00:00Z) or a span like 15m, 1h, 7d") from None
        if stamp.tzinfo is None:
            raise ValueError("give the time zone (e.g. Z or +01:00)")
        return stamp.isoformat()

    @model_validator(mode="after")
    def _order(self) -> LogQuery:
        if self.since and self.until and not (SPAN.match(self.since) or SPAN.match(self.until)):
            if datetime.fromisoformat(self.since) > datetime.fromisoformat(self.until):
                raise ValueError("since is after until")
        return self

    def filters(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for field_name, value in (("sms.script", self.script), ("host.name", self.host), ("sms.run_id", self.run)):
            if value is not None:
                found.append({"term": {field_name: value}})
        span = {key: (f"now-{value}" if SPAN.match(value) else value)
                for key, value in (("gte", self.since), ("lte", self.until)) if value is not None}
        if span:
            found.append({"range": {"@timestamp": span}})
        if self.q.strip():
            found.append({"simple_query_string": {"query": self.q, "fields": ["message"],
                                                  "default_operator": "and", "lenient": True}})
        return found


async def search(client: Elasticsearch, query: LogQuery, *,
                 reads: Callable[[str, str], bool] | None) -> tuple[int, list[dict[str, Any]]]:
    """(total matching lines, the newest ``limit`` of them); ``reads(script, host)`` says whether the
    caller may read a run of that script on that host (None: every run)."""
    filters = query.filters()
    if reads is not None:
        allowed: dict[str, list[str]] = defaultdict(list)
        for script, host in await asyncio.to_thread(_pairs, client, filters):
            if reads(script, host):
                allowed[script].append(host)
        if not allowed:
            return 0, []
        filters.append({"bool": {"minimum_should_match": 1, "should": [
            {"bool": {"filter": [{"term": {"sms.script": script}}, {"terms": {"host.name": hosts}}]}}
            for script, hosts in allowed.items()
        ]}})
    body = await asyncio.to_thread(
        _search, client, query={"bool": {"filter": filters}}, size=query.limit,
        sort=[{"@timestamp": "desc"}, {"sms.run_id": "desc"}, {"sms.line": "desc"}], track_total_hits=True,
    )
    return body["hits"]["total"]["value"], [_hit(hit["_source"]) for hit in body["hits"]["hits"]]


def _pairs(client: Elasticsearch, filters: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Every (script, host) with a matching line, at most MAX_PAIRS (else :class:`TooWide`)."""
    found: list[tuple[str, str]] = []
    after: dict[str, Any] | None = None
    while True:
        composite: dict[str, Any] = {"size": 1000, "sources": [{"script": {"terms": {"field": "sms.script"}}},
                                                               {"host": {"terms": {"field": "host.name"}}}]}
        if after:
            composite["after"] = after
        body = _search(client, query={"bool": {"filter": filters}}, size=0,
                     aggs={"pairs": {"composite": composite}})
        pairs = body.get("aggregations", {}).get("pairs", {})
        found += [(bucket["key"]["script"], bucket["key"]["host"]) for bucket in pairs.get("buckets", [])]
        if len(found) > MAX_PAIRS:
            raise TooWide(f"the search spans more than {MAX_PAIRS} scripts on hosts: narrow it with script= or host=")
        after = pairs.get("after_key")
        if not after or not pairs.get("buckets"):
            return found


def _search(client: Elasticsearch, **kwargs: Any) -> Any:
    try:
        return client.options(request_timeout=TIMEOUT_SECONDS).search(
            index=INDEX_PATTERN, ignore_unavailable=True, allow_no_indices=True, **kwargs
        )
    except ApiError as error:
        if error.meta.status == 400:
            raise BadSearch(f"Elasticsearch refused the search: {error.message}") from None
        raise Unavailable(describe(error, "Elasticsearch did not answer the log search")) from None
    except TransportError as error:
        raise Unavailable(describe(error, "Elasticsearch did not answer the log search")) from None


def _hit(source: dict[str, Any]) -> dict[str, Any]:
    sms = source["sms"]
    return {"at": source["@timestamp"], "run": sms["run_id"], "script": sms["script"], "host": source["host"]["name"],
            "stream": sms["stream"], "line": source["message"]}
