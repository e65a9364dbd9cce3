"""SMS through the gateway's REST API (``/api/v1``): :class:`GatewayClient`, as the caller's
Keycloak identity. What the ``sms`` command uses after ``sms login``, and what
``SMSClient(gateway_url=...)`` returns; it needs neither Prefect nor the catalog."""

from __future__ import annotations

import ssl
import time
from typing import Any

import httpx

from sms_plugin import credentials, tls
from sms_plugin.errors import Conflict, InvalidInput, NotFound, SMSError
from sms_plugin.run_results import HostResult, RunResult


def gateway_error(reply: httpx.Response) -> SMSError:
    """The SMS error for a gateway's error answer, carrying its status and reason."""
    try:
        detail: Any = reply.json().get("detail", reply.text)
    except (ValueError, AttributeError):
        detail = reply.text[:300]
    if isinstance(detail, list):  # request validation: [{"loc": [...], "msg": ...}, ...]
        detail = "; ".join(f"{'.'.join(map(str, e.get('loc', [])[1:]))}: {e.get('msg')}" for e in detail)
    message = f"the gateway answered {reply.status_code}: {detail}"
    kind = {404: NotFound, 409: Conflict, 422: InvalidInput}.get(reply.status_code, SMSError)
    if reply.status_code == 401:
        message += "; run `sms login` again"
    return kind(message)


