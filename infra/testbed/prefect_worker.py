"""A Prefect process worker polling a work pool of the test bed's Prefect server."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping

import httpx

from infra.testbed.prefect_server import prefect_env, venv_binary
from infra.testbed.process import Peer


class PrefectWorker(Peer):
    """``prefect worker start --type process`` (creates the pool if missing), polling every 1 s.
    ``worker_type="sms"`` starts SMS's in-process worker instead (docs/worker.md), ``limit`` caps
    its concurrent runs. ``auth_string``: the server answers only callers with it (a gateway's Prefect).

    Example::

        with PrefectWorker(server.api_url, extra_env={"SMS_HOME": "/tmp/x"}) as worker:
            ...  # flow runs of deployments in pool "sms" now run in subprocesses of the worker
    """

    name = "prefect-worker"

    def __init__(
        self,
        api_url: str,
        *,
        pool: str = "sms",
        extra_env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        worker_type: str = "process",
        limit: int | None = None,
        auth_string: str | None = None,
    ) -> None:
        super().__init__(timeout=timeout)
        self.api_url = api_url
        self.pool = pool
        self.worker_type = worker_type
        self.limit = limit
        self.worker_name = f"sms-testbed-{worker_type}-{os.getpid()}-{id(self):x}"
        self.extra_env = dict(extra_env or {})
        self.auth_string = auth_string
        if auth_string:
            self.extra_env["PREFECT_API_AUTH_STRING"] = auth_string

    def _start(self) -> None:
        assert self.tmp is not None
        env = prefect_env(
            self.tmp / "prefect-home",
            {
                "PREFECT_API_URL": self.api_url,
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_WORKER_PREFETCH_SECONDS": "1",
                **self.extra_env,
            },
        )
        argv = [
            venv_binary("prefect"),
            "worker",
            "start",
            "--pool",
            self.pool,
            "--type",
            self.worker_type,
            "--name",
            self.worker_name,
            *(["--limit", str(self.limit)] if self.limit else []),
        ]
        self.spawn(argv, self._started, env=env)

    def _started(self) -> bool:
        if f"Worker {self.worker_name!r} started!" not in self.log_path.read_text(errors="replace"):
            return False
        auth = self.extra_env.get("PREFECT_API_AUTH_STRING")  # given as auth_string= or in extra_env
        headers = {"Authorization": f"Basic {base64.b64encode(auth.encode()).decode()}"} if auth else {}
        response = httpx.get(f"{self.api_url}/work_pools/{self.pool}", timeout=2, headers=headers)
        return response.status_code == 200
