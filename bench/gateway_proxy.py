"""Benchmark: what the gateway adds per proxied Prefect request, against Prefect directly.

Starts the test bed's Keycloak and ``sms gateway`` in front of its own Prefect server (the
``GatewayBed`` of the tests), then, in the same run and interleaved request by request over
kept-alive connections, times each request N times (default 300):

- ``GET /prefect/api/admin/version`` (a ``meta`` read: path, endpoint, token, role);
- ``GET /prefect/api/flows/{id}`` (a ``read``: also the access-rule lookup for narrowed reads);
- ``POST /prefect/api/flow_runs/filter`` with a small JSON body (a ``read`` whose body the
  gateway reads, parses and searches for ``include_secrets`` before forwarding it);

through the gateway with a viewer's bearer token, and straight to Prefect with the auth string
(the baseline). It prints p50/p95 in milliseconds for both and the difference.

Run from the repository root (starts Keycloak, ~1-2 min on a busy machine):
    .venv/bin/python bench/gateway_proxy.py [N]
"""

from __future__ import annotations

import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="sms-bench-gateway-"))
os.environ["SMS_HOME"] = str(_TMP / "sms-home")
os.environ["PREFECT_HOME"] = str(_TMP / "prefect-home")
os.environ.pop("PREFECT_API_URL", None)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from infra.testbed.gateway import GatewayBed  # noqa: E402
from infra.testbed.keycloak import Keycloak  # noqa: E402
from sms_plugin.catalog import Catalog  # noqa: E402


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.95) - 1] * 1000


def timed(client: httpx.Client, method: str, path: str, body: object) -> float:
    started = time.perf_counter()
    reply = client.request(method, path, json=body)
    elapsed = time.perf_counter() - started
    assert reply.status_code == 200, (path, reply.status_code, reply.text[:200])
    return elapsed


def main(count: int) -> None:
    catalog = Catalog()
    catalog.upgrade()
    catalog.dispose()
    with Keycloak() as keycloak, GatewayBed(keycloak.issuer) as bed:
        assert bed.prefect is not None
        auth = base64.b64encode(bed.auth_string.encode()).decode()
        direct = httpx.Client(base_url=bed.prefect.url, headers={"Authorization": f"Basic {auth}"}, timeout=30)
        gateway = httpx.Client(base_url=bed.url, headers={"Authorization": f"Bearer {keycloak.token('viola')}"},
                               timeout=30)
        flow = direct.post("/prefect/api/flows/", json={"name": "bench-flow"}).raise_for_status().json()
        requests = {
            "GET admin/version (meta)": ("GET", "/prefect/api/admin/version", None),
            "GET flows/{id} (read)": ("GET", f"/prefect/api/flows/{flow['id']}", None),
            "POST flow_runs/filter (read, body judged)": ("POST", "/prefect/api/flow_runs/filter", {"limit": 10}),
        }
        for method, path, body in requests.values():  # warm both sides
            for _ in range(20):
                timed(direct, method, path, body), timed(gateway, method, path, body)
        print(f"{count} requests each, interleaved; milliseconds")
        print("| request | Prefect direct p50 | p95 | through the gateway p50 | p95 | added p50 |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, (method, path, body) in requests.items():
            base: list[float] = []
            proxied: list[float] = []
            for _ in range(count):
                base.append(timed(direct, method, path, body))
                proxied.append(timed(gateway, method, path, body))
            b50, b95 = percentiles(base)
            g50, g95 = percentiles(proxied)
            print(f"| {name} | {b50:.1f} | {b95:.1f} | {g50:.1f} | {g95:.1f} | {g50 - b50:+.1f} |", flush=True)
        direct.close()
        gateway.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
