"""The metrics exporter against real peers: Prefect server and worker, OpenSSH, Prometheus.

A real Prometheus scrapes a real ``sms exporter`` process while runs complete, fail, cannot
reach their host and get cancelled; PromQL must then show the right counts. A restarted exporter
must report the same values (rebuilt from Prefect's API), and Prometheus must see no counter reset.
The rule file must pass ``promtool check rules`` and the dashboard's queries must parse.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.flow_engine import run_flow
from prefect.states import Cancelling, Pending

from flows.run_script import run_script
from infra.testbed.ports import free_port
from infra.testbed.exporter import ExporterProcess
from infra.testbed.prefect_server import venv_binary
from infra.testbed.process import find_binary
from infra.testbed.prometheus import Prometheus, PrometheusError
from sms_plugin import hosts, runs, scripts
from sms_plugin.catalog import Catalog, ScheduleSpec, ScriptSpec, add_script
from sms_plugin.deploy import deployment_name
from tests.integration.conftest import block_of

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra" / "prometheus" / "rules" / "sms.rules.yml"
DASHBOARD = ROOT / "infra" / "grafana" / "sms-dashboard.json"
JOB = "sms-exporter"


class Phases:
    """Seconds each phase of a test took, for its printed report."""

    def __init__(self) -> None:
        self.began = self.last = time.monotonic()
        self.lines: list[str] = []

    def done(self, what: str) -> None:
        now = time.monotonic()
        self.lines.append(f"{what}: {now - self.last:.1f} s")
        self.last = now

    def __str__(self) -> str:
        return "; ".join(self.lines) + f" (total {self.last - self.began:.1f} s)"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _value(result: list[dict[str, Any]]) -> float | None:
    """The value of a one-element PromQL result, None if empty."""
    return float(result[0]["value"][1]) if len(result) == 1 else None


def _equals(expected: float):
    return lambda result: _value(result) == expected


@pytest.fixture(scope="module")
def exporter(prefect_server: Any, prometheus: Prometheus) -> Iterator[ExporterProcess]:
    peer = ExporterProcess(prefect_server.api_url, free_port())
    peer.start()
    prometheus.scrape(JOB, [f"{peer.host}:{peer.port}"])
    try:
        yield peer
    finally:
        peer.stop()


def _add(catalog: Catalog, host: str, content: str) -> str:
    name = _unique("metrics")
    with catalog.session() as session:
        add_script(session, ScriptSpec(name=name, interpreter="bash", host=host), content=content, author="tests")
    return name


async def test_prometheus_sees_completed_failed_unreachable_and_cancelled_runs_and_a_restart_changes_nothing(
    catalog, ssh_server, prefect_worker, exporter, prometheus
):
    host, dead_host = _unique("metrics-ssh"), _unique("metrics-dead")
    await hosts.add(host, block_of(ssh_server))
    await hosts.add(dead_host, block_of(ssh_server, port=free_port(), connect_timeout=2))
    ok = _add(catalog, host, "echo one\necho two\necho three >&2\nsleep 0.3\n")
    bad = _add(catalog, host, "echo failing >&2\nexit 3\n")
    began = time.time()
    phases = Phases()

    assert (await run_script(script=ok, host=host, return_state=True)).is_completed()
    assert (await run_script(script=ok, host=host, return_state=True)).is_completed()
    assert (await run_script(script=bad, host=host, return_state=True)).is_failed()
    assert (await run_script(script=bad, host=dead_host, return_state=True)).is_failed()

    phases.done("4 in-process runs")
    # A deployed script, run by the worker and cancelled while it sleeps.
    slow = _unique("metrics-slow")
    await scripts.add(catalog, ScriptSpec(name=slow, interpreter="bash", host=host), "echo started\nsleep 120\n",
                      author="tests")
    run_id = await runs.start(catalog, slow, trigger="cli", user="tests")
    running = prometheus.wait_for(f'sms_script_running{{script="{slow}",host="{host}"}}', _equals(1), timeout=90)
    assert _value(running) == 1, running
    phases.done("worker run seen running by Prometheus")
    async with get_client() as client:
        await client.set_flow_run_state(uuid.UUID(run_id), Cancelling(), force=True)
    assert (await runs.wait(catalog, run_id, timeout=60, poll=0.2)).state == "CANCELLED"

    checks = {
        f'sms_script_runs_total{{script="{ok}",host="{host}",state="completed"}}': 2,
        f'sms_script_runs_total{{script="{bad}",host="{host}",state="failed"}}': 1,
        f'sms_script_runs_total{{script="{bad}",host="{dead_host}",state="failed"}}': 1,
        f'sms_script_runs_total{{script="{slow}",host="{host}",state="cancelled"}}': 1,
        f'sms_script_running{{script="{slow}",host="{host}"}}': 0,
        f'sms_script_run_duration_seconds_count{{script="{ok}",host="{host}"}}': 2,
        f'sms_script_output_lines_total{{script="{ok}",stream="stdout"}}': 4,
        f'sms_script_output_lines_total{{script="{ok}",stream="stderr"}}': 2,
        f'sms_script_output_lines_total{{script="{bad}",stream="stderr"}}': 1,
        f'sms_script_last_exit_code{{script="{ok}"}}': 0,
        f'sms_script_last_exit_code{{script="{bad}"}}': 3,
        f'sms_transport_errors_total{{host="{dead_host}",kind="host_unreachable"}}': 1,
        f'sms_host_up{{host="{host}"}}': 1,
        f'sms_host_up{{host="{dead_host}"}}': 0,
        f'sms_exporter_connected{{job="{JOB}"}}': 1,
    }
    seen = {query: _value(prometheus.wait_for(query, _equals(expected), timeout=30)) for query, expected in checks.items()}
    phases.done("cancelled, and Prometheus shows every count")
    assert seen == checks

    # The histogram observed the runs' running time: at least the script's 0.3 s sleep, each.
    total = _value(prometheus.query(f'sms_script_run_duration_seconds_sum{{script="{ok}"}}'))
    assert total is not None and 0.6 <= total < 60, total
    under_half_second = _value(prometheus.query(f'sms_script_run_duration_seconds_bucket{{script="{ok}",le="0.5"}}'))
    assert under_half_second is not None and under_half_second <= 2
    last_success = _value(prometheus.query(f'sms_script_last_success_timestamp_seconds{{script="{ok}"}}'))
    assert last_success is not None and began < last_success <= time.time()
    lag = _value(prometheus.query(f'sms_exporter_events_lag_seconds{{job="{JOB}"}}'))
    assert lag is not None and 0 <= lag < 30

    # Restart: the rebuilt exporter shows the same run metrics, and Prometheus sees no counter reset.
    ours = (ok, bad, slow, host, dead_host)

    def run_samples() -> dict:
        return {key: value for key, value in exporter.samples().items()
                if key[0].startswith(("sms_script_", "sms_transport_"))
                and any(label_value in ours for _, label_value in key[1])}

    # All of the above was counted live, from the event stream: one rebuild (at start), no re-subscription.
    assert (exporter.value("sms_exporter_rebuilds_total"), exporter.value("sms_exporter_reconnects_total")) == (1, 0)
    before = run_samples()
    assert len(before) > 20
    restarted_at = time.time()
    exporter.stop()
    exporter.start()
    after = run_samples()
    phases.done("exporter restarted and rebuilt")
    assert after == before
    assert exporter.value("sms_exporter_rebuilds_total") == 1.0  # a new process: rebuilt once, at start
    assert prometheus.wait_for(f'up{{job="{JOB}"}} == 1 and timestamp(up{{job="{JOB}"}}) > {restarted_at + 2}', bool,
                               timeout=30)
    resets = prometheus.query(f'sum(resets(sms_script_runs_total{{script=~"{ok}|{bad}|{slow}"}}[5m]))')
    assert _value(resets) == 0
    phases.done("Prometheus scraped the restarted exporter")
    print(phases)


async def test_last_success_and_schedule_outlive_the_history_window(catalog, ssh_server, prefect_server):
    """A rebuild reads runs of the last SMS_EXPORTER_HISTORY_HOURS only, but a scheduled script's
    newest success is looked up however old it is (the "no recent success" alert needs it)."""
    host = _unique("metrics-ssh")
    await hosts.add(host, block_of(ssh_server))
    daily = _unique("metrics-daily")
    spec = ScriptSpec(name=daily, interpreter="bash", host=host, schedules=[ScheduleSpec(cron="0 3 * * *")])
    await scripts.add(catalog, spec, "echo done\n", author="tests")
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name(daily))
        # Pending, so that the session's worker (which takes Scheduled runs) leaves it to us.
        flow_run = await client.create_flow_run_from_deployment(deployment.id, state=Pending())
        state = await run_flow(run_script, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")
        assert state.is_completed(), state.message
        ended = (await client.read_flow_run(flow_run.id)).state.timestamp.timestamp()
    time.sleep(2)  # the run is now older than the exporter's 1-second window

    narrow = ExporterProcess(prefect_server.api_url, free_port(), SMS_EXPORTER_HISTORY_HOURS=str(1 / 3600))
    with narrow:
        assert narrow.value("sms_script_last_success_timestamp_seconds", script=daily) == pytest.approx(ended)
        assert narrow.value("sms_script_runs_total", script=daily, host=host, state="completed") is None
        deadline = time.monotonic() + 20  # the probe reads the schedules every 2 s
        while narrow.value("sms_script_expected_interval_seconds", script=daily) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert narrow.value("sms_script_expected_interval_seconds", script=daily) == 86400


def test_rule_files_pass_promtool():
    done = subprocess.run([find_binary("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_prometheus_loaded_the_rules(prometheus):
    """Prometheus evaluates every rule without error (health "ok" once evaluated)."""

    def health() -> dict[str, tuple[str, str]]:
        groups = prometheus.api("rules")["groups"]
        return {rule["name"]: (rule["health"], rule.get("lastError", "")) for group in groups for rule in group["rules"]}

    deadline = time.monotonic() + 15
    while any(state == "unknown" for state, _ in health().values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    names = {"SMSScriptFailing", "SMSScriptNoRecentSuccess", "SMSHostDown", "SMSExporterLagging", "SMSExporterDown",
             "SMSEventsBacklog"}
    assert health() == {name: ("ok", "") for name in names}


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    assert {variable["name"] for variable in dashboard["templating"]["list"]} == {"script", "host"}
    queries = []
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            queries.append((panel["title"], target["expr"]))
    return queries


def test_dashboard_queries_parse_in_prometheus(prometheus):
    queries = _dashboard_queries()
    assert len(queries) >= 15
    grafana = {"$script": ".*", "$host": ".*", "$__rate_interval": "1m", "$__range": "1h"}
    for title, expr in queries:
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, (title, expr)
        prometheus.query(expr)  # raises PrometheusError on bad PromQL


def test_prometheus_rejects_bad_promql(prometheus):
    """The dashboard check above relies on this."""
    with pytest.raises(PrometheusError, match="bad_data"):
        prometheus.query("sum by (script (sms_script_running)")


def test_exporter_refuses_to_start_without_a_prefect_api():
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run([venv_binary("sms"), "exporter", "--port", "0"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: PREFECT_API_URL is not set")
    assert "Traceback" not in done.stderr


def test_exporter_says_so_when_its_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
        done = subprocess.run([venv_binary("sms"), "exporter", "--port", str(port)], env=env, capture_output=True,
                              text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use")
