"""The monitoring API behind the console's dashboard, log search and live output (docs/gateway.md#monitoring-api).

- ``GET /api/v1/monitor/overview``: summaries computed from Prometheus and the catalog, loaded once
  per ``SMS_MONITOR_CACHE_SECONDS`` for every caller (``SharedCache``) and cut per caller after
  the cache; an ``ETag`` on every answer, ``If-None-Match`` → 304 without a body.
- ``GET /api/v1/logs/search``: full-text search in Elasticsearch over the runs the caller may read.
- ``GET /api/v1/runs/{id}/output/stream``: a run's output live, as Server-Sent Events.

Overview and search are throttled per user (``SMS_MONITOR_RATE``: 429 with ``Retry-After``).
An upstream that is down, slow or not configured is a 503 saying which. Overview answers are not
audited (a dashboard polls; its own polls would fill the recent-events tile), refusals are.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

import httpx
from elasticsearch import Elasticsearch
from fastapi import APIRouter, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prefect.exceptions import PrefectException
from pydantic import ValidationError

from sms_plugin import tls
from sms_plugin.catalog import Catalog
from sms_plugin.errors import Unavailable
from sms_plugin.gateway import audit
from sms_plugin.gateway.api import ERRORS, CallDep, Message, _run_target
from sms_plugin.gateway.config import GatewaySettings
from sms_plugin.gateway.log_search import LogQuery, search
from sms_plugin.gateway.output_stream import output_events
from sms_plugin.gateway.overview import UPSTREAM_DEADLINE_SECONDS, WINDOWS, Snapshot, load_snapshot, summarize
from sms_plugin.gateway.rbac import ANY, decide, narrowing_rules
from sms_plugin.gateway.shared_cache import SharedCache
from sms_plugin.gateway.target_book import TargetBook
from sms_plugin.gateway.throttle import Throttle
from sms_plugin.settings import current
from sms_plugin.telemetry.logs.elastic import connect

router = APIRouter(prefix="/api/v1", tags=["monitoring"], responses={401: {"description": "Not authenticated"}})
MONITOR_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    400: {"model": Message, "description": "Bad input (the message says which)"},
    429: {"model": Message, "description": "Too many requests (Retry-After says when to retry)"},
    503: {"model": Message, "description": "Prometheus or Elasticsearch is down, slow or not configured"},
}


class Monitor:
    """The gateway's monitoring state: the shared overview cache, the throttles, the open streams."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.overviews: SharedCache[str, Snapshot] = SharedCache(settings.monitor_cache_seconds)
        self.overview_throttle = Throttle(settings.monitor_rate)
        self.search_throttle = Throttle(settings.monitor_rate)
        self.snapshot_loads = 0
        """Upstream query sets run so far (one per cache miss)."""
        self.open_streams = 0
        self._elasticsearch: Elasticsearch | None = None

    def elasticsearch(self) -> Elasticsearch:
        if not current().logs.elasticsearch_url:
            raise Unavailable("log search needs Elasticsearch: the gateway has no SMS_ELASTICSEARCH_URL")
        if self._elasticsearch is None:
            self._elasticsearch = connect()
        return self._elasticsearch

    async def snapshot(self, catalog: Catalog, window: str) -> Snapshot:
        """The overview's inputs for ``window``, shared; :class:`Unavailable` if an upstream fails."""
        url = self.settings.prometheus_url
        if not url:
            raise Unavailable("the monitoring overview needs Prometheus: the gateway has no SMS_PROMETHEUS_URL")

        async def load() -> Snapshot:
            self.snapshot_loads += 1
            try:
                async with httpx.AsyncClient(verify=tls.client_context()) as http:
                    return await load_snapshot(url, catalog, window, http)
            except TimeoutError:
                raise Unavailable(f"Prometheus at {url} did not answer within {UPSTREAM_DEADLINE_SECONDS:g} s") from None
            except (httpx.HTTPError, PrefectException) as error:
                raise Unavailable(f"the Prefect API did not list the hosts: {error}") from None

        return await self.overviews.get(window, load)


def monitor_of(request: Request) -> Monitor:
    """The app's :class:`Monitor`, made on first use."""
    state = request.app.state
    if getattr(state, "monitor", None) is None:
        state.monitor = Monitor(state.settings)
    return state.monitor


def _throttled(throttle: Throttle, user: str) -> None:
    wait = throttle.wait_seconds(user)
    if wait:
        raise HTTPException(429, f"too many monitoring requests: at most {throttle.rate} per user; retry in {wait} s",
                            headers={"Retry-After": str(wait)})


