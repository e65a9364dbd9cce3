"""HTTPS in front of test-bed peers that serve plain HTTP only (Elasticsearch's test distribution,
the Prefect server): HAProxy terminates TLS with a certificate of the test CA and forwards to the
peer on loopback (docs/tls.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infra.testbed.haproxy import HAProxy
from infra.testbed.ports import LOOPBACK, free_port

_GLOBAL = """global
    maxconn 256
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
"""


@dataclass(frozen=True)
class Front:
    """One HTTPS front: ``name``, the plain-HTTP port behind it, and an optional path prefix the
    front removes before forwarding (e.g. ``/prefect`` for a Prefect served at its root)."""

    name: str
    backend_port: int
    strip_prefix: str = ""


def tls_fronts(fronts: list[Front], certificate: Path, key: Path, workdir: Path) -> tuple[HAProxy, dict[str, str]]:
    """A started HAProxy with one HTTPS frontend per ``fronts`` entry; returns it and each front's
    ``https://127.0.0.1:PORT`` base URL by name."""
    bundle = workdir / "front.pem"  # HAProxy reads the certificate and its key from one file
    workdir.mkdir(parents=True, exist_ok=True)
    bundle.write_bytes(certificate.read_bytes() + key.read_bytes())
    bundle.chmod(0o600)
    parts, urls = [_GLOBAL], {}
    for front in fronts:
        port = free_port()
        urls[front.name] = f"https://{LOOPBACK}:{port}"
        rewrite = (f"    http-request replace-path ^{front.strip_prefix}(/.*)$ \\1\n" if front.strip_prefix else "")
        parts.append(
            f"frontend {front.name}\n    bind {LOOPBACK}:{port} ssl crt {bundle}\n{rewrite}"
            f"    default_backend {front.name}_plain\n"
            f"backend {front.name}_plain\n    server {front.name} {LOOPBACK}:{front.backend_port}\n"
        )
    proxy = HAProxy("".join(parts), workdir).start()
    return proxy, urls
