"""The monitoring API (overview, log search, live output) behind the real gateway, with real peers:
Keycloak tokens, a real Prometheus scraping SMS's own metric classes, the test bed's Elasticsearch,
and a Prefect server and worker running scripts.

paula (sms-operator) is narrowed here by a rule that lets her read only scripts named ``mon-a-*``:
she must not see script B's figures, log lines or output, and no ETag or cached answer may leak them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import start_http_server

from blocks.hosts import LocalHost
from infra.testbed.ports import free_port
from infra.testbed.prometheus import Prometheus
from sms_plugin import hosts as host_services
from sms_plugin import scripts as script_services
from sms_plugin.catalog import Catalog, ScriptSpec, add_script
from sms_plugin.catalog import access as rows
from sms_plugin.telemetry.logs import elastic
from sms_plugin.telemetry.logs.documents import OutputSource, bulk_records
from sms_plugin.telemetry.metrics import RunFinished, RunMetrics, RunState, ServiceMetrics
from tests.integration.conftest import until
from tests.integration.gateway_fixtures import Gateway, serve

pytestmark = pytest.mark.integration

SUFFIX = uuid.uuid4().hex[:6]
A, B = f"mon-a-{SUFFIX}", f"mon-b-{SUFFIX}"
HOST_A, HOST_B = f"mon-ha-{SUFFIX}", f"mon-hb-{SUFFIX}"
CACHE_SECONDS = 8.0
RATE = "600/min"
JOB = "sms-monitor-test"


# ---------------------------------------------------------------- peers and data


@pytest.fixture(scope="module")
def monitored(keycloak, prefect_server, prometheus: Prometheus) -> Iterator[Gateway]:
    """A gateway asking the test bed's Prometheus, paula narrowed to ``mon-a-*``; the rule goes at the end."""
    catalog = Catalog()
    catalog.upgrade()
    with catalog.session() as s:
        rule_id = rows.add_rule(s, created_by="setup", subject_kind="user", subject="paula", actions=["read"],
                                script_glob="mon-a-*").id
        for name, host in ((A, HOST_A), (B, HOST_B)):
            add_script(s, ScriptSpec(name=name, interpreter="sh", host=host), content="echo\n", author="setup")
    try:
        with serve(keycloak, catalog, prometheus_url=prometheus.url, monitor_cache_seconds=CACHE_SECONDS,
                   monitor_rate=RATE) as served:
            yield served
    finally:
        with catalog.session() as s:
            rows.remove_rule(s, rule_id)
        catalog.dispose()


def _state(run: str, script: str, host: str, state: str, seconds: float | None = None) -> RunState:
    return RunState(uuid.uuid4().hex, run, script, host, state, datetime.now(UTC), seconds)


@pytest.fixture(scope="module")
def metrics(prometheus: Prometheus) -> Iterator[RunMetrics]:
    """SMS's metric classes served on loopback and scraped by Prometheus: script A ran 3 times on host A
    (2 completed in 0.8 s and 3 s, 1 failed in 4 s, last exit code 1); B completed once and runs now."""
    runs, service = RunMetrics(), ServiceMetrics()
    ports = free_port(), free_port()
    servers = [start_http_server(ports[0], "127.0.0.1", runs.registry),
               start_http_server(ports[1], "127.0.0.1", service.registry)]
    # Every series exists at 0 before it grows, so that increase() sees the growth.
    for script, host, state in ((A, HOST_A, "completed"), (A, HOST_A, "failed"), (B, HOST_B, "completed")):
        runs.runs.labels(script, host, state)
        runs.duration.labels(script, host)
        runs.running.labels(script, host)
    service.set_labelled(service.host_up, {HOST_A: 1, HOST_B: 0})
    prometheus.scrape(JOB, [f"127.0.0.1:{port}" for port in ports])
    prometheus.wait_for(f'count(sms_script_runs_total{{script=~"{A}|{B}"}})', lambda r: r and r[0]["value"][1] == "3")
    for seconds in (0.8, 3.0):
        runs.apply_state(_state(uuid.uuid4().hex, A, HOST_A, "COMPLETED", seconds))
    runs.apply_state(_state(uuid.uuid4().hex, A, HOST_A, "FAILED", 4.0))
    runs.apply_finished(RunFinished(uuid.uuid4().hex, A, HOST_A, 1, datetime.now(UTC), {}))
    runs.apply_state(_state(uuid.uuid4().hex, B, HOST_B, "COMPLETED", 0.3))
    runs.apply_finished(RunFinished(uuid.uuid4().hex, B, HOST_B, 0, datetime.now(UTC), {}))
    runs.apply_state(_state(uuid.uuid4().hex, B, HOST_B, "RUNNING"))
    prometheus.wait_for(f'sum(sms_script_running{{script="{B}"}})', lambda r: r and r[0]["value"][1] == "1")
    try:
        yield runs
    finally:
        prometheus.scrape(JOB, [])
        for server, thread in servers:
            server.shutdown()
            thread.join(timeout=5)


