"""What authorization needs from the catalog and Prefect: the access rules, and the tags and
labels of the script and host an action is about (for ``rbac.decide``)."""

from __future__ import annotations

from typing import Protocol

from sms_plugin import hosts as host_services
from sms_plugin.catalog import Catalog, get_script
from sms_plugin.catalog.access import list_rules
from sms_plugin.errors import NotFound
from sms_plugin.gateway.rbac import Rule, Target


async def load_rules(catalog: Catalog) -> list[Rule]:
    """The catalog's access rules as the policy reads them."""
    return [
            Rule(
                subject_kind=row.subject_kind,  # type: ignore[arg-type]
                subject=row.subject,
                actions=frozenset(row.actions),  # type: ignore[arg-type]
                script_glob=row.script_glob,
                script_tag=row.script_tag,
                host_glob=row.host_glob,
                host_label=row.host_label,
                id=row.id,
            )
            for row in await catalog.aio.run(list_rules)
        ]


class ScriptLike(Protocol):
    """What a target needs of a script: a catalog row or a spec about to be added."""

    name: str
    tags: list[str]
    host: str


class Targets:
    """Builds targets for one request; hosts (labels, admin-only) are read from Prefect once and kept."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._hosts: dict[str, host_services.HostInfo] | None = None

    async def _host(self, name: str) -> host_services.HostInfo | None:
        if self._hosts is None:
            self._hosts = {info.name: info for info in await host_services.listing()}
        return self._hosts.get(name)

    async def host(self, name: str) -> Target:
        return await self._target(None, frozenset(), name)

    async def script(self, script: ScriptLike, host: str | None = None) -> Target:
        """``script`` on ``host`` (default: the script's own host)."""
        return await self._target(script.name, frozenset(script.tags), host or script.host)

    async def script_named(self, name: str, host: str | None = None) -> Target:
        """Like :meth:`script` for a script known by name; NotFound if there is none."""
        script = await self.catalog.aio.run(get_script, name)
        return await self.script(script, host)

    async def run(self, script: str, host: str) -> Target:
        """A run of ``script`` on ``host``; a script removed since is matched by name only."""
        try:
            return await self.script_named(script, host)
        except NotFound:
            return await self._target(script, frozenset(), host)

    async def _target(self, script: str | None, tags: frozenset[str], host: str) -> Target:
        """``script`` (with ``tags``) on ``host``, with the host's labels; a missing host has none."""
        info = await self._host(host)
        labels = frozenset(info.labels) if info else frozenset()
        return Target(script, tags, host, labels, host_admins_only=bool(info and info.admins_only))
