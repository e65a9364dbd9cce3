"""Who started a run and how, carried on the flow run as tags and read back by the flow.

SMS's faces tag the runs they create (``sms-trigger:cli``, ``sms-user:alice``); runs created by
a schedule are ``schedule``; anything else (Prefect UI, Prefect API) is ``prefect``.

>>> origin_tags("cli", "alice")
['sms-trigger:cli', 'sms-user:alice']
"""

from __future__ import annotations

from prefect.client.schemas.objects import FlowRun

TRIGGER_TAG = "sms-trigger:"
USER_TAG = "sms-user:"


def origin_tags(trigger: str, user: str) -> list[str]:
    return [f"{TRIGGER_TAG}{trigger}", f"{USER_TAG}{user}"]


def run_origin(flow_run: FlowRun) -> tuple[str, str]:
    """(trigger, requested_by) of a flow run."""
    tags = {tag.split(":", 1)[0] + ":": tag.split(":", 1)[1] for tag in flow_run.tags if ":" in tag}
    trigger = tags.get(TRIGGER_TAG) or ("schedule" if flow_run.auto_scheduled else "prefect")
    creator = flow_run.created_by.display_value if flow_run.created_by else None
    user = tags.get(USER_TAG) or creator or ("scheduler" if flow_run.auto_scheduled else "unknown")
    return trigger, user