async def _get(gateway: Gateway, user: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        headers = {**gateway.headers(user), **kwargs.pop("headers", {})}
        return await http.get(path, headers=headers, **kwargs)


async def _overview_when(gateway: Gateway, user: str, done, window: str = "1h") -> dict[str, Any]:
    """The overview once ``done(body)`` (the cache and Prometheus catch up within seconds)."""
    deadline = time.monotonic() + 40
    while True:
        reply = await _get(gateway, user, "/api/v1/monitor/overview", params={"window": window})
        assert reply.status_code == 200, reply.text
        if done(reply.json()) or time.monotonic() > deadline:
            return reply.json()
        await asyncio.sleep(0.5)


def _row(body: dict[str, Any], script: str) -> dict[str, Any] | None:
    return next((row for row in body["scripts"] if row["script"] == script), None)


def _counted(body: dict[str, Any], script: str, runs: int) -> bool:
    row = _row(body, script)
    return row is not None and row["runs"] == runs


def _prometheus_queries(prometheus: Prometheus) -> int:
    """Queries Prometheus has answered (its own counter, read from /metrics: not a query itself)."""
    text = httpx.get(f"{prometheus.url}/metrics", timeout=5).text
    total = 0
    for line in text.splitlines():
        if line.startswith("prometheus_http_requests_total{") and (
            'handler="/api/v1/query"' in line or 'handler="/api/v1/query_range"' in line
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


async def _queries_settled(prometheus: Prometheus, expected: int) -> int:
    """Prometheus's query count once it reaches ``expected`` (it counts a query just after answering it),
    plus a moment for any extra one to show."""
    await until(lambda: _reached(prometheus, expected), 5, interval=0.1)
    await asyncio.sleep(0.3)
    return _prometheus_queries(prometheus)


async def _reached(prometheus: Prometheus, expected: int) -> bool:
    return _prometheus_queries(prometheus) >= expected


# ---------------------------------------------------------------- overview


async def test_overview_summarizes_prometheus_and_a_narrowed_user_sees_only_her_scripts(monitored, metrics):
    viola = await _overview_when(monitored, "viola", lambda b: _counted(b, A, 3) and _counted(b, B, 1)
                                 and b["in_progress"] >= 1)
    a, b = _row(viola, A), _row(viola, B)
    assert a is not None and b is not None, viola
    assert a["success_rate"] == pytest.approx(2 / 3, abs=0.01) and a["failing_now"] is True
    assert a["p50_seconds"] == pytest.approx(3.125, abs=0.3) and a["p95_seconds"] == pytest.approx(4.81, abs=0.3)
    assert b["success_rate"] == 1.0 and b["failing_now"] is False
    hosts = {h["host"]: h["healthy"] for h in viola["hosts"]}
    assert hosts[HOST_A] is True and hosts[HOST_B] is False
    assert viola["recent_audit"] == [], "the audit trail is for admins"

    paula = await _overview_when(monitored, "paula", lambda body: _counted(body, A, 3))
    assert _row(paula, A) == a
    text = json.dumps(paula)
    assert B not in text and HOST_B not in text, "a narrowed user sees another script's figures"
    counts = {state: 0 for state in ("completed", "failed")}
    for point in paula["runs_by_state"]:
        if point["state"] in counts:
            counts[point["state"]] += point["count"]
    assert counts == {"completed": 2, "failed": 1}, paula["runs_by_state"]
    assert paula["in_progress"] == viola["in_progress"] - 1, "B's running run is not hers"

    await _get(monitored, "adam", "/api/v1/scripts")  # an audited request
    adam = await _overview_when(monitored, "adam", lambda body: body["recent_audit"])
    assert {"at", "actor", "action", "target"} <= adam["recent_audit"][0].keys()


async def test_fifty_concurrent_dashboards_cost_one_query_set(monitored, metrics, prometheus):
    users = ("viola", "anna", "adam", "paula")
    for user in set(users):
        monitored.headers(user)  # tokens first: only the overview is timed and counted

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=monitored.url, timeout=30) as http:
            return await asyncio.gather(*(
                http.get("/api/v1/monitor/overview", params={"window": "24h"}, headers=monitored.headers(user))
                for user in users for _ in range(13)
            ))

    before = _prometheus_queries(prometheus)
    first = await burst()
    after_first = await _queries_settled(prometheus, before + 6)
    second = await burst()
    after_second = await _queries_settled(prometheus, after_first)
    assert [r.status_code for r in first + second] == [200] * 104
    assert after_first - before == 6, "one miss: 6 PromQL queries, whatever the number of callers"
    assert after_second == after_first, "within the TTL nothing reaches Prometheus"
    monitor = monitored.app.state.monitor
    loads = monitor.snapshot_loads
    await asyncio.sleep(CACHE_SECONDS)  # the TTL runs out (the thing under test, not a wait for a peer)
    assert (await _get(monitored, "viola", "/api/v1/monitor/overview", params={"window": "24h"})).status_code == 200
    assert monitor.snapshot_loads == loads + 1
    assert await _queries_settled(prometheus, after_second + 6) == after_second + 6


async def test_etag_gives_304_without_a_body_and_never_across_users(monitored, metrics):
    first = await _get(monitored, "viola", "/api/v1/monitor/overview")
    etag = first.headers["ETag"]
    again = await _get(monitored, "viola", "/api/v1/monitor/overview", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    # paula (narrowed) with viola's tag: her answer differs, so she gets her own body, not a 304
    paula = await _get(monitored, "paula", "/api/v1/monitor/overview", headers={"If-None-Match": etag})
    assert paula.status_code == 200 and paula.headers["ETag"] != etag and B not in paula.text


async def test_throttle_answers_429_with_retry_after(keycloak, prefect_server, prometheus, metrics):
    catalog = Catalog()
    catalog.upgrade()
    with serve(keycloak, catalog, prometheus_url=prometheus.url, monitor_rate="3/h") as gateway:
        replies = [await _get(gateway, "otto", "/api/v1/monitor/overview") for _ in range(4)]
        other = await _get(gateway, "anna", "/api/v1/monitor/overview")
    catalog.dispose()
    assert [reply.status_code for reply in replies] == [200, 200, 200, 429]
    refused = replies[3]
    assert 1000 <= int(refused.headers["Retry-After"]) <= 1200, "one request per 20 minutes comes back"
    assert refused.json() == {"detail": "too many monitoring requests: at most 3/h per user; retry in "
                                        f"{refused.headers['Retry-After']} s"}
    assert other.status_code == 200, "one user's throttle is not another's"


@pytest.mark.parametrize("query", [{"window": "2d"}, {"window": "1h' or '1'='1"}])
async def test_overview_refuses_a_bad_window_with_400(monitored, query):
    reply = await _get(monitored, "anna", "/api/v1/monitor/overview", params=query)
    assert reply.status_code == 400 and "window" in reply.json()["detail"]


async def test_overview_without_a_token_is_401_and_shows_nothing(monitored):
    reply = await _get(monitored, None, "/api/v1/monitor/overview")  # type: ignore[arg-type]
    assert reply.status_code == 401 and A not in reply.text


async def test_prometheus_down_is_503_promptly(keycloak, prefect_server):
    catalog = Catalog()
    catalog.upgrade()
    with serve(keycloak, catalog, prometheus_url=f"http://127.0.0.1:{free_port()}") as gateway:
        began = time.monotonic()
        reply = await _get(gateway, "viola", "/api/v1/monitor/overview")
    assert reply.status_code == 503 and "Prometheus" in reply.json()["detail"]
    assert time.monotonic() - began < 10
    catalog.dispose()


# ---------------------------------------------------------------- log search


@pytest.fixture(scope="module")
def indexed(elasticsearch) -> dict[str, str]:
    """Lines of one run of A and one of B in Elasticsearch, as the shipper indexes them."""
    client = elastic.connect(elasticsearch.url)
    elastic.ensure_template(client)
    run_ids = {A: str(uuid.uuid4()), B: str(uuid.uuid4())}
    now = time.time()
    for script, host in ((A, HOST_A), (B, HOST_B)):
        source = OutputSource(run_id=run_ids[script], attempt=1, script=script, version=1, host=host)
        records = bulk_records(source, "stdout", 1, now, [f"disk full on {host} {SUFFIX}", f"all good {SUFFIX}"])
        assert elastic.send(client, records.encode()) == []
    client.indices.refresh(index="sms-logs-*")
    return run_ids


@pytest.fixture
def es_env(elasticsearch, monkeypatch) -> None:
    monkeypatch.setenv("SMS_ELASTICSEARCH_URL", elasticsearch.url)


async def test_log_search_finds_lines_and_a_narrowed_user_only_hers(monitored, indexed, es_env):
    viola = await _get(monitored, "viola", "/api/v1/logs/search", params={"q": f'"disk full" {SUFFIX}'})
    assert viola.status_code == 200, viola.text
    assert viola.json()["total"] == 2
    assert {(h["script"], h["host"], h["run"], h["stream"]) for h in viola.json()["hits"]} == {
        (A, HOST_A, indexed[A], "stdout"), (B, HOST_B, indexed[B], "stdout")}
    paula = await _get(monitored, "paula", "/api/v1/logs/search", params={"q": SUFFIX})
    assert paula.json()["total"] == 2 and {h["script"] for h in paula.json()["hits"]} == {A}
    # asking for B by name, run or host: nothing, not even a count
    for params in ({"q": SUFFIX, "script": B}, {"q": "", "run": indexed[B]}, {"q": SUFFIX, "host": HOST_B}):
        refused = await _get(monitored, "paula", "/api/v1/logs/search", params=params)
        assert refused.json() == {"total": 0, "hits": []}, params
    limited = await _get(monitored, "viola", "/api/v1/logs/search", params={"q": SUFFIX, "limit": 1, "since": "1h"})
    assert limited.json()["total"] == 4 and len(limited.json()["hits"]) == 1


@pytest.mark.parametrize("params", [
    {"limit": "0"}, {"limit": "1001"}, {"limit": "many"}, {"since": "yesterday"}, {"until": "2026-13-01T00:00:00Z"},
    {"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}, {"run": "../../_all"}, {"q": "x" * 501},
    {"index": "*"},
])
async def test_log_search_refuses_bad_input_with_400(monitored, es_env, params):
    reply = await _get(monitored, "anna", "/api/v1/logs/search", params=params)
    assert reply.status_code == 400 and reply.json()["detail"].startswith("bad log search"), reply.text


# ---------------------------------------------------------------- live output


IDLE_POOL = "sms-monitor-idle"
"""A work pool no worker serves: runs started there stay Scheduled (a run to judge, not to run)."""


@pytest.fixture(scope="module")
async def sse_scripts(monitored, prefect_worker) -> dict[str, str]:
    host = f"mon-local-{SUFFIX}"
    await host_services.add(host, LocalHost(admins_only=False), overwrite=True)
    scripts = {
        "counting": (A + "-count", 'for i in 1 2 3 4 5; do echo "line $i"; sleep 0.2; done\necho oops >&2\n'),
        "idle": (A + "-idle", "echo never\n"),
        "hidden": (B + "-hidden", "echo secret-output\n"),
    }
    for name, content in scripts.values():
        await script_services.add(monitored.catalog, ScriptSpec(name=name, interpreter="sh", host=host), content,
                                  author="setup")
    return {key: name for key, (name, _) in scripts.items()}


async def _start(gateway: Gateway, script: str) -> str:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        reply = await http.post(f"/api/v1/scripts/{script}/runs", json={}, headers=gateway.headers("otto"))
    assert reply.status_code == 201, reply.text
    return reply.json()["run_id"]


async def _start_idle(gateway: Gateway, script: str) -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_WORK_POOL", IDLE_POOL)
        return await _start(gateway, script)


async def _events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any], str | None]]:
    """(event, data, id) of a Server-Sent Events response."""
    event, data, event_id = "message", "", None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif not line and data:
            yield event, json.loads(data), event_id
            event, data, event_id = "message", "", None