class GatewayClient:
    """SMS through the gateway's REST API (``/api/v1``), as the caller's Keycloak identity.

    Credentials, first that applies: ``token`` (an access token), ``client_id`` + ``client_secret``
    (client credentials grant, renewed when it expires), else the login ``sms login`` stored::

        sms = SMSClient(gateway_url="https://sms.example:8443", client_id="ci-bot", client_secret="...")
        run_id = sms.run("backup", ["--full"])
        print(sms.run_status(run_id)["state"])

    Errors are :class:`~sms_plugin.errors.SMSError` carrying the gateway's explanation. ``verify``:
    None (default) trusts ``SMS_CA_BUNDLE`` or the system store (docs/tls.md); a CA file's path or an
    SSL context trusts those instead. Verification cannot be turned off.
    """

    def __init__(
        self,
        gateway_url: str,
        *,
        token: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        verify: str | ssl.SSLContext | None = None,
    ) -> None:
        if (client_id is None) != (client_secret is None):
            raise InvalidInput("give both client_id and client_secret, or neither")
        self.gateway_url = gateway_url.rstrip("/")
        self._token = token
        self._client_credentials = (client_id, client_secret) if client_id and client_secret else None
        self._expires_at = 0.0
        if isinstance(verify, bool):
            raise SMSError("verify takes a CA file or an SSL context; TLS verification cannot be turned off")
        trust = tls.client_context() if verify is None else verify  # None: SMS_CA_BUNDLE or the system store
        self._http = httpx.Client(base_url=f"{self.gateway_url}/api/v1", timeout=60, verify=trust)

    def _bearer(self) -> str:
        if self._token and not self._client_credentials:
            return self._token
        if self._client_credentials:
            if not self._token or time.time() > self._expires_at - 30:
                provider = credentials.discover(self.gateway_url)
                client_id, secret = self._client_credentials
                reply = httpx.post(
                    provider.token_endpoint,
                    data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
                    timeout=30,
                    verify=tls.client_context(),
                )
                if reply.status_code >= 400:
                    raise SMSError(f"client credentials refused: {reply.json().get('error_description', reply.text[:200])}")
                self._token = reply.json()["access_token"]
                self._expires_at = time.time() + float(reply.json().get("expires_in", 60))
            return str(self._token)
        stored = credentials.load()
        if stored is None:
            raise SMSError("not logged in: run `sms login --gateway URL`, or pass token= or client_id=/client_secret=")
        return credentials.access_token(stored)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            reply = self._http.request(method, path, headers={"Authorization": f"Bearer {self._bearer()}"}, **kwargs)
        except httpx.TransportError as error:
            raise SMSError(f"cannot reach the gateway at {self.gateway_url}: {type(error).__name__}") from None
        if reply.status_code >= 400:
            raise gateway_error(reply)
        return reply.json() if reply.content else None

    def hosts(self, select: str | None = None) -> list[dict[str, Any]]:
        """The hosts the caller may read; with ``select``, those the host selector picks."""
        return self._call("GET", "/hosts", params={"select": select} if select is not None else None)

    def host_groups(self) -> list[dict[str, Any]]:
        return self._call("GET", "/host-groups")

    def host_group(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/host-groups/{name}")

    def add_host_group(self, name: str, selector: str, description: str = "") -> dict[str, Any]:
        """Add a host group (admins)."""
        return self._call("POST", "/host-groups", json={"name": name, "selector": selector, "description": description})

    def replace_host_group(self, name: str, selector: str, description: str = "") -> dict[str, Any]:
        return self._call("PUT", f"/host-groups/{name}", json={"selector": selector, "description": description})

    def remove_host_group(self, name: str) -> None:
        self._call("DELETE", f"/host-groups/{name}")

    def judge_selection(self, selector: str, *, script: str | None = None, action: str = "start") -> dict[str, Any]:
        """Whether the caller may ``action`` (``script``) on every host ``selector`` picks; a refusal names the hosts."""
        body = {"selector": selector, "action": action, **({"script": script} if script else {})}
        return self._call("POST", "/selections/judge", json=body)

    def add_host(self, name: str, kind: str, *, overwrite: bool = False, **fields: Any) -> dict[str, Any]:
        """Add a host (admins), as :meth:`AsyncSMSClient.add_host`: the kind's fields, secrets as strings."""
        return self._call("POST", "/hosts", json={"name": name, "kind": kind, "overwrite": overwrite, **fields})

    def check_host(self, name: str) -> dict[str, Any]:
        """Run the host check on the gateway's side (admins): ``{"usable": ..., "check": {...}}``."""
        return self._call("POST", f"/hosts/{name}/check")

    def host_key(self, name: str) -> dict[str, Any]:
        """The key SSH host ``name`` shows now, with its fingerprint (admins); nothing is pinned."""
        return self._call("GET", f"/hosts/{name}/host-key")

    def trust_host(self, name: str, fingerprint: str) -> dict[str, Any]:
        """Pin the key SSH host ``name`` shows if its fingerprint is still ``fingerprint`` (admins);
        a Conflict, and nothing pinned, if the host shows another key now."""
        return self._call("POST", f"/hosts/{name}/trust", json={"fingerprint": fingerprint})

    def scripts(self, tag: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/scripts", params={"tag": tag} if tag else None)

    def script(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/scripts/{name}")

    def add_script(self, spec: dict[str, Any], content: str | None = None, comment: str = "") -> dict[str, Any]:
        """Add a script (authors): its settings (the fields of a catalog entry) and its content."""
        return self._call("POST", "/scripts", json={**spec, "content": content, "comment": comment})

    def push(self, name: str, content: str, comment: str = "") -> dict[str, Any]:
        """Store ``content`` as the script's next version; ``created`` is False when it is unchanged."""
        return self._call("POST", f"/scripts/{name}/versions", json={"content": content, "comment": comment})

    def update_script(self, name: str, **settings: Any) -> dict[str, Any]:
        """Change a script's settings (``PATCH /scripts/{name}``), e.g. ``host=None, targets="role=web"``."""
        return self._call("PATCH", f"/scripts/{name}", json=settings)

    def remove_script(self, name: str) -> None:
        self._call("DELETE", f"/scripts/{name}")

    def versions(self, name: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/scripts/{name}/versions")

    def version(self, name: str, number: int) -> dict[str, Any]:
        """One version, with its content."""
        return self._call("GET", f"/scripts/{name}/versions/{number}")

    def run(
        self, name: str, args: list[str] | None = None, *, host: str | None = None, hosts: str | None = None,
        policy: dict[str, Any] | None = None, version: int | None = None, parameters: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """Start the script; returns the run id at once. ``hosts`` (a host selector) makes it a fleet
        run on every host it picks, with ``policy`` (``parallel``, ``batch``, ``max_failures``, ...)."""
        given = {"args": args, "host": host, "hosts": hosts, "policy": policy, "version": version,
                 "parameters": parameters, "env": env}
        body = {k: v for k, v in given.items() if v is not None}
        return str(self._call("POST", f"/scripts/{name}/runs", json=body)["run_id"])

    def run_status(self, run_id: str) -> dict[str, Any]:
        """State, exit code, output tail and per-host results of a run, as the gateway answers."""
        return self._call("GET", f"/runs/{run_id}")

    def result(self, run_id: str) -> RunResult:
        """The run now, with ``.hosts`` (per-host results of a fleet run)."""
        data = self.run_status(run_id)
        return RunResult(run_id, data["state"], data["message"], data["exit_code"], list(data["output_tail"]),
                         tuple(HostResult(**host) for host in data.get("hosts", [])))

    def wait(self, run_id: str, timeout: float | None = None, *, poll: float = 1.0) -> RunResult:
        """The run's result once it has ended; TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (result := self.result(run_id)).ended:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(run_id)
            time.sleep(poll)
        return result

    def runs(self, script: str | None = None, *, limit: int = 50) -> list[dict[str, Any]]:
        """The runs the caller may read, newest first (at most ``limit``)."""
        return self._call("GET", "/runs", params={"limit": limit, **({"script": script} if script else {})})

    def stop(self, run_id: str) -> str:
        return str(self._call("POST", f"/runs/{run_id}/stop")["state"])

    def logs(self, run_id: str, *, offset: int = 0, host: str | None = None) -> list[dict[str, Any]]:
        """The run's log lines from ``offset`` on, oldest first (one page); ``host``: that host's only."""
        given = {"offset": offset or None, "host": host}
        return self._call("GET", f"/runs/{run_id}/logs", params={k: v for k, v in given.items() if v is not None} or None)

    def access_rules(self) -> list[dict[str, Any]]:
        """The access rules, oldest first (admins)."""
        return self._call("GET", "/access-rules")

    def webhooks(self, script: str | None = None) -> list[dict[str, Any]]:
        """The webhooks (``script``: of that script only), oldest first, without their secrets (admins)."""
        return self._call("GET", "/webhooks", params={"script": script} if script else None)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
