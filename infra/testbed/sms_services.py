"""SMS's own services as test-bed peers: ``sms events`` (the Kafka publisher, docs/events.md) and
``sms log-shipper`` (script output to Elasticsearch, docs/logs.md)."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

from infra.testbed.ports import free_port
from infra.testbed.prefect_server import prefect_env, venv_binary
from infra.testbed.process import Peer


class EventsPublisher(Peer):
    """``sms events`` as its own process, on the catalog of ``SMS_DATABASE_URL`` (or ``SMS_HOME``)
    and the Prefect server of ``api_url``; ``extra_env`` adds settings (e.g. the HA topology's)."""

    name = "sms-events"

    def __init__(self, api_url: str, bootstrap: str, *, extra_env: Mapping[str, str] | None = None) -> None:
        super().__init__(timeout=60, grace=10)
        self.api_url, self.bootstrap, self.port = api_url, bootstrap, free_port()
        self.extra_env = dict(extra_env or {})

    def _start(self) -> None:
        assert self.tmp is not None
        env = prefect_env(self.tmp / "prefect-home", {
            **self.extra_env,
            "PREFECT_API_URL": self.api_url, "SMS_KAFKA_BOOTSTRAP": self.bootstrap,
            "SMS_EVENTS_METRICS_PORT": str(self.port), "SMS_EVENTS_SEND_TIMEOUT_SECONDS": "5"})
        self.spawn([venv_binary("sms"), "events"], lambda: self.value("sms_events_published_position") is not None,
                   env=env)

    def value(self, name: str) -> float | None:
        text = httpx.get(f"http://{self.host}:{self.port}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return sample.value
        return None

    def kill(self) -> None:
        """SIGKILL, as a crash: no delivery report is waited for, nothing is flushed."""
        assert self.process is not None and self.process.popen is not None
        os.kill(self.process.popen.pid, signal.SIGKILL)
        self.process.popen.wait(10)
        self.process.stop(0)
        self.process = None

    def restart(self) -> None:
        """Start again after :meth:`kill` (same port, same settings)."""
        assert self.process is None, "kill() first"
        self._start()


class LogShipper(Peer):
    """``sms log-shipper`` delivering the spool of ``SMS_HOME`` to ``elasticsearch_url`` (one node
    or a comma-separated cluster); ``extra_env`` adds settings (e.g. the workers' ``SMS_HOME``)."""

    name = "sms-log-shipper"

    def __init__(self, elasticsearch_url: str, *, extra_env: Mapping[str, str] | None = None) -> None:
        super().__init__(timeout=60, grace=10)
        self.elasticsearch_url = elasticsearch_url
        self.extra_env = dict(extra_env or {})

    def _start(self) -> None:
        assert self.tmp is not None
        env = prefect_env(self.tmp / "prefect-home", {**self.extra_env, "SMS_ELASTICSEARCH_URL": self.elasticsearch_url})
        self.spawn([venv_binary("sms"), "log-shipper"], lambda: True, env=env)  # it has no port: alive is ready
