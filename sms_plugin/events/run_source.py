"""Events from Prefect's event stream, as outbox rows: runs (topic ``sms.runs``) and hosts
(``sms.catalog``).

Prefect's ``prefect.flow-run.<State>`` events of the ``run-script`` flow become ``sms.run.<state>``
(``sms.run.scheduled``, ``.pending``, ``.running``, ``.completed``, ``.failed``, ``.cancelling``,
``.cancelled``, ``.crashed``...); SMS's own ``sms.run.finished`` (exit code, output line counts) and
``sms.transport.error`` pass through. Each row's id is derived from Prefect's event id
(:func:`event_id`), so the stream's replay after a reconnect, or a catch-up that overlaps it, adds
nothing twice. Rows are keyed by the script's name: the run's ``script`` parameter (state events do
not carry it: the caller reads the flow run, :func:`~sms_plugin.telemetry.sources.labels_of`), or
the ``sms.script`` label of SMS's own events. A state event also carries the run's host (``fleet``
for a fleet run), the state's own timestamp as the event's time, and for an end state the seconds
the run ran, so that a consumer can count exactly what the metrics exporter counts.

Hosts are Prefect blocks, not catalog rows: Prefect's own ``prefect.block-document.created``,
``.updated`` and ``.deleted`` events of SMS's host block types become ``sms.host.added``,
``.changed`` and ``.removed`` (keyed ``host:<name>``), whichever face made the change, the Prefect
UI included. Their data is the host's name and kind only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prefect.events import Event

from sms_plugin import run_events
from sms_plugin.catalog.outbox import CATALOG_SOURCE, CATALOG_TOPIC, RUNS_SOURCE, RUNS_TOPIC
from sms_plugin.host_kinds import KINDS
from sms_plugin.telemetry.metrics import TERMINAL
from sms_plugin.telemetry.sources import (
    RUN_STATE_PREFIX,
    UNKNOWN,
    is_run_script_state,
    run_id_of,
    running_seconds,
    state_timestamp,
)

SOURCE = RUNS_SOURCE
BLOCK_PREFIX = "prefect.block-document."
PREFIXES = (RUN_STATE_PREFIX, run_events.PREFIX, BLOCK_PREFIX)
HOST_VERBS = {"created": "added", "updated": "changed", "deleted": "removed"}
#: SMS's host block types (their Prefect names) → host kind.
HOST_BLOCK_TYPES = {kind.block.get_block_type_name(): name for name, kind in KINDS.items()}
#: Namespace of run event ids: ``uuid5(NAMESPACE, prefect event id)``.
NAMESPACE = uuid.UUID("5d0c3e8e-6a52-4f49-9a43-1c5e8b8f1d15")


def event_id(prefect_event_id: uuid.UUID | str) -> str:
    """The stable id of the SMS event made from one Prefect event."""
    return str(uuid.uuid5(NAMESPACE, str(prefect_event_id)))


def state_run_id(event: Event) -> str | None:
    """The flow run whose state ``event`` announces, if it is a state of a run of ``run-script``."""
    return run_id_of(event) if is_run_script_state(event) else None


@dataclass(frozen=True)
class RunLabels:
    """What the publisher read of a state event's flow run: its script and host, and when it began
    running (None before)."""

    script: str = UNKNOWN
    host: str = UNKNOWN
    start_time: datetime | None = None


def host_row(event: Event) -> dict[str, Any] | None:
    """The ``sms.host.*`` row of a block-document event of one of SMS's host kinds, or None."""
    verb = HOST_VERBS.get(event.event.removeprefix(BLOCK_PREFIX))
    block_type = next((related.name for related in event.related if related.role == "block-type"), None)
    kind = HOST_BLOCK_TYPES.get(block_type or "")
    name = event.resource.name
    if verb is None or kind is None or not name:
        return None
    return {"id": event_id(event.id), "topic": CATALOG_TOPIC, "key": f"host:{name}", "type": f"sms.host.{verb}",
            "source": CATALOG_SOURCE, "subject": f"host:{name}", "time": event.occurred,
            "data": {"host": name, "kind": kind}}


def outbox_row(event: Event, run: RunLabels = RunLabels()) -> dict[str, Any] | None:
    """The outbox row announcing ``event`` (``run``: what was read of a state event's flow run),
    or None for events SMS does not publish."""
    occurred = event.occurred
    if event.event.startswith(BLOCK_PREFIX):
        return host_row(event)
    if is_run_script_state(event):
        script = run.script
        run_id = run_id_of(event)
        state = event.resource.get("prefect.state-name") or event.event.removeprefix(RUN_STATE_PREFIX)
        kind = "sms.run." + state.lower().replace(" ", "-")
        state_type = event.resource.get("prefect.state-type")
        occurred = state_timestamp(event)
        data: dict[str, Any] = {"script": script, "run_id": run_id, "host": run.host, "state_type": state_type,
                                "state": state}
        if state_type in TERMINAL:
            data["duration_seconds"] = running_seconds(run.start_time, occurred)
        if message := event.resource.get("prefect.state-message"):
            data["message"] = message[:1000]
    elif event.event == run_events.RUN_FINISHED:
        script = event.resource.get("sms.script", UNKNOWN)
        run_id = event.resource.id.removeprefix("sms.run.")
        kind = run_events.RUN_FINISHED
        data = {"script": script, "run_id": run_id, "host": event.resource.get("sms.host"), **event.payload}
    elif event.event == run_events.TRANSPORT_ERROR:
        script = event.resource.get("sms.script", UNKNOWN)
        run_id = ""
        kind = run_events.TRANSPORT_ERROR
        data = {"script": script, "host": event.resource.get("sms.host"), **event.payload}
    else:
        return None
    return {"id": event_id(event.id), "topic": RUNS_TOPIC, "key": script, "type": kind, "source": SOURCE,
            "subject": run_id or script, "time": occurred, "data": data}
