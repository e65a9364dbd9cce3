"""Where the ``sms`` command's verbs are carried out: the local catalog and Prefect (``LocalBackend``),
or the gateway's REST API with the token ``sms login`` stored (``GatewayBackend``).

The CLI formats, a backend fetches: both answer with the same plain values (``ScriptSpec``,
``Version``, ``HostInfo``, ``RunResult``, ``LogLine``). :func:`current` picks one: the gateway
when a login is stored, unless ``--local`` / ``SMS_LOCAL=1`` asks for the local catalog.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sms_plugin import credentials
from sms_plugin.access_listings import AccessRuleInfo, WebhookInfo
from sms_plugin.catalog.spec import ScriptSpec
from sms_plugin.errors import SMSError
from sms_plugin.lazy import lazy_module
from sms_plugin.host_listings import HostGroupInfo, HostInfo
from sms_plugin.run_results import LogLine, RunResult, RunSummary

if TYPE_CHECKING:
    from sms_plugin import apply as declarative
    from sms_plugin import fleet_hosts, host_groups, host_import, selection
    from sms_plugin import hosts as host_services
    from sms_plugin import runs as run_services
    from sms_plugin import scripts as script_services
    from sms_plugin.catalog import Catalog, ScriptVersion
    from sms_plugin.host_import import ImportPlan
    from sms_plugin.host_kinds import HostKind
    from sms_plugin.hosts import HostCheck, ScannedKey
    from sms_plugin.inventory import Format
    from sms_plugin.scripts import SyncReport
else:  # the local catalog and Prefect: loaded by the first verb that uses them
    declarative = lazy_module("sms_plugin.apply")
    fleet_hosts = lazy_module("sms_plugin.fleet_hosts")
    host_groups = lazy_module("sms_plugin.host_groups")
    host_import = lazy_module("sms_plugin.host_import")
    selection = lazy_module("sms_plugin.selection")
    host_services = lazy_module("sms_plugin.hosts")
    run_services = lazy_module("sms_plugin.runs")
    script_services = lazy_module("sms_plugin.scripts")

T = TypeVar("T")
TRIGGER = "cli"


@dataclass(frozen=True)
class Version:
    """One stored version of a script (``content`` only where it was asked for)."""

    number: int
    sha256: str
    author: str
    created_at: datetime
    comment: str
    content: str | None = None


class Backend(Protocol):
    """What the CLI's verbs need; see the two implementations below."""

    where: str

    def hosts(self, select: str | None = None) -> list[HostInfo]: ...
    def host_groups(self) -> list[HostGroupInfo]: ...
    def host_group(self, name: str) -> HostGroupInfo: ...
    def save_host_group(self, name: str, selector: str, description: str, *, replace: bool) -> None: ...
    def remove_host_group(self, name: str) -> None: ...
    def import_plan(
        self, path: Path, format: Format | None, *, user: str | None, credentials_from: str | None
    ) -> ImportPlan: ...
    def import_apply(self, planned: ImportPlan) -> None: ...
    def add_host(self, name: str, block: HostKind, *, overwrite: bool) -> None: ...
    def check_host(self, name: str) -> HostCheck: ...
    def scan_host_key(self, name: str) -> ScannedKey: ...
    def trust_host_key(self, name: str, fingerprint: str) -> None: ...
    def scripts(self, tag: str | None) -> list[ScriptSpec]: ...
    def script(self, name: str) -> tuple[ScriptSpec, Version | None]: ...
    def versions(self, name: str) -> list[Version]: ...
    def add_script(self, spec: ScriptSpec, content: str | None) -> None: ...
    def push(self, name: str, content: str, comment: str) -> int | None: ...
    def set_script_target(self, name: str, *, host: str | None, targets: str | None) -> None: ...
    def remove_script(self, name: str) -> None: ...
    def start(
        self, name: str, *, args: list[str] | None, env: dict[str, str] | None, host: str | None, version: int | None,
        parameters: dict[str, object] | None, hosts: str | None = None, policy: dict[str, object] | None = None,
    ) -> str: ...
    def result(self, run_id: str) -> RunResult: ...
    def wait(self, run_id: str, timeout: float | None) -> RunResult: ...
    def stop(self, run_id: str) -> str: ...
    def logs(
        self, run_id: str, *, follow: bool, host: str | None = None, timeout: float | None = None
    ) -> Iterator[LogLine]: ...
    def runs(self, script: str | None, limit: int) -> list[RunSummary]: ...
    def plan(self, path: Path) -> declarative.Plan: ...
    def apply(self, planned: declarative.Plan) -> None: ...
    def sync(self) -> SyncReport: ...
    def access_rules(self) -> list[AccessRuleInfo]: ...
    def webhooks(self, script: str | None) -> list[WebhookInfo]: ...


