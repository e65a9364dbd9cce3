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
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="sms-bench-dashboards-"))
os.environ["SMS_HOME"] = str(_TMP / "sms-home")
os.environ["PREFECT_HOME"] = str(_TMP / "prefect-home")
os.environ.pop("PREFECT_API_URL", None)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.fed_metrics import HOSTS, feed_prometheus  # noqa: E402
from infra.testbed.gateway import GatewayBed  # noqa: E402
from infra.testbed.keycloak import Keycloak  # noqa: E402
from infra.testbed.prometheus import Prometheus  # noqa: E402

USERS = ("viola", "otto", "anna", "adam", "paula")
POLL_SECONDS = 5.0


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
    stop = threading.Event()
    rate = {"SMS_MONITOR_RATE": "6000/min"}
    with Keycloak() as keycloak, Prometheus() as prometheus:
        feed_prometheus(prometheus, script_count, stop)
        with GatewayBed(keycloak.issuer, settings={"SMS_PROMETHEUS_URL": prometheus.url, **rate}) as cached:
            with GatewayBed(keycloak.issuer, with_prefect=False, settings={
                "SMS_PROMETHEUS_URL": prometheus.url, "SMS_MONITOR_CACHE_SECONDS": "0", **rate, **cached.prefect_settings(),
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
