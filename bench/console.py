"""Benchmark: the console in Chromium against Prefect's own UI on the same stack: the dashboard's first
paint and time to its figures, and a run page following a script that prints 10,000 lines a second.

Starts the test bed's Keycloak, Prometheus (fed as in bench/dashboards.py), an sshd, ``sms gateway``
in front of its own Prefect server, and an sms worker. Elasticsearch is left out on purpose: script
output then goes to Prefect's log API, which both run pages read (the console through the gateway's
server-sent events, Prefect's UI by polling), so both show the same lines from the same store.

- dashboard: ROUNDS loads of ``/`` (the console) and ``/prefect/dashboard`` (Prefect's UI, through the
  gateway) in one logged-in tab (browser cache warm after the first): first contentful paint, the
  load event, the page settled (network idle for 0.5 s, measured at its start) and, for the console,
  its figures shown (the overview's script table has rows). Milliseconds from navigation start.
- following: a python3 script on the sshd prints RATE lines a second for SECONDS, each line
  ``N EPOCH``; the console's run page and Prefect's run page are open from its start; every 0.5 s the
  newest line each page shows is read, and its lag (now minus the time it was printed) recorded, with
  the time the page took to answer (a busy main thread answers late). The floor is the newest line
  Prefect's log API holds at that moment; "behind the floor" is what the page adds to it.
- ``--screenshot PATH``: the console's dashboard, saved (the README's picture, docs/console-dashboard.png).

Run from the repository root (Keycloak and Prefect start first, ~2-3 min on a busy machine):
    .venv/bin/python bench/console.py [--rounds 5] [--rate 10000] [--seconds 20] [--screenshot docs/console-dashboard.png]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

_TMP = Path(tempfile.mkdtemp(prefix="sms-bench-console-"))
os.environ["SMS_HOME"] = str(_TMP / "sms-home")
os.environ["PREFECT_HOME"] = str(_TMP / "prefect-home")
os.environ.pop("PREFECT_API_URL", None)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.fed_metrics import feed_prometheus  # noqa: E402
from infra.testbed.browser import chromium, log_in  # noqa: E402
from infra.testbed.gateway import GatewayBed  # noqa: E402
from infra.testbed.keycloak import Keycloak  # noqa: E402
from infra.testbed.prefect_worker import PrefectWorker  # noqa: E402
from infra.testbed.prometheus import Prometheus  # noqa: E402
from infra.testbed.sshd import SshServer  # noqa: E402
from sms_plugin.catalog.spec import ScriptSpec  # noqa: E402
from sms_plugin.gateway_client import GatewayClient  # noqa: E402

PRINTER = '''import sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
begin, n = time.time(), 0
while n < rate * seconds:
    pause = begin + n / rate - time.time()
    if pause > 0:
        time.sleep(pause)
    stamp = f"{time.time():.3f}"
    sys.stdout.write("".join(f"{n + i} {stamp}\\n" for i in range(100)))
    sys.stdout.flush()
    n += 100
'''
"""Prints RATE lines a second, 100 at a time, each ``N EPOCH`` (the time it was printed)."""

NEWEST_LINE = r"""() => {
  let best = null;
  for (const line of document.body.innerText.split("\n")) {
    const m = /(?:^|\s)(\d+) (\d{10}\.\d{3})(?:\s|$)/.exec(line);
    if (m && (best === null || Number(m[1]) > best[0])) best = [Number(m[1]), Number(m[2])];
  }
  return best;
}"""
"""The newest ``N EPOCH`` line the page shows: [N, EPOCH], or null."""

FIGURES_WATCH = """new MutationObserver(() => {
  if (!window.__figuresAt && document.querySelector('a[href^="/scripts/bench-script-"]')) window.__figuresAt = performance.now();
}).observe(document, {subtree: true, childList: true});"""
"""Notes when the console's overview first shows a script row (installed before each page's own scripts)."""
PAINT = """() => {
  const paint = performance.getEntriesByName("first-contentful-paint")[0];
  const nav = performance.getEntriesByType("navigation")[0];
  return [paint ? paint.startTime : null, nav.loadEventEnd];
}"""
NETWORK_IDLE_MS = 500


def quantiles(values: list[float]) -> str:
    if not values:
        return "- | - | -"
    cuts = statistics.quantiles(values, n=20, method="inclusive") if len(values) > 1 else [values[0]] * 19
    return f"{statistics.median(values):.0f} | {cuts[18]:.0f} | {max(values):.0f}"


def dashboard_rounds(page: Any, url: str, rounds: int) -> list[str]:
    """Rows of the dashboard table: the console's and Prefect's, ROUNDS loads each, interleaved."""
    found: dict[str, dict[str, list[float]]] = {"console": {}, "prefect": {}}
    for _ in range(rounds):
        for name, path in (("console", "/"), ("prefect", "/prefect/dashboard")):
            page.goto(f"{url}{path}", wait_until="networkidle")
            settled = page.evaluate("performance.now()") - NETWORK_IDLE_MS
            figures = page.wait_for_function("() => window.__figuresAt").json_value() if name == "console" else None
            paint, load = page.evaluate(PAINT)
            for measure, value in (("first contentful paint", paint), ("load event", load),
                                   ("settled (network idle)", settled), ("figures shown", figures)):
                if value is not None:
                    found[name].setdefault(measure, []).append(float(value))
    return [f"| {name} | {measure} | {quantiles(values)} |"
            for name, measures in found.items() for measure, values in measures.items()]


def floor_newest(prefect_api: str, auth_string: str, run_id: str) -> list[float] | None:
    """The newest ``N EPOCH`` line Prefect's log API holds for the run."""
    basic = base64.b64encode(auth_string.encode()).decode()
    reply = httpx.post(f"{prefect_api}/logs/filter", headers={"Authorization": f"Basic {basic}"}, timeout=30,
                       json={"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_DESC", "limit": 50})
    best = None
    for log in reply.json():
        parts = log["message"].split()
        for first, second in zip(parts, parts[1:]):
            if first.isdigit() and second.replace(".", "", 1).isdigit() and (best is None or int(first) > best[0]):
                best = [int(first), float(second)]
    return best


