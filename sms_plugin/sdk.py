"""The Python SDK: ``AsyncSMSClient`` and its blocking twin ``SMSClient`` (same methods).

Both talk to the catalog (``SMS_DATABASE_URL``) and to the Prefect API (``PREFECT_API_URL``)::

    from sms_plugin import SMSClient

    sms = SMSClient()
    sms.add_host("local", "local")
    sms.add_script("hello", interpreter="bash", host="local", content='echo "hello $1"')
    result = sms.run("hello", ["world"])          # waits; RunResult(state='COMPLETED', exit_code=0, ...)
    print(result.output_tail)                     # ['stdout: hello world']
    for line in sms.logs(result.run_id):
        print(line.message)
"""

from __future__ import annotations

import asyncio
import getpass
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from sms_plugin import apply as declarative
from sms_plugin import credentials, host_groups, host_import, selection
from sms_plugin import hosts as host_services
from sms_plugin import runs as run_services
from sms_plugin import scripts as script_services
from sms_plugin.catalog import Catalog, Script, ScriptSpec, ScriptVersion, get_script, list_scripts, list_versions
from sms_plugin.errors import Conflict, InvalidInput, NotFound, SMSError
from sms_plugin.host_groups import HostGroupInfo
from sms_plugin.host_import import ImportPlan
from sms_plugin.host_kinds import build
from sms_plugin.hosts import HostCheck, HostInfo, ScannedKey
from sms_plugin.inventory import Format
from sms_plugin.inventory import read as read_inventory
from sms_plugin.runs import LogLine, RunResult
from sms_plugin.scripts import ScriptChange, SyncReport
from sms_plugin.telemetry.logs import LogEntry
from sms_plugin.telemetry.logs import reader as log_reader

T = TypeVar("T")


