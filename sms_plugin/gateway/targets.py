"""What authorization needs from the catalog and Prefect: the access rules, and the tags and
labels of the script and host an action is about (for ``rbac.decide``)."""

from __future__ import annotations

from sms_plugin import hosts as host_services
from sms_plugin.catalog import Catalog, Script, get_script
from sms_plugin.catalog.access import list_rules
from sms_plugin.errors import NotFound
from sms_plugin.gateway.rbac import Rule, Target


def load_rules(catalog: Catalog) -> list[Rule]:
    """The catalog's access rules as the policy reads them."""
    with catalog.session() as session:
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
            for row in list_rules(session)
        ]


class Targets:
    """Builds targets for one request; host labels are read from Prefect once and kept."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._labels: dict[str, frozenset[str]] | None = None

    async def host_labels(self, host: str) -> frozenset[str]:
        """The labels of host ``host`` (none for a host that does not exist)."""
        if self._labels is None:
            self._labels = {info.name: frozenset(info.labels) for info in await host_services.listing()}
        return self._labels.get(host, frozenset())

    async def host(self, name: str) -> Target:
        return Target(host=name, host_labels=await self.host_labels(name))

    async def script(self, script: Script, host: str | None = None) -> Target:
        """``script`` on ``host`` (default: the script's own host)."""
        where = host or script.host
        return Target(script.name, frozenset(script.tags), where, await self.host_labels(where))

    async def script_named(self, name: str, host: str | None = None) -> Target:
        """Like :meth:`script` for a script known by name; NotFound if there is none."""
        with self.catalog.session() as session:
            script = get_script(session, name)
        return await self.script(script, host)

    async def run(self, script: str, host: str) -> Target:
        """A run of ``script`` on ``host``; a script removed since is matched by name only."""
        try:
            return await self.script_named(script, host)
        except NotFound:
            return Target(script, frozenset(), host, await self.host_labels(host))
