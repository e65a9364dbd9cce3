"""Benchmark: what open dashboards cost upstream, with the monitoring overview's shared cache and without.

Starts the test bed's Keycloak, Prometheus and two ``sms gateway`` processes over one catalog and
one Prefect server: one with the shared cache (``SMS_MONITOR_CACHE_SECONDS``, default 10), one
without (``SMS_MONITOR_CACHE_SECONDS=0``: every request runs its own query set, the baseline).
Prometheus scrapes SMS's own metric classes (``RunMetrics``, ``ServiceMetrics``) fed with runs of
SCRIPTS scripts on 10 hosts. Then, one phase after the other, for SECONDS each:

- 1 dashboard polling the cache-less gateway every 5 s (what one dashboard costs);
- N dashboards (default 50) polling the cache-less gateway every 5 s (the baseline);
- N dashboards polling the cached gateway every 5 s.

Dashboards start spread over the first 5 s (as browsers opened at different moments), log in as
the realm's users in turn, and send ``If-None-Match`` with the last ETag, as the console does.
Per phase it prints the upstream Prometheus queries per minute (Prometheus's own
``prometheus_http_requests_total`` for ``/api/v1/query`` and ``/api/v1/query_range``), the
Elasticsearch queries (none: the overview reads only Prometheus and the catalog), the answers
(200 / 304) and the answer time p50/p95.

Run from the repository root (Keycloak and Prefect start first, ~2-3 min on a busy machine):
    .venv/bin/python bench/dashboards.py [--dashboards 50] [--seconds 60] [--scripts 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
from collections import Counter
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="sms-bench-dashboards-"))
os.environ["SMS_HOME"] = str(_TMP / "sms-home")
os.environ["PREFECT_HOME"] = str(_TMP / "prefect-home")
os.environ.pop("PREFECT_API_URL", None)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from prometheus_client import start_http_server  # noqa: E402

from infra.testbed.gateway import GatewayBed  # noqa: E402
from infra.testbed.keycloak import Keycloak  # noqa: E402
from infra.testbed.ports import free_port  # noqa: E402
from infra.testbed.prometheus import Prometheus  # noqa: E402
from sms_plugin.catalog import Catalog, ScriptSpec, add_script  # noqa: E402
from sms_plugin.telemetry.metrics import RunMetrics, RunState, ServiceMetrics  # noqa: E402

USERS = ("viola", "otto", "anna", "adam", "paula")
POLL_SECONDS = 5.0
HOSTS = [f"bench-host-{i:02d}" for i in range(10)]


def end_run(runs: RunMetrics, scripts: list[str]) -> None:
    """A run of a random script ends (1 in 4 failed) after 0.2-30 s."""
    index = random.randrange(len(scripts))
    state = random.choice(("COMPLETED", "COMPLETED", "COMPLETED", "FAILED"))
    runs.apply_state(RunState(uuid.uuid4().hex, uuid.uuid4().hex, scripts[index], HOSTS[index % len(HOSTS)], state,
                              datetime.now(UTC), random.uniform(0.2, 30)))


def feed_metrics(scripts: list[str], stop: threading.Event) -> tuple[RunMetrics, ServiceMetrics]:
    """Run metrics of ``scripts``, every series at 0 first, then a run ending every second until
    ``stop``; one run of each script running; host health."""
    runs, service = RunMetrics(), ServiceMetrics()
    for index, script in enumerate(scripts):
        host = HOSTS[index % len(HOSTS)]
        for state in ("completed", "failed"):
            runs.runs.labels(script, host, state)
        runs.duration.labels(script, host)
        runs.apply_state(RunState(uuid.uuid4().hex, uuid.uuid4().hex, script, host, "RUNNING", datetime.now(UTC)))
    service.set_labelled(service.host_up, {host: float(i % 4 != 0) for i, host in enumerate(HOSTS)})

    def feed() -> None:
        while not stop.wait(1.0):
            end_run(runs, scripts)

    threading.Thread(target=feed, name="bench-runs", daemon=True).start()
    return runs, service


def prometheus_queries(prometheus: Prometheus) -> int:
    text = httpx.get(f"{prometheus.url}/metrics", timeout=5).text
    return sum(
        int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
        if line.startswith("prometheus_http_requests_total{")
        and ('handler="/api/v1/query"' in line or 'handler="/api/v1/query_range"' in line)
    )


async def dashboard(url: str, token: str, seconds: float, times: list[float], statuses: list[int]) -> None:
    """One browser tab: the overview every POLL_SECONDS, with the last ETag."""
    await asyncio.sleep(random.uniform(0, POLL_SECONDS))
    etag = ""
    async with httpx.AsyncClient(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as http:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            began = time.perf_counter()
            try:
                reply = await http.get("/api/v1/monitor/overview", headers={"If-None-Match": etag} if etag else {})
            except httpx.HTTPError:  # counted as "other", timed until it gave up
                statuses.append(0)
            else:
                statuses.append(reply.status_code)
                etag = reply.headers.get("ETag", etag)
            times.append(time.perf_counter() - began)
            await asyncio.sleep(max(0.0, POLL_SECONDS - (time.perf_counter() - began)))


async def phase(name: str, url: str, tokens: dict[str, str], count: int, seconds: float,
                prometheus: Prometheus) -> str:
    times: list[float] = []
    statuses: list[int] = []
    before = prometheus_queries(prometheus)
    began = time.monotonic()
    await asyncio.gather(*(dashboard(url, tokens[USERS[i % len(USERS)]], seconds, times, statuses)
                           for i in range(count)))
    minutes = (time.monotonic() - began) / 60
    await asyncio.sleep(1)  # Prometheus counts a query just after answering it
    queries = prometheus_queries(prometheus) - before
    cuts = statistics.quantiles(times, n=20) if len(times) > 1 else [times[0]] * 19
    others = Counter(status for status in statuses if status not in (200, 304))
    other = ", ".join(f"{count}× {status or 'timeout'}" for status, count in sorted(others.items())) or "0"
    return (f"| {name} | {queries / minutes:.0f} | 0 | {statuses.count(200)} / {statuses.count(304)} / {other} "
            f"| {statistics.median(times) * 1000:.0f} | {cuts[18] * 1000:.0f} |")


def main(dashboards: int, seconds: float, script_count: int) -> None:
    catalog = Catalog()
    catalog.upgrade()
    scripts = [f"bench-script-{i:03d}" for i in range(script_count)]
    with catalog.session() as s:
        for index, name in enumerate(scripts):
            add_script(s, ScriptSpec(name=name, interpreter="sh", host=HOSTS[index % len(HOSTS)]), content="true\n",
                       author="bench")
    catalog.dispose()
    stop = threading.Event()
    runs, service = feed_metrics(scripts, stop)
    ports = free_port(), free_port()
    start_http_server(ports[0], "127.0.0.1", runs.registry)
    start_http_server(ports[1], "127.0.0.1", service.registry)
    rate = {"SMS_MONITOR_RATE": "6000/min"}
    with Keycloak() as keycloak, Prometheus() as prometheus:
        prometheus.scrape("bench", [f"127.0.0.1:{port}" for port in ports])
        prometheus.wait_for("count(sms_script_runs_total)", lambda r: bool(r) and float(r[0]["value"][1]) > 0)
        with GatewayBed(keycloak.issuer, settings={"SMS_PROMETHEUS_URL": prometheus.url, **rate}) as cached:
            assert cached.prefect is not None
            prefect = {"PREFECT_API_URL": cached.prefect.api_url, "PREFECT_API_AUTH_STRING": cached.auth_string}
            with GatewayBed(keycloak.issuer, with_prefect=False, settings={
                "SMS_PROMETHEUS_URL": prometheus.url, "SMS_MONITOR_CACHE_SECONDS": "0", **rate, **prefect,
            }) as uncached:
                print(f"{dashboards} dashboards polling every {POLL_SECONDS:g} s for {seconds:g} s; "
                      f"{script_count} scripts on {len(HOSTS)} hosts; one query set = 6 PromQL queries")
                print("| phase | Prometheus queries/min | Elasticsearch queries/min | answers 200 / 304 / other "
                      "| p50 ms | p95 ms |")
                print("| --- | --- | --- | --- | --- | --- |")
                for name, url, count in (("1 dashboard, no cache", uncached.url, 1),
                                         (f"{dashboards} dashboards, no cache (baseline)", uncached.url, dashboards),
                                         (f"{dashboards} dashboards, shared cache 10 s", cached.url, dashboards)):
                    tokens = {user: keycloak.token(user) for user in USERS}  # fresh for each phase
                    print(asyncio.run(phase(name, url, tokens, count, seconds, prometheus)), flush=True)
    stop.set()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboards", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--scripts", type=int, default=20)
    options = parser.parse_args()
    main(options.dashboards, options.seconds, options.scripts)