def follow(pages: dict[str, Any], bed: GatewayBed, run_id: str, total: int, seconds: float) -> list[str]:
    """Samples each page's newest line every 0.5 s until the console shows the last or time is up."""
    lags: dict[str, list[float]] = {name: [] for name in (*pages, "floor")}
    behind: dict[str, list[float]] = {name: [] for name in pages}
    answers: dict[str, list[float]] = {name: [] for name in pages}
    newest: dict[str, int] = {name: -1 for name in (*pages, "floor")}
    deadline = time.monotonic() + seconds + 120
    while newest["console"] < total - 1 and time.monotonic() < deadline:
        assert bed.prefect is not None
        floor = floor_newest(bed.prefect.api_url, bed.auth_string, run_id)
        floor_lag = time.time() - floor[1] if floor else None
        if floor:
            lags["floor"].append(floor_lag * 1000)
            newest["floor"] = floor[0]
        for name, page in pages.items():
            asked = time.time()
            shown = page.evaluate(NEWEST_LINE)
            answered = time.time()
            answers[name].append((answered - asked) * 1000)
            if shown:
                lags[name].append((answered - shown[1]) * 1000)
                newest[name] = int(shown[0])
                if floor_lag is not None:
                    behind[name].append(max(0.0, answered - shown[1] - floor_lag) * 1000)
        time.sleep(0.5)
    rows = [f"| {name} | lag, ms | {quantiles(values)} | newest line {newest[name] + 1:,} of {total:,} |"
            for name, values in lags.items()]
    rows += [f"| {name} | behind the floor, ms | {quantiles(values)} | |" for name, values in behind.items()]
    rows += [f"| {name} | page answer time, ms | {quantiles(values)} | |" for name, values in answers.items()]
    return rows


def main(rounds: int, rate: int, seconds: float, screenshot: Path | None) -> None:
    stop = threading.Event()
    with Keycloak() as keycloak, Prometheus() as prometheus, SshServer() as sshd:
        feed_prometheus(prometheus, 12, stop)
        with GatewayBed(keycloak.issuer, settings={"SMS_PROMETHEUS_URL": prometheus.url}) as bed:
            prefect_api = bed.prefect_settings()["PREFECT_API_URL"]
            with PrefectWorker(prefect_api, worker_type="sms", auth_string=bed.auth_string, timeout=120):
                client = GatewayClient(bed.url, token=keycloak.token("adam"))
                host, script = f"bench-ssh-{uuid.uuid4().hex[:6]}", f"bench-printer-{uuid.uuid4().hex[:6]}"
                client.add_host(host, "ssh", address=sshd.host, port=sshd.port, username=sshd.username,
                                private_key=sshd.private_key_pem, host_keys=list(sshd.host_public_keys))
                client.add_script(ScriptSpec(name=script, interpreter="python3", host=host).model_dump(mode="json"), PRINTER)
                with chromium() as browser:
                    page = log_in(browser, bed.url, "adam")
                    page.context.add_init_script(FIGURES_WATCH)
                    print(f"Dashboard, {rounds} loads each (ms from navigation start)")
                    print("| page | measure | p50 | p95 | max |\n| --- | --- | --- | --- | --- |")
                    print("\n".join(dashboard_rounds(page, bed.url, rounds)), flush=True)
                    if screenshot:
                        page.goto(f"{bed.url}/", wait_until="networkidle")
                        page.wait_for_function("() => window.__figuresAt")
                        page.screenshot(path=str(screenshot))
                        print(f"dashboard screenshot: {screenshot}")
                    total = int(rate * seconds)
                    run_id = client.run(script, [str(rate), str(seconds)])
                    pages = {"console": page, "prefect": page.context.new_page()}
                    for tab, path in ((pages["console"], f"/runs/{run_id}"), (pages["prefect"], f"/prefect/runs/flow-run/{run_id}")):
                        tab.set_default_timeout(180_000)  # a loaded machine; the lag samples say how late they show
                        tab.goto(f"{bed.url}{path}", wait_until="commit")
                    print(f"\nFollowing {total:,} lines at {rate:,} lines/s (ms; lag = now - when the line was printed)")
                    print("| page | measure | p50 | p95 | max | note |\n| --- | --- | --- | --- | --- | --- |")
                    print("\n".join(follow(pages, bed, run_id, total, seconds)), flush=True)
                    print(f"run ended: {client.wait(run_id, timeout=300).state}")
    stop.set()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--screenshot", type=Path, default=None)
    options = parser.parse_args()
    main(options.rounds, options.rate, options.seconds, options.screenshot)
