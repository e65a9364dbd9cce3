"""Run events from Prefect's event stream, as outbox rows for topic ``sms.runs``.

Prefect's ``prefect.flow-run.<State>`` events of the ``run-script`` flow become ``sms.run.<state>``
(``sms.run.scheduled``, ``.pending``, ``.running``, ``.completed``, ``.failed``, ``.cancelling``,
``.cancelled``, ``.crashed``...); SMS's own ``sms.run.finished`` (exit code, output line counts) and
``sms.transport.error`` pass through. Each row's id is derived from Prefect's event id
(:func:`event_id`), so the stream's replay after a reconnect, or a catch-up that overlaps it, adds
nothing twice. Rows are keyed by the script's name: the run's ``script`` parameter (state events do
not carry it: the caller reads the flow run, :func:`~sms_plugin.telemetry.sources.labels_of`), or
the ``sms.script`` label of SMS's own events.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect.events import Event

from sms_plugin import run_events
from sms_plugin.catalog.outbox import RUNS_TOPIC
from sms_plugin.telemetry.sources import RUN_STATE_PREFIX, UNKNOWN, is_run_script_state, run_id_of

SOURCE = "/sms/runs"
PREFIXES = (RUN_STATE_PREFIX, run_events.PREFIX)
#: Namespace of run event ids: ``uuid5(NAMESPACE, prefect event id)``.
NAMESPACE = uuid.UUID("5d0c3e8e-6a52-4f49-9a43-1c5e8b8f1d15")


def event_id(prefect_event_id: uuid.UUID | str) -> str:
    """The stable id of the SMS event made from one Prefect event."""
    return str(uuid.uuid5(NAMESPACE, str(prefect_event_id)))


def state_run_id(event: Event) -> str | None:
    """The flow run whose state ``event`` announces, if it is a state of a run of ``run-script``."""
    return run_id_of(event) if is_run_script_state(event) else None


def outbox_row(event: Event, script_of_run: str = UNKNOWN) -> dict[str, Any] | None:
    """The outbox row announcing ``event`` (``script_of_run``: the script of a state event's run),
    or None for events SMS does not publish."""
    if is_run_script_state(event):
        script = script_of_run
        run_id = run_id_of(event)
        state = event.resource.get("prefect.state-name") or event.event.removeprefix(RUN_STATE_PREFIX)
        kind = "sms.run." + state.lower().replace(" ", "-")
        data: dict[str, Any] = {"script": script, "run_id": run_id,
                                "state_type": event.resource.get("prefect.state-type"), "state": state}
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
            "subject": run_id or script, "time": event.occurred, "data": data}
