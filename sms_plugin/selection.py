"""What a host selector picks now, among the hosts SMS knows (Prefect blocks) and with the
catalog's host groups: the preview of a fleet target (docs/fleet.md)."""

from __future__ import annotations

from sms_plugin import host_groups
from sms_plugin import hosts as host_services
from sms_plugin.catalog import Catalog
from sms_plugin.host_listings import HostInfo
from sms_plugin.selectors import HostRecord, parse, select


async def selected_hosts(catalog: Catalog, selector: str) -> list[HostInfo]:
    """The hosts ``selector`` picks, by name; SelectorError (with the column) for a bad selector."""
    parse(selector)  # a malformed selector is refused before any host is read
    hosts = await host_services.listing()
    records = [HostRecord(host.name, host.kind, frozenset(host.labels)) for host in hosts]
    groups = await catalog.aio.run(host_groups.stored_selectors)
    picked = {record.name for record in select(selector, records, groups)}
    return [host for host in hosts if host.name in picked]
