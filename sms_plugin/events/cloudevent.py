"""An outbox row as a Kafka record: key (the script's name, or the object's) and a CloudEvents 1.0
JSON value in structured mode (docs/events.md)."""

from __future__ import annotations

import json
from typing import Any

from sms_plugin.catalog.models import OutboxEvent

CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"


def cloud_event(row: OutboxEvent) -> dict[str, Any]:
    """The CloudEvent of one outbox row."""
    return {
        "specversion": "1.0",
        "id": row.id,
        "source": row.source,
        "type": row.type,
        "subject": row.subject,
        "time": row.time.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": row.data,
    }


def record(row: OutboxEvent) -> tuple[bytes, bytes]:
    """(key, value) of the Kafka record that carries ``row``."""
    return row.key.encode(), json.dumps(cloud_event(row), separators=(",", ":"), sort_keys=True).encode()
