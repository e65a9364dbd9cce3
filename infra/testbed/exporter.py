"""``sms exporter`` as a test-bed peer: its own process on a loopback port, following a Prefect API."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from infra.testbed.prefect_server import prefect_env, venv_binary
from infra.testbed.process import Peer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""(metric name, sorted labels) → value."""


class ExporterProcess(Peer):
    """``sms exporter --port PORT`` following ``api_url``; ``env``: more settings of its own (e.g.
    ``PREFECT_API_AUTH_STRING``). Ready once it follows Prefect's event stream.

    Example::

        with ExporterProcess(prefect.api_url, free_port()) as exporter:
            exporter.value("sms_exporter_connected")   # 1.0
    """

    name = "sms-exporter"

    def __init__(self, api_url: str, port: int, **env: str) -> None:
        super().__init__(timeout=60)
        self.api_url = api_url
        self.port = port
        self.env = env

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    @property
    def target(self) -> str:
        """``host:port``, as Prometheus scrapes it."""
        return f"{self.host}:{self.port}"

    def _start(self) -> None:
        assert self.tmp is not None
        env = prefect_env(self.tmp / "prefect-home",
                          {"PREFECT_API_URL": self.api_url, "SMS_EXPORTER_PROBE_SECONDS": "2", **self.env})
        argv = [venv_binary("sms"), "exporter", "--port", str(self.port)]
        self.spawn(argv, lambda: self.value("sms_exporter_connected") == 1.0, env=env)

    def samples(self) -> Samples:
        """Every sample /metrics shows."""
        text = httpx.get(self.url, timeout=5).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples().get((name, tuple(sorted(labels.items()))))
