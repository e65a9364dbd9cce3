"""Named host groups: a selector kept in the catalog under a name, used as ``@name`` in other
selectors (docs/fleet.md). A group may refer to other groups, never to itself, directly or through
others; a group others refer to cannot be removed.

Each function works in the caller's transaction (check and write together)::

    with catalog.session() as session:                     # sync callers (the CLI)
        add(session, "web-eu", "role=web AND site=eu", "EU web servers", author="alice")
    await catalog.aio.run(add, "web-eu", "role=web AND site=eu", author="alice")   # async callers
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from sms_plugin.catalog import audit
from sms_plugin.catalog import host_groups as rows
from sms_plugin.errors import Conflict, InvalidInput
from sms_plugin.host_listings import HostGroupInfo
from sms_plugin.selectors import GROUP_NAME, SelectorError, cycle_through, group_terms, groups_named, parse


def stored_selectors(session: Session) -> dict[str, str]:
    """Every host group's selector text, by group name."""
    return {row.name: row.selector for row in rows.list_groups(session)}


def checked_selector(name: str, selector: str, others: dict[str, str]) -> str:
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


def add(session: Session, name: str, selector: str, description: str = "", *, author: str) -> HostGroupInfo:
    """Stores a new host group; Conflict if the name is taken, SelectorError for a bad selector."""
    checked_selector(name, selector, stored_selectors(session))
    row = rows.add_group(session, name=name, selector=selector, description=description, created_by=author)
    audit(session, actor=author, action="host-group.add", object_type="host-group", object_name=name,
          detail={"selector": selector})
    return HostGroupInfo.of(row)


def replace(session: Session, name: str, selector: str, description: str = "", *, author: str) -> HostGroupInfo:
    """Gives group ``name`` a new selector and description."""
    checked_selector(name, selector, stored_selectors(session))
    row = rows.replace_group(session, name, selector=selector, description=description)
    audit(session, actor=author, action="host-group.replace", object_type="host-group", object_name=name,
          detail={"selector": selector})
    return HostGroupInfo.of(row)


def listing(session: Session) -> list[HostGroupInfo]:
    return [HostGroupInfo.of(row) for row in rows.list_groups(session)]


def show(session: Session, name: str) -> HostGroupInfo:
    return HostGroupInfo.of(rows.get_group(session, name))


def remove(session: Session, name: str, *, author: str) -> None:
    """Deletes group ``name``; Conflict while another group refers to it."""
    rows.get_group(session, name)
    users = sorted(other for other, text in stored_selectors(session).items() if name in groups_named(parse(text)))
    if users:
        raise Conflict(f"host group {name!r} is used by group(s) {', '.join(users)}: change or remove them first")
    rows.remove_group(session, name)
    audit(session, actor=author, action="host-group.remove", object_type="host-group", object_name=name)