def _blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def _version(version: ScriptVersion, *, content: bool = False) -> Version:
    return Version(version.number, version.sha256, version.author, version.created_at, version.comment,
                   version.content if content else None)


class LocalBackend:
    """The catalog (``SMS_DATABASE_URL``) and Prefect (``PREFECT_API_URL``) of this machine's settings."""

    def __init__(self) -> None:
        self.user = getpass.getuser()

    @property
    def where(self) -> str:
        return "the local catalog"

    @cached_property
    def catalog(self) -> Catalog:
        from sms_plugin.catalog import Catalog

        catalog = Catalog()
        catalog.upgrade()
        return catalog

    def hosts(self, select: str | None = None) -> list[HostInfo]:
        if select is None:
            return _blocking(host_services.listing())
        return _blocking(selection.selected_hosts(self.catalog, select))

    def host_groups(self) -> list[HostGroupInfo]:
        with self.catalog.session() as session:
            return host_groups.listing(session)

    def host_group(self, name: str) -> HostGroupInfo:
        with self.catalog.session() as session:
            return host_groups.show(session, name)

    def save_host_group(self, name: str, selector: str, description: str, *, replace: bool) -> None:
        save = host_groups.replace if replace else host_groups.add
        with self.catalog.session() as session:
            save(session, name, selector, description, author=self.user)

    def remove_host_group(self, name: str) -> None:
        with self.catalog.session() as session:
            host_groups.remove(session, name, author=self.user)

    def import_plan(
        self, path: Path, format: Format | None, *, user: str | None, credentials_from: str | None
    ) -> ImportPlan:
        from sms_plugin.inventory import read as read_inventory

        inventory = read_inventory(path, format)
        return _blocking(host_import.plan(self.catalog, inventory, user=user, credentials_from=credentials_from))

    def import_apply(self, planned: ImportPlan) -> None:
        _blocking(host_import.apply(self.catalog, planned, author=self.user))

    def add_host(self, name: str, block: HostKind, *, overwrite: bool) -> None:
        _blocking(host_services.add(name, block, overwrite=overwrite))

    def check_host(self, name: str) -> HostCheck:
        return _blocking(host_services.check(name))

    def scan_host_key(self, name: str) -> ScannedKey:
        return _blocking(host_services.scan_host_key(name))

    def trust_host_key(self, name: str, fingerprint: str) -> None:
        _blocking(host_services.trust_host_key(name, fingerprint))

    def scripts(self, tag: str | None) -> list[ScriptSpec]:
        return [ScriptSpec.from_script(s) for s in script_services.listing(self.catalog, tag)]

    def script(self, name: str) -> tuple[ScriptSpec, Version | None]:
        spec = ScriptSpec.from_script(script_services.show(self.catalog, name))
        if spec.interpreter == "original":
            return spec, None
        return spec, _version(script_services.version(self.catalog, name), content=True)

    def versions(self, name: str) -> list[Version]:
        return [_version(v) for v in script_services.versions(self.catalog, name)]

    def add_script(self, spec: ScriptSpec, content: str | None) -> None:
        _blocking(script_services.add(self.catalog, spec, content, author=self.user))

    def push(self, name: str, content: str, comment: str) -> int | None:
        spec = ScriptSpec.from_script(script_services.show(self.catalog, name))
        change = _blocking(script_services.update(self.catalog, spec, content, author=self.user, comment=comment))
        return change.new_version.number if change.new_version else None

    def set_script_target(self, name: str, *, host: str | None, targets: str | None) -> None:
        current = ScriptSpec.from_script(script_services.show(self.catalog, name)).model_dump()
        spec = ScriptSpec.parse({**current, "host": host, "targets": targets})
        _blocking(script_services.update(self.catalog, spec, None, author=self.user))

    def remove_script(self, name: str) -> None:
        _blocking(script_services.remove(self.catalog, name, author=self.user))

    def start(
        self, name: str, *, args: list[str] | None, env: dict[str, str] | None, host: str | None, version: int | None,
        parameters: dict[str, object] | None, hosts: str | None = None, policy: dict[str, object] | None = None,
    ) -> str:
        async def start() -> str:
            names = None if hosts is None else await fleet_hosts.resolve(self.catalog, hosts)
            return await run_services.start(
                self.catalog, name, args=args, env=env, host=host, hosts=names, policy=policy, version=version,
                parameters=parameters, trigger=TRIGGER, user=self.user,
            )

        return _blocking(start())

    def result(self, run_id: str) -> RunResult:
        return _blocking(run_services.result(self.catalog, run_id))

    def wait(self, run_id: str, timeout: float | None) -> RunResult:
        return _blocking(run_services.wait(self.catalog, run_id, timeout=timeout))

    def runs(self, script: str | None, limit: int) -> list[RunSummary]:
        from sms_plugin.catalog.repository import list_runs

        with self.catalog.session() as session:
            return [RunSummary.of(r) for r in list_runs(session, script_name=script, limit=limit)]

    def stop(self, run_id: str) -> str:
        return _blocking(run_services.stop(run_id))

    def logs(
        self, run_id: str, *, follow: bool, host: str | None = None, timeout: float | None = None
    ) -> Iterator[LogLine]:
        from sms_plugin.sdk import blocking_iterator

        with asyncio.Runner() as runner:
            yield from blocking_iterator(runner, run_services.logs(run_id, follow=follow, host=host, timeout=timeout))

    def plan(self, path: Path) -> declarative.Plan:
        return _blocking(declarative.plan(self.catalog, path))

    def apply(self, planned: declarative.Plan) -> None:
        _blocking(declarative.apply(self.catalog, planned, author=self.user))

    def sync(self) -> SyncReport:
        return _blocking(script_services.sync(self.catalog))

    def access_rules(self) -> list[AccessRuleInfo]:
        from sms_plugin.catalog import access

        with self.catalog.session() as session:
            return [AccessRuleInfo.of(rule) for rule in access.list_rules(session)]

    def webhooks(self, script: str | None) -> list[WebhookInfo]:
        from sms_plugin.catalog import access

        with self.catalog.session() as session:
            return [WebhookInfo.of(hook) for hook in access.list_webhooks(session, script=script)]


