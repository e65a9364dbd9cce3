"""Benchmarks' Prometheus data: SMS's own metric classes (``RunMetrics``, ``ServiceMetrics``) for
bench scripts on 10 hosts, served on loopback and scraped by the test bed's Prometheus, a run ending
every second; the scripts are in the catalog too, so the dashboard lists them.

Example::

    with Prometheus() as prometheus:
        scripts = feed_prometheus(prometheus, 20, stop)   # returns once Prometheus has the series
"""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime

from prometheus_client import start_http_server

from infra.testbed.ports import free_port
from infra.testbed.prometheus import Prometheus
from sms_plugin.catalog import Catalog, ScriptSpec, add_script
from sms_plugin.telemetry.metrics import RunMetrics, RunState, ServiceMetrics

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


def feed_prometheus(prometheus: Prometheus, script_count: int, stop: threading.Event) -> list[str]:
    """``script_count`` bench scripts in the catalog and their metrics fed until ``stop``, scraped by
    ``prometheus`` (job ``bench``); returns their names once Prometheus has the series."""
    catalog = Catalog()
    catalog.upgrade()
    scripts = [f"bench-script-{i:03d}" for i in range(script_count)]
    with catalog.session() as s:
        for index, name in enumerate(scripts):
            add_script(s, ScriptSpec(name=name, interpreter="sh", host=HOSTS[index % len(HOSTS)]), content="true\n",
                       author="bench")
    catalog.dispose()
    runs, service = feed_metrics(scripts, stop)
    ports = free_port(), free_port()
    start_http_server(ports[0], "127.0.0.1", runs.registry)
    start_http_server(ports[1], "127.0.0.1", service.registry)
    prometheus.scrape("bench", [f"127.0.0.1:{port}" for port in ports])
    prometheus.wait_for("count(sms_script_runs_total)", lambda r: bool(r) and float(r[0]["value"][1]) > 0)
    return scripts
