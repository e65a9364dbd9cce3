"""HAProxy configurations of the HA topology: one balancer for the gateways and Prefect's API
processes, one for the catalog's Galera nodes (so a drill can take the catalog away alone)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"

DEFAULTS = """global
    maxconn 4096

defaults
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    timeout tunnel 3600s
    timeout check 5s
    default-server inter 1s fall 3 rise 2
"""


def _servers(ports: Sequence[int], extra: str = "", prefix: str = "n") -> str:
    return "\n".join(f"    server {prefix}{i} {LOOPBACK}:{port} check{extra}" for i, port in enumerate(ports))


def _http_backend(name: str, health: str, ports: Sequence[int]) -> str:
    # Only a connection that could not be made is tried on another server: a request that reached a
    # process which then died is not sent twice (a POST could start a run twice).
    return f"""
backend {name}
    mode http
    balance roundrobin
    option httpchk GET {health}
    retry-on conn-failure
    retries 3
    option redispatch
{_servers(ports)}
"""


def balancer_config(
    *, prefect_port: int, prefect_apis: Sequence[int], gateway_port: int, gateway_pem: Path, gateways: Sequence[int]
) -> str:
    """HTTP for Prefect's API processes (health ``/prefect/api/health``) and, when there are
    ``gateways``, HTTPS for them (TLS ends here; ``gateway_pem`` is certificate then key; health
    ``/readyz``)."""
    text = DEFAULTS + f"""
frontend prefect
    mode http
    bind {LOOPBACK}:{prefect_port}
    default_backend prefect
""" + _http_backend("prefect", "/prefect/api/health", prefect_apis)
    if gateways:
        text += f"""
frontend gateways
    mode http
    bind {LOOPBACK}:{gateway_port} ssl crt {gateway_pem}
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    default_backend gateways
""" + _http_backend("gateways", "/readyz", gateways)
    return text


def catalog_config(*, catalog_port: int, galera_nodes: Sequence[int]) -> str:
    """TCP to the Galera nodes: the first takes every connection, the others are backups (writes on
    one node avoid certification conflicts; a backup takes over within about three seconds)."""
    return DEFAULTS + f"""
frontend catalog
    mode tcp
    bind {LOOPBACK}:{catalog_port}
    default_backend catalog

backend catalog
    mode tcp
    option mysql-check user haproxy_check
    # a dead node's connections are cut at once, so the catalog's retry boundary reconnects
    default-server inter 1s fall 3 rise 2 on-marked-down shutdown-sessions
{_servers(galera_nodes[:1])}
{_servers(galera_nodes[1:], " backup", prefix="b")}
"""