def _group(data: dict[str, Any]) -> HostGroupInfo:

    return HostGroupInfo(data["name"], data["selector"], data["description"], data["created_by"],
                         datetime.fromisoformat(data["created_at"]), datetime.fromisoformat(data["updated_at"]))


def _spec(data: dict[str, Any]) -> ScriptSpec:
    return ScriptSpec.model_validate({k: v for k, v in data.items() if k in ScriptSpec.model_fields})


def _api_version(data: dict[str, Any]) -> Version:
    return Version(data["number"], data["sha256"], data["author"], datetime.fromisoformat(data["created_at"]),
                   data["comment"], data.get("content"))


class GatewayBackend:
    """The gateway's REST API (``/api/v1``) as the user of the stored login."""

    def __init__(self, login: credentials.StoredLogin) -> None:
        self.url = login.gateway_url
        from sms_plugin.gateway_client import GatewayClient

        self.where = f"the gateway {login.gateway_url} (as {login.username})"
        self.client = GatewayClient(login.gateway_url)

    def _not_here(self, verb: str) -> SMSError:
        return SMSError(
            f"`sms {verb}` is not available through the gateway {self.url}; run `sms --local {verb}` where the "
            "catalog and Prefect are configured, or ask an admin"
        )

    def hosts(self, select: str | None = None) -> list[HostInfo]:
        return [HostInfo(h["name"], h["kind"], h["where"], tuple(h["labels"]), h["admins_only"],
                         h["max_parallel_sessions"], h["settings"]) for h in self.client.hosts(select)]

    def host_groups(self) -> list[HostGroupInfo]:
        return [_group(data) for data in self.client.host_groups()]

    def host_group(self, name: str) -> HostGroupInfo:
        return _group(self.client.host_group(name))

    def save_host_group(self, name: str, selector: str, description: str, *, replace: bool) -> None:
        if replace:
            self.client.replace_host_group(name, selector, description)
        else:
            self.client.add_host_group(name, selector, description)

    def remove_host_group(self, name: str) -> None:
        self.client.remove_host_group(name)

    def import_plan(
        self, path: Path, format: Format | None, *, user: str | None, credentials_from: str | None
    ) -> ImportPlan:
        raise self._not_here(f"host import {path}")

    def import_apply(self, planned: ImportPlan) -> None:
        raise self._not_here("host import")

    def add_host(self, name: str, block: HostKind, *, overwrite: bool) -> None:
        from sms_plugin.host_kinds import request_fields

        self.client.add_host(name, block.kind, overwrite=overwrite, **request_fields(block))

    def check_host(self, name: str) -> HostCheck:
        from sms_plugin.host_kinds.checks import HostCheck

        found = self.client.check_host(name)["check"]
        return HostCheck(**{f.name: found[f.name] for f in fields(HostCheck) if f.name in found})

    def scan_host_key(self, name: str) -> ScannedKey:
        from sms_plugin.hosts import ScannedKey

        shown = self.client.host_key(name)
        return ScannedKey(shown["public_key"], shown["fingerprint"])

    def trust_host_key(self, name: str, fingerprint: str) -> None:
        self.client.trust_host(name, fingerprint)

    def scripts(self, tag: str | None) -> list[ScriptSpec]:
        return [_spec(s) for s in self.client.scripts(tag)]

    def script(self, name: str) -> tuple[ScriptSpec, Version | None]:
        data = self.client.script(name)
        newest = data.get("newest_version")
        return _spec(data), _api_version(self.client.version(name, newest)) if newest else None

    def versions(self, name: str) -> list[Version]:
        return [_api_version(v) for v in self.client.versions(name)]

    def add_script(self, spec: ScriptSpec, content: str | None) -> None:
        self.client.add_script(spec.model_dump(mode="json"), content)

    def push(self, name: str, content: str, comment: str) -> int | None:
        answer = self.client.push(name, content, comment)
        return int(answer["version"]["number"]) if answer["created"] else None

    def set_script_target(self, name: str, *, host: str | None, targets: str | None) -> None:
        self.client.update_script(name, **({"host": host} if host is not None else {"targets": targets}))

    def remove_script(self, name: str) -> None:
        self.client.remove_script(name)

    def start(
        self, name: str, *, args: list[str] | None, env: dict[str, str] | None, host: str | None, version: int | None,
        parameters: dict[str, object] | None, hosts: str | None = None, policy: dict[str, object] | None = None,
    ) -> str:
        return self.client.run(name, args, host=host, hosts=hosts, policy=policy, version=version,
                               parameters=parameters, env=env)

    def result(self, run_id: str) -> RunResult:
        return self.client.result(run_id)

    def wait(self, run_id: str, timeout: float | None) -> RunResult:
        return self.client.wait(run_id, timeout)

    def runs(self, script: str | None, limit: int) -> list[RunSummary]:
        def when(value: str | None) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value)

        return [RunSummary(r["run_id"], r["script"], r["version"], r["host"], r["trigger"], r["requested_by"],
                           r["exit_code"], datetime.fromisoformat(r["created_at"]), when(r["started_at"]),
                           when(r["ended_at"]))
                for r in self.client.runs(script, limit=limit)]

    def stop(self, run_id: str) -> str:
        return self.client.stop(run_id)

    def logs(
        self, run_id: str, *, follow: bool, host: str | None = None, timeout: float | None = None
    ) -> Iterator[LogLine]:
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while True:
            ended = not follow or self.result(run_id).ended
            if not ended and deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} has not ended after {timeout:g} s")
            while page := self.client.logs(run_id, offset=seen, host=host):
                seen += len(page)
                for line in page:
                    yield LogLine(datetime.fromisoformat(line["timestamp"]), line["level"], line["message"],
                                  stream=line.get("stream"))
            if ended:
                return
            time.sleep(0.5)

    def plan(self, path: Path) -> declarative.Plan:
        raise self._not_here(f"apply {path}")

    def apply(self, planned: declarative.Plan) -> None:
        raise self._not_here("apply")

    def sync(self) -> SyncReport:
        raise self._not_here("sync")

    def access_rules(self) -> list[AccessRuleInfo]:
        return [AccessRuleInfo.from_api(data) for data in self.client.access_rules()]

    def webhooks(self, script: str | None) -> list[WebhookInfo]:
        return [WebhookInfo.from_api(data) for data in self.client.webhooks(script)]


_force_local = False


def force_local(local: bool) -> None:
    """``sms --local``: use the local catalog even when a login is stored."""
    global _force_local
    _force_local = local


def current() -> Backend:
    """The gateway when ``sms login`` stored a login (and ``--local`` is not given), else the local catalog."""
    login = None if _force_local else credentials.load()
    return GatewayBackend(login) if login else LocalBackend()
