"""Named host groups: a selector kept in the catalog under a name, used as ``@name`` in other
selectors (docs/fleet.md). A group may refer to other groups, never to itself, directly or through
others; a group others refer to cannot be removed.

    add(catalog, "web-eu", "role=web AND site=eu", "EU web servers", author="alice")
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sms_plugin.catalog import Catalog, audit
from sms_plugin.catalog import host_groups as rows
from sms_plugin.catalog.models import HostGroup
from sms_plugin.errors import Conflict, InvalidInput
from sms_plugin.selectors import GROUP_NAME, SelectorError, cycle_through, group_terms, groups_named, parse


@dataclass(frozen=True)
class HostGroupInfo:
    name: str
    selector: str
    description: str
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: HostGroup) -> HostGroupInfo:
        return cls(row.name, row.selector, row.description, row.created_by, row.created_at, row.updated_at)


def stored_selectors(catalog: Catalog) -> dict[str, str]:
    """Every host group's selector text, by group name."""
    with catalog.session() as session:
        return {row.name: row.selector for row in rows.list_groups(session)}


def _checked(name: str, selector: str, others: dict[str, str]) -> str:
    """``selector`` if it parses, names only stored groups and does not lead back to group ``name``."""
    if not GROUP_NAME.fullmatch(name):
        raise InvalidInput(f"host group name {name!r} must be 1-100 lower-case letters, digits, '-' or '_'")
    node = parse(selector)
    for group in group_terms(node):
        if group.name != name and group.name not in others:
            raise SelectorError(selector, group.column, f"there is no host group {group.name!r}")
    chain = cycle_through(name, node, {other: parse(text) for other, text in others.items() if other != name})
    if chain:
        raise SelectorError(selector, 1, f"host group {name!r} would refer to itself: {' -> '.join(chain)}")
    return selector


def add(catalog: Catalog, name: str, selector: str, description: str = "", *, author: str) -> HostGroupInfo:
    """Stores a new host group; Conflict if the name is taken, SelectorError for a bad selector."""
    _checked(name, selector, stored_selectors(catalog))
    with catalog.session() as session:
        row = rows.add_group(session, name=name, selector=selector, description=description, created_by=author)
        audit(session, actor=author, action="host-group.add", object_type="host-group", object_name=name,
              detail={"selector": selector})
        return HostGroupInfo.of(row)


def replace(catalog: Catalog, name: str, selector: str, description: str = "", *, author: str) -> HostGroupInfo:
    """Gives group ``name`` a new selector and description."""
    _checked(name, selector, stored_selectors(catalog))
    with catalog.session() as session:
        row = rows.replace_group(session, name, selector=selector, description=description)
        audit(session, actor=author, action="host-group.replace", object_type="host-group", object_name=name,
              detail={"selector": selector})
        return HostGroupInfo.of(row)


def listing(catalog: Catalog) -> list[HostGroupInfo]:
    with catalog.session() as session:
        return [HostGroupInfo.of(row) for row in rows.list_groups(session)]


def show(catalog: Catalog, name: str) -> HostGroupInfo:
    with catalog.session() as session:
        return HostGroupInfo.of(rows.get_group(session, name))


def remove(catalog: Catalog, name: str, *, author: str) -> None:
    """Deletes group ``name``; Conflict while another group refers to it."""
    users = sorted(other for other, text in stored_selectors(catalog).items() if name in groups_named(parse(text)))
    with catalog.session() as session:
        rows.get_group(session, name)
        if users:
            raise Conflict(f"host group {name!r} is used by group(s) {', '.join(users)}: change or remove them first")
        rows.remove_group(session, name)
        audit(session, actor=author, action="host-group.remove", object_type="host-group", object_name=name)
