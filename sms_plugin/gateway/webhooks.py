"""Signed webhooks: ``POST /hooks/{id}`` starts the webhook's script once per valid delivery.

In order: the webhook must exist and be enabled (404); the body must fit ``MAX_BODY_BYTES``
(413); the signature must match (401; see ``signing``); at most ``max_per_minute`` signed
deliveries per minute (429); a signed message is accepted once (409 for a replay); the payload's
mapped fields must pass their allow-list patterns (422); a payload's ``hosts`` selector may pick
only among the script's own hosts (403) and its ``policy`` must be valid (422), making the run a
fleet run (docs/fleet.md). Then one run starts (202) with trigger
and user ``webhook:<id>``. A delivery with a valid signature is stored with its outcome; refusals
before that are counted per webhook, reason and hour (``count_refusal``), so a flood adds to a
count, not rows. Refusals also count per client address and per webhook (``refusals``): an address
refused ``ADDRESS_LIMIT`` times in a minute gets 429 for everything, and once a webhook refused
``max_per_minute`` deliveries in a minute, a delivery it would refuse gets 429; these are not
audited one by one. Every other delivery is audited.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session

from sms_plugin import fleet_hosts
from sms_plugin import runs as run_services
from sms_plugin.catalog import Catalog, get_script
from sms_plugin.catalog import access as rows
from sms_plugin.catalog.models import Webhook, WebhookDelivery, utcnow
from sms_plugin.errors import Conflict, InvalidInput, NotFound, SMSError
from sms_plugin.gateway import audit
from sms_plugin.gateway.api import ERRORS, catalog_of
from sms_plugin.gateway.refusals import ADDRESS_LIMIT, RefusalWindows, address_key, hook_key
from sms_plugin.selection import selected_hosts
from sms_plugin.gateway.signing import (
    MAX_BODY_BYTES,
    SignatureError,
    ascii_number,
    delivery_id,
    map_arguments,
    unseal,
    verify,
)

router = APIRouter(tags=["webhooks"])


class Accepted(BaseModel):
    delivery_id: str
    run_id: str


class Refused(Exception):
    """A delivery that starts nothing: HTTP status, outcome stored with the delivery, message.
    ``flood``: refused for the sender's earlier refusals (answered 429, counted, not audited)."""

    def __init__(self, status: int, outcome: str, message: str, *, flood: bool = False) -> None:
        super().__init__(message)
        self.status, self.outcome, self.flood = status, outcome, flood


def _windows(request: Request) -> RefusalWindows:
    """The app's refusal windows (``app.state.webhook_refusals``), made on first use."""
    windows = getattr(request.app.state, "webhook_refusals", None)
    if windows is None:
        windows = request.app.state.webhook_refusals = RefusalWindows()
    return windows


