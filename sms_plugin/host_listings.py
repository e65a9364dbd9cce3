"""What SMS answers about hosts and host groups, in every face (CLI, SDK, REST, through the gateway
or not): ``HostInfo`` and ``HostGroupInfo``. Plain values: no Prefect, no catalog."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sms_plugin.catalog.models import HostGroup
    from sms_plugin.host_kinds import HostKind


@dataclass(frozen=True)
class HostInfo:
    """A host as every face lists it: what the contract gives for any kind, and the kind's public
    settings (``settings``: every field but the secrets)."""

    name: str
    kind: str
    where: str
    labels: tuple[str, ...]
    admins_only: bool
    """Only sms-admin may start or add scripts here (by default a local host, docs/access.md)."""
    max_parallel_sessions: int
    settings: dict[str, Any]

    @classmethod
    def of(cls, name: str, block: HostKind) -> HostInfo:
        from sms_plugin.host_kinds import public_view

        return cls(name, block.kind, block.describe(), tuple(block.labels), block.admins_only,
                   block.max_parallel_sessions, public_view(block))

    @property
    def pinned_keys(self) -> int:
        """How many host keys are pinned (SSH hosts; 0 for kinds without host keys)."""
        return len(self.settings.get("host_keys", ()))

    @property
    def legacy(self) -> bool:
        """The host allows legacy SSH algorithms."""
        return bool(self.settings.get("legacy", False))


@dataclass(frozen=True)
class HostGroupInfo:
    """A named host group: its selector and who wrote it when."""

    name: str
    selector: str
    description: str
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: HostGroup) -> HostGroupInfo:
        return cls(row.name, row.selector, row.description, row.created_by, row.created_at, row.updated_at)
