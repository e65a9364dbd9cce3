"""A private Prefect API server (SQLite database, no UI) on a loopback port."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from infra.testbed.ports import free_port
from infra.testbed.process import Peer, find_binary


def venv_binary(name: str) -> str:
    """An executable installed next to the running Python (the project's venv)."""
    return find_binary(str(Path(sys.executable).parent / name))


def prefect_env(home: Path, updates: Mapping[str, str]) -> dict[str, str]:
    """This process's environment for a Prefect child: a private PREFECT_HOME, no inherited
    API URL or profile, then ``updates``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    env["PREFECT_HOME"] = str(home)
    env.update(updates)
    return env

POSTGRESQL_POOL = {
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "20",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "20",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_TIMEOUT": "120",
    "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
}
"""Prefect's connection pool and statement timeout on PostgreSQL (default 5 + 10 connections,
30 s to get one, 10 s a statement): with hundreds of runs starting, requests waited longer than
that and were answered 500 (docs/worker.md)."""


class PrefectServer(Peer):
    """``prefect server start`` with its own PREFECT_HOME and SQLite database (or PostgreSQL).

    Example::

        with PrefectServer() as server:
            httpx.get(server.api_url + "/health")
    """

    name = "prefect-server"

    def __init__(
        self,
        *,
        port: int = 0,
        timeout: float = 240.0,  # a cold start took 63 s on a busy 2-core machine
        database_url: str | None = None,
        base_path: str = "",
        auth_string: str | None = None,
        ui_api_url: str | None = None,
        services: bool = True,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """``port`` 0 picks a free loopback port at start; ``database_url`` (e.g. a
        :class:`~infra.testbed.postgresql.PostgreSQL` peer's ``prefect_url``) replaces the
        private SQLite file. Behind the gateway: ``base_path`` ``/prefect`` serves the UI there
        and the API under ``/prefect/api``, ``auth_string`` is PREFECT_SERVER_API_AUTH_STRING, and
        ``ui_api_url`` (the public API URL) turns the UI on. ``services`` False: an API process
        only (``--no-services``, Prefect's scaled-out server, :class:`PrefectServices`);
        ``extra_env``: more PREFECT_* settings (e.g. Redis messaging)."""
        super().__init__(timeout=timeout)
        self.port = port
        self.database_url = database_url
        self.base_path = base_path.rstrip("/")
        self.auth_string = auth_string
        self.ui_api_url = ui_api_url
        self.services = services
        self.extra_env = dict(extra_env or {})

    @property
    def url(self) -> str:
        """Base URL without the base path, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}{self.base_path}/api"

    def _start(self) -> None:
        self.port = self.port or free_port()
        self.resume()

    def resume(self) -> None:
        """Start the server (again, after ``halt()``) on the same port and database."""
        assert self.tmp is not None
        prefect = venv_binary("prefect")
        env = prefect_env(
            self.tmp / "prefect-home",
            {
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "true" if self.ui_api_url else "false",
                "PREFECT_SERVER_UI_V2_ENABLED": "false",  # as `sms up`: the v1 UI, which calls no analytics host
                # Its UI files in its own folder, as `sms up` does: in the default (Prefect's package
                # folder) every server with a UI rewrites them with its own base path.
                "PREFECT_UI_STATIC_DIRECTORY": str(self.tmp / "ui"),
                # A run of a "queue" script retries its deployment slot after this many seconds (default 30).
                "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
                # As `sms up` does: slot leases on disk, so they survive a server restart.
                "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": (
                    self.database_url or f"sqlite+aiosqlite:///{self.tmp / 'prefect.db'}"
                ),
            },
        )
        if self.database_url:
            env.update(POSTGRESQL_POOL)
        if self.base_path:
            env["PREFECT_SERVER_API_BASE_PATH"] = f"{self.base_path}/api"
            env["PREFECT_UI_SERVE_BASE"] = self.base_path
        if self.ui_api_url:
            env["PREFECT_UI_API_URL"] = self.ui_api_url
        if self.auth_string:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth_string
        env.update(self.extra_env)
        argv = [prefect, "server", "start", "--host", self.host, "--port", str(self.port)]
        self.spawn([*argv, *([] if self.services else ["--no-services"])], self._healthy, env=env)

    def _healthy(self) -> bool:
        return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200


class PrefectServices(Peer):
    """``prefect server services start``: the background services (scheduler, late runs, event
    triggers...) of a server whose API processes run with ``--no-services``."""

    name = "prefect-services"

    def __init__(self, database_url: str, extra_env: Mapping[str, str], *, timeout: float = 120.0) -> None:
        super().__init__(timeout=timeout)
        self.database_url = database_url
        self.extra_env = dict(extra_env)

    def _start(self) -> None:
        self.resume()

    def resume(self) -> None:
        assert self.tmp is not None
        env = prefect_env(
            self.tmp / "prefect-home",
            {"PREFECT_SERVER_DATABASE_CONNECTION_URL": self.database_url, **POSTGRESQL_POOL, **self.extra_env},
        )
        self.spawn([venv_binary("prefect"), "server", "services", "start"], self._running, env=env)

    def _running(self) -> bool:
        return "Starting services" in self.log_path.read_text(errors="replace")