class AsyncSMSClient:
    """SMS from async code. ``user`` is recorded as author and requester (default: the OS user)."""

    trigger = "sdk"

    def __init__(self, database_url: str | None = None, *, user: str | None = None) -> None:
        self.catalog = Catalog(database_url)
        self.catalog.upgrade()
        self.user = user or getpass.getuser()

    # hosts
    async def add_host(self, name: str, kind: str, *, overwrite: bool = False, **fields: Any) -> None:
        """Adds a host of ``kind`` (``ssh``, ``local`` or ``windows``) with that kind's block fields
        (docs/hosts.md), secrets as plain strings, e.g.::

            add_host("web-01", "ssh", address="10.0.0.5", username="ops", private_key=key, labels=["prod-eu"])
            add_host("win-01", "windows", address="10.0.0.7", username="CORP\\svc-sms", password=password)

        An SSH host given no ``host_keys`` must be trusted before use (:meth:`trust_host`).
        """
        await host_services.add(name, build(kind, fields), overwrite=overwrite)

    async def hosts(self, select: str | None = None) -> list[HostInfo]:
        """All hosts, or those the host selector ``select`` picks (``"role=web AND NOT legacy"``, docs/fleet.md)."""
        if select is None:
            return await host_services.listing()
        return await selection.selected_hosts(self.catalog, select)

    async def host_groups(self) -> list[HostGroupInfo]:
        return host_groups.listing(self.catalog)

    async def host_group(self, name: str) -> HostGroupInfo:
        return host_groups.show(self.catalog, name)

    async def add_host_group(self, name: str, selector: str, description: str = "", *, overwrite: bool = False) -> HostGroupInfo:
        """Stores a named selector, usable as ``@name``; ``overwrite`` replaces the group's selector."""
        save = host_groups.replace if overwrite else host_groups.add
        return save(self.catalog, name, selector, description, author=self.user)

    async def remove_host_group(self, name: str) -> None:
        host_groups.remove(self.catalog, name, author=self.user)

    async def import_hosts(
        self, path: str | Path, *, format: Format | None = None, dry_run: bool = False, user: str | None = None,
        credentials_from: str | None = None,
    ) -> ImportPlan:
        """Creates or updates SSH hosts (and groups) from an SMS or Ansible inventory file; returns the plan."""
        inventory = read_inventory(Path(path), format)
        planned = await host_import.plan(self.catalog, inventory, user=user, credentials_from=credentials_from)
        if not dry_run:
            await host_import.apply(self.catalog, planned, author=self.user)
        return planned

    async def scan_host_key(self, name: str) -> ScannedKey:
        """The key the host shows now: compare its fingerprint before trusting it."""
        return await host_services.scan_host_key(name)

    async def trust_host(self, name: str, key: ScannedKey) -> None:
        await host_services.pin_host_key(name, key.line)

    async def check_host(self, name: str) -> HostCheck:
        """Checks a host (reachable, login, host key, SSH algorithms, shells); ``.usable``, ``.problems``."""
        return await host_services.check(name)

    # scripts
    async def add_script(self, name: str, *, content: str | None = None, **spec: Any) -> Script:
        """Adds a script; ``spec`` takes the fields of :class:`ScriptSpec` (interpreter, host, ...)."""
        parsed = ScriptSpec.parse({"name": name, **spec})
        return await script_services.add(self.catalog, parsed, content, author=self.user)

    async def update_script(
        self, name: str, *, content: str | None = None, comment: str = "", **spec: Any
    ) -> ScriptChange:
        """Changes the given fields; new ``content`` becomes a new version if it differs."""
        current = ScriptSpec.from_script(await self.catalog.aio.run(get_script, name)).model_dump()
        parsed = ScriptSpec.parse({**current, **spec, "name": name})
        return await script_services.update(self.catalog, parsed, content, author=self.user, comment=comment)

    async def remove_script(self, name: str) -> None:
        await script_services.remove(self.catalog, name, author=self.user)

    async def scripts(self, tag: str | None = None) -> list[Script]:
        return await self.catalog.aio.run(list_scripts, tag=tag)

    async def script(self, name: str) -> Script:
        return await self.catalog.aio.run(get_script, name)

    async def versions(self, name: str) -> list[ScriptVersion]:
        return await self.catalog.aio.run(list_versions, name)

    # runs
    async def run(
        self,
        name: str,
        args: list[str] | None = None,
        *,
        env: dict[str, str] | None = None,
        host: str | None = None,
        version: int | None = None,
        parameters: dict[str, Any] | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> RunResult:
        """Starts the script's deployment; with ``wait`` returns once the run has ended.
        ``parameters`` are the script's declared parameters, by name (instead of ``args``)."""
        run_id = await run_services.start(
            self.catalog, name, args=args, env=env, host=host, version=version, parameters=parameters,
            trigger=self.trigger, user=self.user,
        )
        if wait:
            return await run_services.wait(self.catalog, run_id, timeout=timeout)
        return await run_services.result(self.catalog, run_id)

    async def result(self, run_id: str) -> RunResult:
        return await run_services.result(self.catalog, run_id)

    async def wait(self, run_id: str, timeout: float | None = None) -> RunResult:
        return await run_services.wait(self.catalog, run_id, timeout=timeout)

    async def stop(self, run_id: str) -> str:
        """Cancels the run; the remote process group is killed. Returns the requested state."""
        return await run_services.stop(run_id)

    async def logs(self, run_id: str, *, follow: bool = False) -> AsyncIterator[LogLine]:
        """The run's log: output lines from Elasticsearch when configured, else Prefect's run log."""
        async for line in run_services.logs(run_id, follow=follow):
            yield line

    async def output(self, run_id: str, *, follow: bool = False) -> AsyncIterator[LogEntry]:
        """Every output line of the run from Elasticsearch, with its stream, line number and run facts."""
        async for entry in log_reader.run_output(run_id, follow=follow, ended=lambda: run_services.ended(run_id)):
            yield entry

    async def search_logs(
        self, query: str, *, script: str | None = None, since: str | None = None, limit: int = 100
    ) -> AsyncIterator[LogEntry]:
        """Output lines of any run matching ``query`` (newest first), e.g. ``since="1h"``."""
        async for entry in log_reader.search(query, script=script, since=since, limit=limit):
            yield entry

    # catalog as a whole
    async def sync(self) -> SyncReport:
        return await script_services.sync(self.catalog)

    async def plan(self, path: str | Path) -> declarative.Plan:
        return await declarative.plan(self.catalog, Path(path))

    async def apply(self, path: str | Path) -> declarative.Plan:
        """Applies a declarative catalog file or folder; returns the plan it carried out."""
        planned = await declarative.plan(self.catalog, Path(path))
        await declarative.apply(self.catalog, planned, author=self.user)
        return planned


def blocking_iterator(runner: asyncio.Runner, stream: AsyncIterator[T]) -> Iterator[T]:
    """The items of an async iterator, each awaited on ``runner``."""
    while True:
        try:
            yield runner.run(stream.__anext__())  # type: ignore[arg-type]
        except StopAsyncIteration:
            return


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

    Errors are :class:`~sms_plugin.errors.SMSError` carrying the gateway's explanation.
    """

    def __init__(
        self,
        gateway_url: str,
        *,
        token: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        verify: bool | str = True,
    ) -> None:
        if (client_id is None) != (client_secret is None):
            raise InvalidInput("give both client_id and client_secret, or neither")
        self.gateway_url = gateway_url.rstrip("/")
        self._token = token
        self._client_credentials = (client_id, client_secret) if client_id and client_secret else None
        self._expires_at = 0.0
        self._http = httpx.Client(base_url=f"{self.gateway_url}/api/v1", timeout=60, verify=verify)

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

    def remove_script(self, name: str) -> None:
        self._call("DELETE", f"/scripts/{name}")

    def versions(self, name: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/scripts/{name}/versions")

    def version(self, name: str, number: int) -> dict[str, Any]:
        """One version, with its content."""
        return self._call("GET", f"/scripts/{name}/versions/{number}")

    def run(
        self, name: str, args: list[str] | None = None, *, host: str | None = None, version: int | None = None,
        parameters: dict[str, Any] | None = None, env: dict[str, str] | None = None,
    ) -> str:
        """Start the script; returns the run id at once."""
        given = {"args": args, "host": host, "version": version, "parameters": parameters, "env": env}
        body = {k: v for k, v in given.items() if v is not None}
        return str(self._call("POST", f"/scripts/{name}/runs", json=body)["run_id"])

    def run_status(self, run_id: str) -> dict[str, Any]:
        """State, exit code and output tail of a run."""
        return self._call("GET", f"/runs/{run_id}")

    def runs(self, script: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/runs", params={"script": script} if script else None)

    def stop(self, run_id: str) -> str:
        return str(self._call("POST", f"/runs/{run_id}/stop")["state"])

    def logs(self, run_id: str, *, offset: int = 0) -> list[dict[str, Any]]:
        """The run's log lines from ``offset`` on, oldest first (one page)."""
        return self._call("GET", f"/runs/{run_id}/logs", params={"offset": offset} if offset else None)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SMSClient:
    """The blocking SMS SDK: every method of :class:`AsyncSMSClient`, without ``await``.

    ``logs``, ``output`` and ``search_logs`` return plain iterators. ``SMSClient(gateway_url=...,
    token=... | client_id=..., client_secret=...)`` returns a :class:`GatewayClient` instead (SMS
    through the gateway).
    """

    def __new__(cls, *args: Any, gateway_url: str | None = None, **kwargs: Any) -> Any:
        if gateway_url is not None:
            return GatewayClient(gateway_url, **kwargs)
        return super().__new__(cls)

    def __init__(self, database_url: str | None = None, *, user: str | None = None) -> None:
        self._runner = asyncio.Runner()
        self._client = AsyncSMSClient(database_url, user=user)

    def __getattr__(self, name: str) -> Any:
        member = getattr(self._client, name)
        if inspect.isasyncgenfunction(member):
            return self._blocking_iterator(member)
        if inspect.iscoroutinefunction(member):
            return lambda *args, **kwargs: self._runner.run(member(*args, **kwargs))
        return member

    def _blocking_iterator(self, member: Callable[..., AsyncIterator[Any]]) -> Callable[..., Iterator[Any]]:
        def iterate(*args: Any, **kwargs: Any) -> Iterator[Any]:
            return blocking_iterator(self._runner, member(*args, **kwargs))

        return iterate

    def close(self) -> None:
        self._runner.close()
        self._client.catalog.dispose()

    def __enter__(self) -> SMSClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