async def _stream(gateway: Gateway, user: str, run_id: str, last_id: str | None = None) -> list[tuple[str, dict, str | None]]:
    headers = {**gateway.headers(user), **({"Last-Event-ID": last_id} if last_id else {})}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=90) as http:
        async with http.stream("GET", f"/api/v1/runs/{run_id}/output/stream", headers=headers) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            return [event async for event in _events(response)]


async def test_output_stream_follows_a_run_in_order_ends_with_its_state_and_resumes(monitored, sse_scripts):
    run_id = await _start(monitored, sse_scripts["counting"])
    events = await asyncio.wait_for(_stream(monitored, "viola", run_id), 90)
    lines = [data for event, data, _ in events if event == "line"]
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert [e[2] for e in events if e[0] == "line"] == [str(line["seq"]) for line in lines]
    printed = [line["text"] for line in lines if line["text"].startswith("line ")]
    assert printed == [f"line {i}" for i in range(1, 6)]
    assert any(line["text"] == "oops" and line["stream"] == "stderr" for line in lines)
    assert {line["host"] for line in lines} == {f"mon-local-{SUFFIX}"}
    assert events[-1][:2] == ("state", {"state": "COMPLETED", "exit_code": 0})

    resumed = await asyncio.wait_for(_stream(monitored, "viola", run_id, last_id="2"), 30)
    # the same lines after the 2nd; Prefect's engine may log its own "Finished in state …" line after
    # the run's state became final, so a later read can hold one more line at the end
    again = [data for event, data, _ in resumed if event == "line"]
    assert again[: len(lines) - 2] == lines[2:]
    assert all(line["text"].startswith("Finished in state") for line in again[len(lines) - 2:]), again
    assert resumed[-1][0] == "state"


