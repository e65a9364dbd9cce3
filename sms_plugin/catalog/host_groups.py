"""Host groups in the catalog. Like ``repository``, every function takes a ``Session`` first and never
commits. Rows in, rows out: what a selector means is ``sms_plugin.selectors``'s business."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from sms_plugin.catalog.models import HostGroup
from sms_plugin.errors import Conflict, NotFound


def add_group(s: Session, *, name: str, selector: str, description: str, created_by: str) -> HostGroup:
    if s.scalar(select(HostGroup.id).where(HostGroup.name == name)) is not None:
        raise Conflict(f"host group {name!r} exists already")
    group = HostGroup(name=name, selector=selector, description=description, created_by=created_by)
    s.add(group)
    s.flush()
    return group


def get_group(s: Session, name: str) -> HostGroup:
    group = s.scalar(select(HostGroup).where(HostGroup.name == name))
    if group is None:
        raise NotFound(f"no host group named {name!r}; see `sms host group list`")
    return group


def list_groups(s: Session) -> list[HostGroup]:
    """All host groups, by name."""
    return list(s.scalars(select(HostGroup).order_by(HostGroup.name)))


def replace_group(s: Session, name: str, *, selector: str, description: str) -> HostGroup:
    group = get_group(s, name)
    group.selector, group.description = selector, description
    s.flush()
    return group


def remove_group(s: Session, name: str) -> None:
    s.delete(get_group(s, name))
    s.flush()