def etag_of(body: dict[str, Any]) -> str:
    """A strong ETag over the answer's content (its ``generated_at`` aside: unchanged figures, same tag)."""
    content = json.dumps({k: v for k, v in body.items() if k != "generated_at"}, sort_keys=True, default=str)
    return '"' + hashlib.sha256(content.encode()).hexdigest()[:32] + '"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


@router.get("/monitor/overview", responses={**MONITOR_ERRORS, 304: {"description": "Unchanged since the ETag given"}})
async def monitor_overview(
    request: Request, c: CallDep, window: str = "1h",
    if_none_match: Annotated[str | None, Header(max_length=2000)] = None,
) -> Response:
    """Runs by state over ``window`` (1h, 6h, 24h or 7d), per-script success rate and p50/p95 duration,
    scripts failing now, runs in progress, host health and (admins) recent audit events, for what
    the caller may read."""
    monitor = monitor_of(request)
    _throttled(monitor.overview_throttle, c.principal.username)
    if window not in WINDOWS:
        raise HTTPException(400, f"window {window[:20]!r}: use one of {', '.join(WINDOWS)}")
    allowed = decide(c.principal, "read", ANY, c.rules)
    if not allowed.allowed:
        await audit.record(c.catalog, c.caller, action="api.monitor.overview", object_type="monitor",
                           object_name=window, outcome="denied", detail={"reason": allowed.reason})
        raise HTTPException(403, allowed.reason)
    try:
        snapshot = await monitor.snapshot(c.catalog, window)
    except Unavailable as error:
        raise HTTPException(503, str(error)) from None
    body = summarize(snapshot, lambda target: c.allows("read", target), sees_audit=c.allows("admin", ANY))
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(body, headers=headers)


def _query_parameters(model: type[LogQuery]) -> list[dict[str, Any]]:
    """OpenAPI query parameters of ``model``'s fields (parsed by the model itself: bad input is 400, not 422)."""
    schema = model.model_json_schema()
    return [{"name": name, "in": "query", "required": False, "schema": field}
            for name, field in schema["properties"].items()]


@router.get("/logs/search", responses=MONITOR_ERRORS, openapi_extra={"parameters": _query_parameters(LogQuery)})
async def search_logs(request: Request, c: CallDep) -> dict[str, Any]:
    """Output lines matching ``q`` (words, "phrases", -not, a|b, prefix*), newest first, in the runs
    the caller may read; filters ``script``, ``host``, ``run``, ``since``/``until`` (ISO 8601 or a span
    like 15m), at most ``limit`` (1-1000, default 100) hits and the ``total`` that matched."""
    monitor = monitor_of(request)
    _throttled(monitor.search_throttle, c.principal.username)
    try:
        query = LogQuery.model_validate(dict(request.query_params))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'query'}: {e['msg']}" for e in error.errors())
        raise HTTPException(400, f"bad log search: {problems}") from None
    async with c.action("logs.search", "logs") as detail:
        c.authorize("read")
        detail.update(query.model_dump(exclude_none=True))
        narrowed = bool(narrowing_rules(c.principal, "read", c.rules))
        book = await TargetBook.read(c.catalog) if narrowed else None
        total, hits = await search(
            monitor.elasticsearch(), query,
            reads=(lambda script, host: c.allows("read", book.target(script, host))) if book else None,
        )
        detail["total"] = total
        return {"total": total, "hits": hits}


@router.get("/runs/{run_id}/output/stream", responses={**ERRORS, 400: MONITOR_ERRORS[400],
                                                      200: {"content": {"text/event-stream": {}}}})
async def stream_output(
    run_id: str, request: Request, c: CallDep,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """The run's output as Server-Sent Events (``line`` events, then its ``state``), live until it ends;
    ``Last-Event-ID: N`` resumes after the N-th line."""
    after = (last_event_id or "0").strip()
    if not after.isdigit() or int(after) > 2**53:
        raise HTTPException(400, "Last-Event-ID must be the seq of a line event (a whole number)")
    async with c.action("run.output", "run", run_id) as detail:
        _, hosts = await _run_target(c, "read", run_id)
        detail["after"] = int(after)
    monitor = monitor_of(request)

    async def counted() -> Any:
        monitor.open_streams += 1
        try:
            async for event in output_events(c.catalog, run_id, hosts, int(after)):
                yield event
        finally:
            monitor.open_streams -= 1

    return StreamingResponse(counted(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
