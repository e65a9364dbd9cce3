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
import contextvars
import getpass
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sms_plugin import apply as declarative
from sms_plugin import fleet_hosts, host_groups, host_import, selection, tls
from sms_plugin import hosts as host_services
from sms_plugin import runs as run_services
from sms_plugin import scripts as script_services
from sms_plugin.catalog import Catalog, Script, ScriptSpec, ScriptVersion, get_script, list_scripts, list_versions
from sms_plugin.gateway_client import GatewayClient
from sms_plugin.host_listings import HostGroupInfo
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
        return await self.catalog.aio.run(host_groups.listing)

    async def host_group(self, name: str) -> HostGroupInfo:
        return await self.catalog.aio.run(host_groups.show, name)

    async def add_host_group(self, name: str, selector: str, description: str = "", *, overwrite: bool = False) -> HostGroupInfo:
        """Stores a named selector, usable as ``@name``; ``overwrite`` replaces the group's selector."""
        save = host_groups.replace if overwrite else host_groups.add
        return await self.catalog.aio.run(save, name, selector, description, author=self.user)

    async def remove_host_group(self, name: str) -> None:
        await self.catalog.aio.run(host_groups.remove, name, author=self.user)

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
        hosts: str | None = None,
        policy: dict[str, Any] | None = None,
        version: int | None = None,
        parameters: dict[str, Any] | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> RunResult:
        """Starts the script's deployment; with ``wait`` returns once the run has ended.
        ``parameters`` are the script's declared parameters, by name (instead of ``args``).
        ``hosts`` (a host selector, e.g. ``"role=web AND NOT legacy"``) makes it a fleet run on every
        host it picks now, with ``policy`` (``{"parallel": 10, "max_failures": "5%"}``, docs/fleet.md);
        the result's ``.hosts`` tells each host's part."""
        names = None if hosts is None else await fleet_hosts.resolve(self.catalog, hosts)
        run_id = await run_services.start(
            self.catalog, name, args=args, env=env, host=host, hosts=names, policy=policy, version=version,
            parameters=parameters, trigger=self.trigger, user=self.user,
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

    async def logs(self, run_id: str, *, follow: bool = False, host: str | None = None) -> AsyncIterator[LogLine]:
        """The run's log: output lines from Elasticsearch when configured, else Prefect's run log;
        ``host``: only that host's lines of a fleet run."""
        async for line in run_services.logs(run_id, follow=follow, host=host):
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


def blocking_iterator(runner: asyncio.Runner, stream: AsyncIterator[T],
                      context: contextvars.Context | None = None) -> Iterator[T]:
    """The items of an async iterator, each awaited on ``runner`` (in ``context``)."""
    while True:
        try:
            yield runner.run(stream.__anext__(), context=context)  # type: ignore[arg-type]
        except StopAsyncIteration:
            return


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
        with tls.prefect_trust():  # Prefect's clients verify its HTTPS with SMS_CA_BUNDLE (docs/tls.md)
            self._context = contextvars.copy_context()
        self._client = AsyncSMSClient(database_url, user=user)

    def __getattr__(self, name: str) -> Any:
        member = getattr(self._client, name)
        if inspect.isasyncgenfunction(member):
            return self._blocking_iterator(member)
        if inspect.iscoroutinefunction(member):
            return lambda *args, **kwargs: self._runner.run(member(*args, **kwargs), context=self._context)
        return member

    def _blocking_iterator(self, member: Callable[..., AsyncIterator[Any]]) -> Callable[..., Iterator[Any]]:
        def iterate(*args: Any, **kwargs: Any) -> Iterator[Any]:
            return blocking_iterator(self._runner, member(*args, **kwargs), self._context)

        return iterate

    def close(self) -> None:
        self._runner.close()
        self._client.catalog.dispose()

    def __enter__(self) -> SMSClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
