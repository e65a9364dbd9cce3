"""``sms up``: SMS on one machine, in the foreground.

Starts a Prefect server (SQLite, UI included) under ``$SMS_HOME/prefect``, a worker for the SMS
work pool (the in-process ``sms`` worker; a process per run with ``SMS_WORKER_TYPE=sms-process``), the
metrics exporter (``sms exporter``, docs/metrics.md) and, with ``SMS_ELASTICSEARCH_URL``, the log
shipper (docs/logs.md) and, with ``SMS_KAFKA_BOOTSTRAP``, the event publisher (``sms events``,
docs/events.md); registers the local host and applies the sample catalog. Ctrl-C (or
SIGTERM) stops the children, then the server: the worker first cancels its runs in flight and
waits (at most SMS_WORKER_STOP_SECONDS) until their process groups are killed on their hosts and
the runs are Cancelled. Logs go to ``$SMS_HOME/logs/``.

With ``SMS_OIDC_ISSUER`` set, the gateway starts too (``sms gateway``, docs/gateway.md): Prefect
then serves under ``/prefect`` on loopback behind a fresh random auth string that only the
gateway, the worker and this process know, and people use Prefect through the gateway.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console

from sms_plugin import apply as declarative
from sms_plugin.catalog import Catalog
from sms_plugin.deploy import ensure_work_pool, sync_housekeeping
from sms_plugin.errors import Conflict, SMSError
from sms_plugin.host_kinds import LocalHost
from sms_plugin.settings import current, shown_database_url
from sms_plugin.telemetry.exporter import exporter_url

_SERVER_START_SECONDS = 120
_STOP_GRACE_SECONDS = 15


class EmbeddedStack:
    def __init__(self, *, port: int, catalog_path: Path, console: Console) -> None:
        self.port = port
        self.catalog_path = catalog_path
        self.console = console
        self.settings = current()
        self.gateway = self.settings.gateway() if self.settings.gateway_configured() else None
        self.auth_string = secrets.token_urlsafe(24) if self.gateway else None
        self.api_url = f"http://127.0.0.1:{port}{'/prefect' if self.gateway else ''}/api"
        self.logs = self.settings.catalog.folder() / "logs"
        self._children: list[subprocess.Popen[bytes]] = []
        self._worker: subprocess.Popen[bytes] | None = None

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("PREFECT_HOME", str(self.settings.catalog.folder() / "prefect"))
        # Prefect copies its UI files, with the base path written into them, into its package's
        # folder by default: shared by every server of the installation (the last one started with
        # another base path breaks the others' pages) and not writable in a read-only install.
        env.setdefault("PREFECT_UI_STATIC_DIRECTORY", str(Path(env["PREFECT_HOME"]) / "ui"))
        # Concurrency slot leases (per-host limits, single-instance scripts) survive a server restart;
        # a queued single-instance run retries every 5 s instead of 30 s (docs/decisions.md#concurrency).
        env.setdefault("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", "prefect.server.concurrency.lease_storage.filesystem")
        env.setdefault("PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS", "5")
        env.update(
            PREFECT_API_URL=self.api_url,
            SMS_HOME=str(self.settings.catalog.folder()),
            SMS_DATABASE_URL=self.settings.catalog.database_url(),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            # The v2 UI starts an analytics client at every page load whatever that setting says;
            # the v1 UI has none (docs/decisions.md#the-prefect-ui-calls-no-analytics-host).
            PREFECT_SERVER_UI_V2_ENABLED="false",
            PREFECT_WORKER_QUERY_SECONDS=env.get("PREFECT_WORKER_QUERY_SECONDS", "2"),
        )
        if self.gateway and self.auth_string:
            env.update(
                PREFECT_SERVER_API_BASE_PATH="/prefect/api",
                PREFECT_UI_SERVE_BASE="/prefect",
                PREFECT_UI_API_URL=f"{self.gateway.base_url}/prefect/api",
                PREFECT_UI_URL=f"{self.gateway.base_url}/prefect",  # the workers' "View at" links
                PREFECT_SERVER_API_AUTH_STRING=self.auth_string,
                PREFECT_API_AUTH_STRING=self.auth_string,
                SMS_GATEWAY_PREFECT_URL=f"http://127.0.0.1:{self.port}",
                SMS_GATEWAY_PREFECT_AUTH_STRING=self.auth_string,
            )
        return env

    def _spawn(self, name: str, *args: str, program: str = "prefect") -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        executable = str(Path(sys.executable).with_name(program))
        child = subprocess.Popen(
            [executable, *args], env=self._environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._children.append(child)
        return child

    def _wait_for_server(self, server: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + _SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SMSError(f"the Prefect server stopped at start-up; see {self.logs / 'server.log'}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SMSError(f"the Prefect server did not answer within {_SERVER_START_SECONDS} s; see {self.logs}")

    def _port_taken(self) -> bool:
        try:
            httpx.get(f"{self.api_url}/health", timeout=1)
        except httpx.HTTPError:
            return False
        return True

    def _local_host(self) -> LocalHost:
        """Host ``local``: scripts run as ``sms-run`` (infra/bootstrap.sh creates it); a worker that
        is not root cannot switch accounts, so they then run as its own account, with a warning."""
        if os.geteuid() == 0:
            return LocalHost()
        account = pwd.getpwuid(os.geteuid()).pw_name
        self.console.print(
            f"[yellow]Host local runs scripts as {account}, the worker's own account: they can read the "
            "worker's environment and files. Run sms up as root to run them as sms-run.[/]"
        )
        return LocalHost(run_as=account)

    async def _prepare(self) -> None:
        from sms_plugin import hosts

        catalog = Catalog()
        catalog.upgrade()
        await ensure_work_pool()
        await sync_housekeeping()
        try:
            await hosts.add("local", self._local_host())
        except Conflict:
            pass
        if self.catalog_path.exists():
            planned = await declarative.plan(catalog, self.catalog_path)
            await declarative.apply(catalog, planned, author="sms up")
            self.console.print(f"Catalog {self.catalog_path}: {len(planned.pending)} change(s) applied")

    def run(self) -> None:
        if self._port_taken():
            raise SMSError(f"something already answers on port {self.port}; stop it or use `sms up --port N`")
        os.environ.update(PREFECT_API_URL=self.api_url, PREFECT_HOME=self._environment()["PREFECT_HOME"])
        if self.auth_string:
            os.environ["PREFECT_API_AUTH_STRING"] = self.auth_string
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            self.console.print(f"Starting the Prefect server on 127.0.0.1:{self.port} (logs in {self.logs})")
            server = self._spawn("server", "server", "start", "--host", "127.0.0.1", "--port", str(self.port))
            self._wait_for_server(server)
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
                asyncio.run(self._prepare())
            self._worker = self._spawn("worker", "worker", "--pool", self.settings.worker.pool, "--type", self.settings.worker.type, program="sms")
            self._spawn("exporter", "exporter", program="sms")
            if self.settings.logs.elasticsearch_url:  # delivers script output the runs could not deliver themselves
                self._spawn("log-shipper", "log-shipper", program="sms")
            if self.gateway:
                self._spawn("gateway", "gateway", program="sms")
            if self.settings.events.kafka_bootstrap:  # catalog and run events to Kafka (docs/events.md)
                self._spawn("events", "events", program="sms")
            self._announce()
            while all(child.poll() is None for child in self._children):
                time.sleep(1)
            raise SMSError(f"a child process stopped unexpectedly; see {self.logs}")
        except KeyboardInterrupt:
            self.console.print("Stopping...")
        finally:
            self._stop()

    def _announce(self) -> None:
        if self.gateway:
            self.console.print(
                f"\n[bold green]SMS is up.[/] Gateway: {self.gateway.base_url}  (log in at /auth/login; "
                f"Prefect UI at {self.gateway.base_url}/prefect/, REST API at /api/v1, logs in {self.logs})\n"
                f"Catalog: {shown_database_url()}\n"
                f"The CLI, from any machine, needs no database or Prefect settings:\n"
                f"  sms login --gateway {self.gateway.base_url}\n  sms script list\n  sms run hello-bash --wait -- world\n"
                f"Press Ctrl-C to stop.\n"
            )
            return
        ui = self.api_url.removesuffix("/api")
        self.console.print(
            f"\n[bold green]SMS is up.[/] Prefect UI: {ui}  (API {self.api_url})\n"
            f"Catalog: {shown_database_url()}\n"
            f"Metrics: {exporter_url()} (see {self.logs / 'exporter.log'})\n"
            f"In another shell: export PREFECT_API_URL={self.api_url}\n"
            f"  sms script list\n  sms run hello-bash --wait -- world\n"
            f"Press Ctrl-C to stop.\n"
        )

    def _stop(self) -> None:
        """Stops the children, the server last: SIGTERM to each one's process group, SIGKILL if it
        outlives its grace. The worker alone gets SIGTERM (its runs' processes are not to be
        signalled) and more time: it cancels its runs first, which needs the server."""
        for child in reversed(self._children):
            if child.poll() is None:
                is_worker = child is self._worker
                if is_worker:
                    child.send_signal(signal.SIGTERM)
                else:
                    os.killpg(child.pid, signal.SIGTERM)
                try:
                    child.wait(_STOP_GRACE_SECONDS + (self.settings.worker.stop_seconds if is_worker else 0))
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
        self._children.clear()
