"""A Prometheus ``/metrics`` endpoint of an SMS service: plain HTTP on loopback, HTTPS with a
certificate and key, and plain HTTP beyond loopback only when explicitly allowed (docs/tls.md).

The metrics exporter (``SMS_EXPORTER_*``) and the event publisher (``SMS_EVENTS_METRICS_*``) serve
theirs with it; ``variables`` is the prefix of the settings an error names, followed by the
matching command-line option where the service has them (``sms exporter --tls-cert``...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from sms_plugin.errors import SMSError
from sms_plugin.listening import plain_http_refusal

_OPTIONS = {"PORT": "--port", "TLS_CERT": "--tls-cert", "TLS_KEY": "--tls-key", "ALLOW_PLAIN_HTTP=1": "--insecure-http"}
"""The command-line option of each setting, for a service started with such options."""


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
    options: bool = False
    """Whether the service takes the settings as command-line options too (:data:`_OPTIONS`)."""

    def _named(self, setting: str) -> str:
        """A setting as errors name it: ``SMS_EXPORTER_TLS_CERT (--tls-cert)``."""
        return f"{self.variables}{setting}" + (f" ({_OPTIONS[setting]})" if self.options else "")

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_cert else 'http'}://{self.address}:{self.port}/metrics"

    def serve(self, registry: CollectorRegistry) -> int:
        """Serves ``registry`` on a background thread; returns the port. SMSError naming the
        settings when the certificate lacks its key (or the other way round), when plain HTTP
        would leave loopback unasked, or when the port is taken."""
        cert, key, plain = self._named("TLS_CERT"), self._named("TLS_KEY"), self._named("ALLOW_PLAIN_HTTP=1")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SMSError(f"give both {cert} and {key}, or neither")
        refusal = plain_http_refusal(
            self.what, self.address, tls=self.tls_cert is not None, allowed=self.allow_plain_http, allowed_by=plain,
            remedy=f"give it {cert} and {key}, or keep it on 127.0.0.1 behind a TLS proxy, "
            f"or allow clear text with {plain}",
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
                f"choose another port with {self._named('PORT')}"
            ) from None
        return int(server.server_port)
