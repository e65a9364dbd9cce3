"""What the ``sms`` command lists of the gateway's access rules and webhooks, from the local catalog
or through the gateway: ``AccessRuleInfo`` and ``WebhookInfo``. Plain values with the REST API's
field names (docs/access.md, docs/gateway.md); a webhook's secret is never one of them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sms_plugin.catalog.models import AccessRule, Webhook


@dataclass(frozen=True)
class AccessRuleInfo:
    """``subject`` (a group, user or role) may do ``actions`` on the scripts and hosts matching every
    condition given (``None``: no condition)."""

    id: int
    subject_kind: str
    subject: str
    actions: tuple[str, ...]
    script_glob: str | None
    script_tag: str | None
    host_glob: str | None
    host_label: str | None
    description: str
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, row: AccessRule) -> AccessRuleInfo:
        return cls(**{**_attributes(cls, row), "actions": tuple(row.actions)})

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> AccessRuleInfo:
        """From the gateway's ``GET /access-rules`` answer."""
        return cls(**{**_values(cls, data), "actions": tuple(data["actions"])})


@dataclass(frozen=True)
class WebhookInfo:
    """A signed endpoint (``path``) that starts ``script``; ``arguments`` maps payload fields to the
    script's arguments or parameters."""

    id: str
    script: str
    description: str
    arguments: list[dict[str, Any]]
    max_per_minute: int
    enabled: bool
    created_by: str
    created_at: datetime

    @property
    def path(self) -> str:
        """Where senders deliver to: the gateway's ``/hooks/{id}``."""
        return f"/hooks/{self.id}"

    @classmethod
    def of(cls, row: Webhook) -> WebhookInfo:
        return cls(**_attributes(cls, row))

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> WebhookInfo:
        """From the gateway's ``GET /webhooks`` answer."""
        return cls(**_values(cls, data))


def _attributes(cls: type, row: object) -> dict[str, Any]:
    return {field.name: getattr(row, field.name) for field in fields(cls)}


def _values(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    return {**{field.name: data[field.name] for field in fields(cls)},
            "created_at": datetime.fromisoformat(data["created_at"])}
