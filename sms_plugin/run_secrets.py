"""Secret parameter values kept out of a flow run's stored parameters until the run claims them.

Prefect stores a flow run's parameters as given, and every role that may read runs reads them. So
whoever creates a run (``runs.start`` for REST, SDK, CLI and webhooks; the gateway for Prefect's
own ``create_flow_run``) stashes each secret value in a Prefect ``Secret`` block of its own,
encrypted by Prefect and shown masked, and passes a reference (``sms-secret:<block name>``)
instead. The flow claims the reference when it starts: it reads the value, checks that the block
was made for this script, and deletes the block, so a reference works once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from prefect.blocks.system import Secret
from prefect.client.orchestration import PrefectClient
from prefect.exceptions import ObjectNotFound

from sms_plugin.errors import InvalidInput

REFERENCE_PREFIX = "sms-secret:"
BLOCK_PREFIX = "sms-run-secret-"


async def stash(client: PrefectClient, script: str, values: Mapping[str, Any], secret_names: set[str]) -> dict[str, Any]:
    """``values`` with each non-null value of a parameter in ``secret_names`` replaced by a reference
    to a new ``Secret`` block holding it (bound to ``script``)."""
    stashed = dict(values)
    for name in secret_names & set(values):
        if values[name] is None:
            continue
        block_name = f"{BLOCK_PREFIX}{uuid.uuid4().hex}"
        # A string: Prefect masks a Secret whose stored value is a JSON object only per key it knows.
        content = json.dumps({"script": script, "value": values[name]})
        await Secret(value=content).asave(block_name, client=client)
        stashed[name] = REFERENCE_PREFIX + block_name
    return stashed


async def claim(client: PrefectClient, script: str, values: Mapping[str, Any], secret_names: set[str]) -> dict[str, Any]:
    """``values`` with each reference of a parameter in ``secret_names`` replaced by the stashed value;
    the block is deleted. InvalidInput when a reference is unknown, used, or made for another script."""
    claimed = dict(values)
    for name in secret_names & set(values):
        reference = values[name]
        if not (isinstance(reference, str) and reference.startswith(REFERENCE_PREFIX)):
            continue
        block_name = reference.removeprefix(REFERENCE_PREFIX)
        try:
            block = await Secret.aload(block_name, client=client)
        except (ObjectNotFound, ValueError):
            raise InvalidInput(f"secret parameter {name!r}: its stored value is gone (used already?): start a new run") from None
        content = block.get()  # Secret.get() parses the JSON text back
        if not isinstance(content, dict) or content.get("script") != script:
            raise InvalidInput(f"secret parameter {name!r}: its stored value was given for another script")
        await Secret.adelete(block_name, client=client)
        claimed[name] = content["value"]
    return claimed


def references(values: Mapping[str, Any]) -> tuple[str, ...]:
    """The stash references among ``values``."""
    return tuple(v for v in values.values() if isinstance(v, str) and v.startswith(REFERENCE_PREFIX))


async def discard(client: PrefectClient, stashed: tuple[str, ...]) -> None:
    """Delete the blocks of ``stashed`` references whose run was never created (already gone: fine)."""
    for reference in stashed:
        try:
            await Secret.adelete(reference.removeprefix(REFERENCE_PREFIX), client=client)
        except ObjectNotFound:
            pass