async def test_output_stream_of_a_forbidden_run_is_refused_and_shows_nothing(monitored, sse_scripts):
    run_id = await _start_idle(monitored, sse_scripts["hidden"])
    async with httpx.AsyncClient(base_url=monitored.url, timeout=30) as http:
        reply = await http.get(f"/api/v1/runs/{run_id}/output/stream", headers=monitored.headers("paula"))
        unknown = await http.get(f"/api/v1/runs/{uuid.uuid4()}/output/stream", headers=monitored.headers("viola"))
        bad_id = await http.get(f"/api/v1/runs/{run_id}/output/stream",
                                headers={**monitored.headers("viola"), "Last-Event-ID": "-1"})
    assert reply.status_code == 403 and "event:" not in reply.text
    assert "paula may read only as access rules allow" in reply.json()["detail"]
    assert unknown.status_code == 404 and bad_id.status_code == 400
    assert _open_streams(monitored) == 0, "a refused stream never started following"


async def test_closing_the_stream_stops_following_the_run(monitored, sse_scripts):
    run_id = await _start_idle(monitored, sse_scripts["idle"])  # stays Scheduled: the stream would follow forever
    async with httpx.AsyncClient(base_url=monitored.url, timeout=30) as http:
        async with http.stream("GET", f"/api/v1/runs/{run_id}/output/stream",
                               headers=monitored.headers("viola")) as response:
            assert response.status_code == 200
            assert await until(lambda: _open_streams(monitored) == 1, 10), "the stream did not start following"
    assert await until(lambda: _open_streams(monitored) == 0, 10), "the server still follows a closed stream"


def _open_streams(gateway: Gateway) -> int:
    monitor = getattr(gateway.app.state, "monitor", None)
    return monitor.open_streams if monitor is not None else 0
