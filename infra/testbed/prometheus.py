"""A private Prometheus (Debian's ``prometheus``) on a loopback port, scraping targets the tests name.

Targets come from a ``file_sd`` file that :meth:`Prometheus.scrape` rewrites; Prometheus applies
new targets on a ~5 s cycle and takes the first sample a scrape interval later, so callers wait
with :meth:`Prometheus.wait_for` (polling), never with a fixed sleep.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from infra.testbed.ports import free_port
from infra.testbed.process import Peer, find_binary


class PrometheusError(RuntimeError):
    """Prometheus refused a query (e.g. bad PromQL); the message is its own."""


class Prometheus(Peer):
    """``prometheus`` with a private config, TSDB folder and port; scrapes every second.

    Example::

        with Prometheus(rule_files=[Path("infra/prometheus/rules/sms.rules.yml")]) as prom:
            prom.scrape("sms-exporter", ["127.0.0.1:9478"])
            prom.wait_for("up{job='sms-exporter'}", lambda r: r and r[0]["value"][1] == "1")
    """

    name = "prometheus"

    def __init__(self, *, rule_files: Sequence[Path] = (), timeout: float = 30.0,
                 tls: tuple[Path, Path, Path] | None = None, scrape_configs: Sequence[dict[str, Any]] = ()) -> None:
        """``tls`` (CA, certificate, key): serve HTTPS and scrape the testbed job over HTTPS
        verified with the CA; ``scrape_configs``: more jobs of Prometheus's own form."""
        super().__init__(timeout=timeout)
        self.rule_files = [Path(path).resolve() for path in rule_files]
        self.tls = tls
        self.scrape_configs = list(scrape_configs)
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def _verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.tls[0])) if self.tls else True

    @property
    def _targets_file(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "targets.json"

    def _start(self) -> None:
        assert self.tmp is not None
        self.port = free_port()
        self._targets_file.write_text("[]")
        testbed: dict[str, Any] = {
            "job_name": "testbed", "file_sd_configs": [{"files": [str(self._targets_file)], "refresh_interval": "1s"}],
        }
        web: list[str] = []
        if self.tls:
            ca, certificate, key = self.tls
            testbed.update(scheme="https", tls_config={"ca_file": str(ca)})
            (self.tmp / "web.yml").write_text(yaml.safe_dump(
                {"tls_server_config": {"cert_file": str(certificate), "key_file": str(key)}}))
            web = [f"--web.config.file={self.tmp / 'web.yml'}"]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [testbed, *self.scrape_configs],
        }
        (self.tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        argv = [
            find_binary("prometheus"),
            f"--config.file={self.tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.tmp / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",
            *web,
        ]
        self.spawn(argv, self._ready)

    def _ready(self) -> bool:
        return httpx.get(f"{self.url}/-/ready", timeout=2, verify=self._verify).status_code == 200

    def scrape(self, job: str, targets: Sequence[str]) -> None:
        """Scrape ``targets`` (``host:port``) as job ``job`` from now on (replaces earlier targets)."""
        entries = [{"targets": list(targets), "labels": {"job": job}}]
        staged = self._targets_file.with_suffix(".tmp")
        staged.write_text(json.dumps(entries))
        staged.replace(self._targets_file)

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``'s ``data``; :class:`PrometheusError` with Prometheus's reason if refused."""
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10, verify=self._verify)
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector ``promql`` evaluates to now."""
        return self.api("query", query=promql)["result"]

    def wait_for(
        self, promql: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Polls ``promql`` until ``done(result)``; returns the last result (check it: it may not be done)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if done(result) or time.monotonic() > deadline:
                return result
            time.sleep(0.5)
