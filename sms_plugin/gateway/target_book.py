"""Script tags and host labels read once, to build many authorization targets without I/O
(a dashboard or a log search judges one target per script, host or script-on-host)."""

from __future__ import annotations

from dataclasses import dataclass

from sms_plugin import hosts as host_services
from sms_plugin.catalog import Catalog, repository
from sms_plugin.gateway.rbac import Target


@dataclass(frozen=True)
class ScriptInfo:
    name: str
    tags: frozenset[str]
    host: str | None


@dataclass(frozen=True)
class HostFacts:
    labels: frozenset[str]
    admins_only: bool


@dataclass(frozen=True)
class TargetBook:
    """The catalog's scripts and Prefect's host blocks at one moment."""

    scripts: dict[str, ScriptInfo]
    hosts: dict[str, HostFacts]

    @classmethod
    async def read(cls, catalog: Catalog) -> TargetBook:
        scripts = {s.name: ScriptInfo(s.name, frozenset(s.tags), s.host)
                   for s in await catalog.aio.run(repository.list_scripts)}
        hosts = {info.name: HostFacts(frozenset(info.labels), info.admins_only)
                 for info in await host_services.listing()}
        return cls(scripts, hosts)

    def target(self, script: str | None, host: str | None) -> Target:
        """``script`` (its tags; a removed script by name only) on ``host`` (its labels; none if unknown),
        as ``Targets.run`` builds it."""
        info = self.scripts.get(script or "")
        facts = self.hosts.get(host or "")
        return Target(script, info.tags if info else frozenset(), host, facts.labels if facts else frozenset(),
                      host_admins_only=bool(facts and facts.admins_only))