async def _body(request: Request) -> bytes:
    """The body, refused (413) once it exceeds MAX_BODY_BYTES, declared or not."""
    declared = ascii_number(request.headers.get("content-length", ""))
    if declared is not None and declared > MAX_BODY_BYTES:
        raise Refused(413, "too-large", f"the body exceeds {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refused(413, "too-large", f"the body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _hook(catalog: Catalog, hook_id: str) -> Webhook | None:
    try:
        return await catalog.aio.run(rows.get_webhook, hook_id[:40])
    except NotFound:
        return None


async def _claim(catalog: Catalog, hook: Webhook, nonce: str, delivery: str, client: str) -> WebhookDelivery:
    """Store the signed delivery; refuse it over the rate limit (429) or as a replay (409)."""

    def claim(session: Session) -> WebhookDelivery:
        recent = rows.count_accepted_deliveries(session, hook.id, since=utcnow() - timedelta(minutes=1))
        if recent >= hook.max_per_minute:
            raise Refused(429, "rate-limited", f"webhook {hook.id} takes at most {hook.max_per_minute} deliveries a minute")
        try:
            return rows.record_delivery(
                session, hook.id, delivery_id=delivery, nonce=nonce, outcome="accepted", client=client
            )
        except Conflict as error:
            raise Refused(409, "replayed", str(error)) from None

    return await catalog.aio.run(claim)


def _payload(body: bytes) -> Any:
    """The delivery's JSON payload; None when the body is not JSON."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


async def _fleet(catalog: Catalog, hook: Webhook, payload: Any) -> tuple[list[str] | None, dict[str, Any] | None]:
    """The hosts and policy a payload asks for (its top-level ``hosts`` selector and ``policy``,
    like the REST API's start). The webhook's grant is its script's own hosts (its host, or what its
    targets pick): a payload may pick among them, never beyond (403 naming the others)."""
    if not isinstance(payload, dict):
        return None, None
    selector, policy = payload.get("hosts"), payload.get("policy")
    if selector is None:
        return None, policy
    if not isinstance(selector, str):
        raise Refused(422, "invalid-payload", "the payload's 'hosts' must be a host selector (a string)")
    try:
        names = await fleet_hosts.resolve(catalog, selector)
    except SMSError as error:
        raise Refused(422, "invalid-payload", str(error)) from None
    granted = await _script_hosts(catalog, hook.script)
    outside = [name for name in names if name not in granted]
    if outside:
        raise Refused(403, "denied", f"webhook {hook.id} may start {hook.script} only on its own host(s); the "
                      f"payload's selector picks {len(outside)} other(s): {', '.join(outside)}")
    return names, policy


async def _script_hosts(catalog: Catalog, name: str) -> set[str]:
    """The hosts ``name`` runs on by itself: its host, or those its targets pick now (none when
    there is no such script)."""
    try:
        script = await catalog.aio.run(get_script, name)
    except NotFound:
        return set()
    if script.targets:
        return {host.name for host in await selected_hosts(catalog, script.targets)}
    return {str(script.host)}


async def _start(catalog: Catalog, hook: Webhook, body: bytes) -> str:
    args: list[str] | None = None
    parameters: dict[str, object] | None = None
    payload = _payload(body)
    if hook.arguments:
        if payload is None:
            raise Refused(422, "invalid-payload", "the body is not JSON, but the webhook maps payload fields")
        try:
            values = map_arguments(payload, hook.arguments)
        except InvalidInput as error:
            raise Refused(422, "invalid-payload", str(error)) from None
        pairs = list(zip(hook.arguments, values, strict=True))
        args = [value for argument, value in pairs if not argument.get("parameter")] or None
        parameters = {a["parameter"]: value for a, value in pairs if a.get("parameter")} or None
    hosts, policy = await _fleet(catalog, hook, payload)
    origin = f"webhook:{hook.id}"
    try:
        return await run_services.start(catalog, hook.script, args=args, parameters=parameters, hosts=hosts,
                                        policy=policy, trigger=origin, user=origin)
    except InvalidInput as error:  # the mapped values do not fit the script's declared parameters
        raise Refused(422, "invalid-payload", str(error)) from None
    except NotFound as error:
        raise Refused(404, "failed", str(error)) from None
    except Conflict as error:
        raise Refused(409, "failed", str(error)) from None
    except SMSError as error:
        raise Refused(400, "failed", str(error)) from None
    except Exception as error:  # noqa: BLE001 - Prefect unreachable or failing: the sender may retry
        raise Refused(502, "failed", f"the run could not be started: {type(error).__name__}") from None


@router.post(
    "/hooks/{hook_id}",
    status_code=202,
    responses={**ERRORS, 401: {"description": "Bad or missing signature"}, 413: {"description": "Body too large"},
               422: {"description": "The payload does not fit the argument mapping"},
               429: {"description": "Rate limit reached"}},
)
async def deliver(hook_id: str, request: Request) -> Accepted:
    """Start the webhook's script, if the request is signed with its secret (see docs/access.md)."""
    catalog, windows = catalog_of(request), _windows(request)
    caller = audit.Caller(actor=f"webhook:{hook_id[:40]}", subject="", client=audit.client_address(request))
    delivery = delivery_id(request.headers, fallback=str(uuid.uuid4()))
    detail: dict[str, Any] = {"delivery_id": delivery}
    hook: Webhook | None = None
    stored: WebhookDelivery | None = None
    try:
        hook = await _hook(catalog, hook_id)
        if windows.count(address_key(caller.client)) >= ADDRESS_LIMIT:
            raise Refused(429, "rate-limited", f"{caller.client} was refused {ADDRESS_LIMIT} deliveries within a minute; "
                          "wait", flood=True)
        if hook is None:
            raise Refused(404, "unknown", f"no webhook {hook_id[:40]}")
        if not hook.enabled:
            raise Refused(404, "disabled", f"webhook {hook.id} is disabled")
        body = await _body(request)
        try:
            nonce = verify(unseal(hook.secret), request.headers, body)
        except (SignatureError, InvalidInput) as error:
            raise Refused(401, "bad-signature", str(error)) from None
        stored = await _claim(catalog, hook, nonce, delivery, caller.client)
        run_id = await _start(catalog, hook, body)
    except Refused as refusal:
        over = hook is not None and stored is None and windows.count(hook_key(hook.id)) >= hook.max_per_minute
        if over and not refusal.flood:
            refusal = Refused(429, "rate-limited", f"webhook {hook.id} refused {hook.max_per_minute} deliveries "
                              "within a minute; wait", flood=True)
        await _remember(catalog, windows, refusal, hook, stored, caller.client)
        if not refusal.flood:
            detail["error"] = str(refusal)
            outcome = "denied" if refusal.status in (401, 403, 404, 409, 413, 429) else "error"
            await audit.record(catalog, caller, outcome=outcome, detail=detail, **_delivered(hook_id))
        raise HTTPException(refusal.status, str(refusal)) from None
    await catalog.aio.run(rows.update_delivery, stored, outcome="started", run_id=run_id)
    detail.update(run_id=run_id, script=hook.script)
    await audit.record(catalog, caller, outcome="ok", detail=detail, **_delivered(hook_id))
    return Accepted(delivery_id=delivery, run_id=run_id)


async def _remember(
    catalog: Catalog, windows: RefusalWindows, refusal: Refused, hook: Webhook | None,
    stored: WebhookDelivery | None, client: str,
) -> None:
    """Count the refusal against the address and the webhook, and store it: on the delivery when
    its signature was valid (stored), else in the webhook's count for its reason this hour."""
    windows.add(address_key(client), ADDRESS_LIMIT)
    if hook is None:
        return
    windows.add(hook_key(hook.id), hook.max_per_minute)
    if stored is not None:
        await catalog.aio.run(rows.update_delivery, stored, outcome=refusal.outcome, detail=str(refusal))
    else:
        await catalog.aio.run(rows.count_refusal, hook.id, reason=refusal.outcome, client=client, detail=str(refusal))


def _delivered(hook_id: str) -> dict[str, str]:
    """The audit event's what: a delivery to webhook ``hook_id``."""
    return {"action": "webhook.deliver", "object_type": "webhook", "object_name": hook_id[:40]}
