"""A Prometheus ``/metrics`` endpoint of an SMS service: plain HTTP on loopback, HTTPS with a
certificate and key, and plain HTTP beyond loopback only when explicitly allowed (docs/tls.md).

The metrics exporter (``SMS_EXPORTER_*``) and the event publisher (``SMS_EVENTS_METRICS_*``) serve
theirs with it; ``variables`` is the prefix of the settings an error names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from sms_plugin.errors import SMSError
from sms_plugin.listening import plain_http_refusal


@dataclass(frozen=True)
class MetricsEndpoint:
    """Where ``/metrics`` is served (port 0: a free one) and with which certificate, if any."""

    what: str
    """The server, as errors name it: "the exporter"."""
    variables: str
    """Prefix of its settings: ``SMS_EXPORTER_`` names SMS_EXPORTER_TLS_CERT, SMS_EXPORTER_PORT..."""
    address: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_plain_http: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_cert else 'http'}://{self.address}:{self.port}/metrics"

    def serve(self, registry: CollectorRegistry) -> int:
        """Serves ``registry`` on a background thread; returns the port. SMSError naming the
        settings when the certificate lacks its key (or the other way round), when plain HTTP
        would leave loopback unasked, or when the port is taken."""
        prefix = self.variables
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SMSError(f"give both {prefix}TLS_CERT and {prefix}TLS_KEY, or neither")
        refusal = plain_http_refusal(
            self.what, self.address, tls=self.tls_cert is not None, allowed=self.allow_plain_http,
            allowed_by=f"{prefix}ALLOW_PLAIN_HTTP=1",
            remedy=f"give it {prefix}TLS_CERT and {prefix}TLS_KEY, or keep it on 127.0.0.1 behind a TLS proxy, "
            f"or allow clear text with {prefix}ALLOW_PLAIN_HTTP=1",
        )
        if refusal:
            raise SMSError(refusal)
        try:
            server, _ = start_http_server(self.port, self.address, registry=registry,
                                          certfile=str(self.tls_cert) if self.tls_cert else None,
                                          keyfile=str(self.tls_key) if self.tls_key else None)
        except OSError as error:
            raise SMSError(
                f"cannot serve metrics on {self.address}:{self.port}: {error.strerror or error}; "
                f"choose another port with {prefix}PORT"
            ) from None
        return int(server.server_port)
