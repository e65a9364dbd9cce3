"""Access rules, webhooks and webhook deliveries in the catalog. Like ``repository``, every
function takes a ``Session`` first and never commits. Rows in, rows out: what the rules mean is
the gateway's policy (``sms_plugin.gateway.rbac``), and webhook secrets arrive here already sealed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sms_plugin.catalog.models import AccessRule, Webhook, WebhookDelivery, WebhookRefusal, utcnow
from sms_plugin.errors import Conflict, NotFound

RowT = TypeVar("RowT", AccessRule, Webhook)

# Access rules


def add_rule(s: Session, *, created_by: str, **fields: Any) -> AccessRule:
    """Store a rule (``subject_kind``, ``subject``, ``actions``, optional globs, tag, label, description)."""
    rule = AccessRule(created_by=created_by, **fields)
    s.add(rule)
    s.flush()
    return rule


def get_rule(s: Session, rule_id: int) -> AccessRule:
    rule = s.get(AccessRule, rule_id)
    if rule is None:
        raise NotFound(f"no access rule {rule_id}")
    return rule


def list_rules(s: Session) -> list[AccessRule]:
    """All access rules, oldest first."""
    return list(s.scalars(select(AccessRule).order_by(AccessRule.id)))


def replace_rule(s: Session, rule_id: int, **fields: Any) -> AccessRule:
    """Give rule ``rule_id`` new ``fields`` (the same keywords as ``add_rule``)."""
    return _assign(s, get_rule(s, rule_id), fields)


def remove_rule(s: Session, rule_id: int) -> None:
    s.delete(get_rule(s, rule_id))
    s.flush()


# Webhooks


def add_webhook(s: Session, *, id: str, created_by: str, **fields: Any) -> Webhook:
    """Store a webhook (``script``, sealed ``secret``, ``arguments``, ``max_per_minute``, ...)."""
    if s.get(Webhook, id) is not None:
        raise Conflict(f"webhook {id} exists already")
    hook = Webhook(id=id, created_by=created_by, **fields)
    s.add(hook)
    s.flush()
    return hook


def get_webhook(s: Session, hook_id: str) -> Webhook:
    hook = s.get(Webhook, hook_id)
    if hook is None:
        raise NotFound(f"no webhook {hook_id}")
    return hook


def list_webhooks(s: Session, *, script: str | None = None) -> list[Webhook]:
    """Webhooks by creation time, optionally those of one script."""
    query = select(Webhook).order_by(Webhook.created_at, Webhook.id)
    if script is not None:
        query = query.where(Webhook.script == script)
    return list(s.scalars(query))


def update_webhook(s: Session, hook_id: str, **fields: Any) -> Webhook:
    return _assign(s, get_webhook(s, hook_id), fields)


def remove_webhook(s: Session, hook_id: str) -> None:
    """Delete a webhook; its deliveries stay as history."""
    s.delete(get_webhook(s, hook_id))
    s.flush()


# Deliveries


def record_delivery(
    s: Session,
    webhook_id: str,
    *,
    delivery_id: str,
    outcome: str,
    client: str = "",
    nonce: str | None = None,
    detail: str = "",
    run_id: str | None = None,
) -> WebhookDelivery:
    """Store a delivery. A ``nonce`` already stored for this webhook raises Conflict (a replay),
    atomically across gateway processes, and leaves the caller's transaction usable."""
    delivery = WebhookDelivery(
        webhook_id=webhook_id,
        delivery_id=delivery_id,
        nonce=nonce,
        outcome=outcome,
        client=client,
        detail=detail,
        run_id=run_id,
    )
    try:
        with s.begin_nested():
            s.add(delivery)
    except IntegrityError:
        raise Conflict(f"delivery {delivery_id} of webhook {webhook_id} was seen before (replay)") from None
    return delivery


def update_delivery(s: Session, delivery: WebhookDelivery, **fields: Any) -> WebhookDelivery:
    """Set the outcome, run id or detail of a stored delivery."""
    delivery = s.merge(delivery)
    for name, value in fields.items():
        setattr(delivery, name, value)
    s.flush()
    return delivery


def count_accepted_deliveries(s: Session, webhook_id: str, *, since: datetime) -> int:
    """Deliveries of ``webhook_id`` with a valid signature (a nonce) received at or after ``since``."""
    query = select(func.count()).where(
        WebhookDelivery.webhook_id == webhook_id,
        WebhookDelivery.nonce.is_not(None),
        WebhookDelivery.received_at >= since,
    )
    return int(s.scalar(query) or 0)


def list_deliveries(s: Session, webhook_id: str, *, limit: int = 100) -> list[WebhookDelivery]:
    """A webhook's deliveries, newest first."""
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id)
        .order_by(WebhookDelivery.received_at.desc(), WebhookDelivery.id.desc())
        .limit(limit)
    )
    return list(s.scalars(query))


REFUSAL_RETENTION = timedelta(days=30)
"""Refusal counts older than this are deleted when a new hour's row is stored."""


def count_refusal(s: Session, webhook_id: str, *, reason: str, client: str, detail: str) -> WebhookRefusal:
    """Add one refused delivery to its webhook's count for ``reason`` this hour (one row per
    webhook, reason and hour, whatever the number of refusals), atomically across processes."""
    now = utcnow()
    hour = now.replace(minute=0, second=0, microsecond=0)
    key = (WebhookRefusal.webhook_id == webhook_id, WebhookRefusal.reason == reason, WebhookRefusal.hour == hour)
    for _ in range(2):
        row = s.scalars(select(WebhookRefusal).where(*key).with_for_update()).first()
        if row is not None:
            return _assign(s, row, {"count": row.count + 1, "last_at": now, "last_client": client[:64],
                                    "last_detail": detail[:500]})
        s.execute(delete(WebhookRefusal).where(WebhookRefusal.hour < hour - REFUSAL_RETENTION))
        row = WebhookRefusal(webhook_id=webhook_id, reason=reason, hour=hour, count=1, last_at=now,
                             last_client=client[:64], last_detail=detail[:500])
        try:
            with s.begin_nested():
                s.add(row)
            return row
        except IntegrityError:  # another process stored this hour's row first: count on it
            continue
    raise Conflict(f"could not count a refusal of webhook {webhook_id}")


def list_refusals(s: Session, webhook_id: str, *, limit: int = 100) -> list[WebhookRefusal]:
    """A webhook's refusal counts, newest hour first."""
    query = (
        select(WebhookRefusal)
        .where(WebhookRefusal.webhook_id == webhook_id)
        .order_by(WebhookRefusal.hour.desc(), WebhookRefusal.reason)
        .limit(limit)
    )
    return list(s.scalars(query))


def _assign(s: Session, row: RowT, fields: dict[str, Any]) -> RowT:
    """Set ``fields`` on ``row`` and flush."""
    for name, value in fields.items():
        setattr(row, name, value)
    s.flush()
    return row
