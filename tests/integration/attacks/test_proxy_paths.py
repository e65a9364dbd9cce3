"""Paths that would be judged as one route and reach another: every spelling is refused (400)
before anything is forwarded, and nothing is created in Prefect."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import websockets

pytestmark = pytest.mark.integration

#: Each payload would create something if it reached the route hidden in the path.
HIDDEN = {
    "variables": {"name": "pwned_var", "value": "1"},
    "deployments": {"name": "pwned", "flow_id": str(uuid.uuid4()), "job_variables": {"command": "sh -c id"}},
    "flow_runs": {"flow_id": str(uuid.uuid4()), "name": "pwned"},
    "automations": {"name": "pwned", "trigger": {"type": "event", "posture": "Reactive", "expect": ["x"]},
                    "actions": [{"type": "do-nothing"}]},
    "block_documents": {"name": "pwned", "data": {}},
    "work_pools": {"name": "pwned-pool", "type": "process"},
    "flow_runs/bulk_set_state": {"flow_run_ids": [], "state": {"type": "COMPLETED"}},
}
#: Ways to make a read-looking path (``.../filter``) that decodes to the hidden route.
SPELLINGS = [
    "{route}/%3Fx=/a/filter",  # encoded ? — Prefect would see /{route}/ and a query
    "{route}/%3fx=/a/filter",  # ... lower case
    "{route}/%23x/a/filter",  # encoded #
    "{route}%3F/a/b/filter",
    "{route}/%253F/a/filter",  # double encoding
    "{route}/x%2F..%2F/filter",  # encoded /
    "{route}/x%2f..%2f/filter",
    "{route}/x%5C..%5C/filter",  # encoded backslash
    "{route}/%C0%AF/filter",  # overlong UTF-8 for /
    "{route}/%E0%80%AF/filter",
    "{route}/%FF/filter",  # not UTF-8
    "{route}/%00/filter",  # NUL
    "{route}/x%20/filter",  # trailing space
    "{route}/x%09/filter",  # tab
    "{route}/%E2%80%AE/filter",  # bidi override
    "flows/filter/../../{route}/",  # dot segments
    "flows/filter/%2E%2E/%2E%2E/{route}/",
    "flows/./../{route}/",
    "/{route}/",  # //
    "{route}//filter",
    "%66lows/../{route}/",  # needless escape
]


@pytest.mark.parametrize("route", sorted(HIDDEN))
def test_every_spelling_of_a_hidden_route_is_refused_and_nothing_happens(bed, route: str) -> None:
    before = bed.counts()
    body = json.dumps(HIDDEN[route]).encode()
    for user in ("viola", "otto"):
        for spelling in SPELLINGS:
            target = b"/prefect/api/" + spelling.format(route=route).encode()
            reply = bed.raw(user, "POST", target, body)
            assert reply.status == 400, (user, target, reply.status, reply.body[:200])
            assert b"refused path" in reply.body, reply.body[:200]
    assert bed.counts() == before


@pytest.mark.parametrize(
    "target",
    [b"/prefect/api/variables/a\\b/filter", b"/prefect/api/variables/\x01/filter", b"/prefect/api/variables/a b/filter"],
)
def test_raw_bytes_that_must_be_encoded_are_refused(bed, target: bytes) -> None:
    before = bed.counts()
    reply = bed.raw("viola", "POST", target, json.dumps(HIDDEN["variables"]).encode())
    assert reply.status == 400
    assert bed.counts() == before


def test_mixed_case_and_unknown_routes_reach_nothing(bed) -> None:
    before = bed.counts()
    body = json.dumps(HIDDEN["variables"]).encode()
    assert bed.raw("viola", "POST", b"/prefect/API/variables/", body).status == 405  # the UI's files
    assert bed.raw("viola", "POST", b"/prefect/api/Variables/", body).status == 404
    assert bed.raw("viola", "POST", b"/prefect/api/variables", body).status == 404  # Prefect would redirect
    assert bed.raw("viola", "POST", b"/prefect/api/variables/filter/", body).status == 404
    assert bed.raw("viola", "POST", b"/prefect/api/variables/", body).status == 403
    assert bed.counts() == before


def test_the_query_cannot_hide_a_route_either(bed) -> None:
    """A query is forwarded as sent and never part of the route; odd bytes in it are refused."""
    before = bed.counts()
    body = json.dumps(HIDDEN["variables"]).encode()
    reply = bed.raw("viola", "POST", b"/prefect/api/variables/filter?x=/../../variables/", body)
    assert reply.status == 200 and isinstance(json.loads(reply.body), list)
    assert bed.raw("viola", "POST", b"/prefect/api/variables/filter?x=\x7f", body).status == 400
    assert bed.counts() == before


# ------------------------------------------------------------------ websockets


def _ws(bed, path: str) -> str:
    return bed.url.replace("http://", "ws://") + path


@pytest.mark.parametrize(
    "path",
    [
        "/prefect/api/events/%69n",  # needless escape of /events/in
        "/prefect/api/events/out%2F..%2Fin",
        "/prefect/api/events/out/../in",
        "/prefect/api/events//in",
        "/prefect/api/events/in%3F/out",
        "/prefect/api/logs/out%00",
        "/prefect/api/events/in",  # plainly: admin
        "/prefect/api/work_pools/sms/workers/connect",
        "/prefect/api/task_runs/subscriptions/scheduled",
    ],
)
async def test_websocket_paths_are_canonical_and_judged(bed, path: str) -> None:
    name = f"sms.attack.{uuid.uuid4().hex[:8]}"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(_ws(bed, path), additional_headers=bed.bearer("viola"), open_timeout=30) as socket:
            await socket.send(json.dumps({"id": str(uuid.uuid4()), "event": name, "resource": {"prefect.resource.id": "x"}}))
    assert refused.value.response.status_code == 403
    await asyncio.sleep(1)
    found = await asyncio.to_thread(
        bed.prefect.post, "/events/filter", json={"filter": {"event": {"name": [name]}}, "limit": 10}
    )
    assert found.json()["events"] == []


async def test_websocket_read_path_still_works(bed) -> None:
    async with websockets.connect(
        _ws(bed, "/prefect/api/logs/out"), subprotocols=[websockets.Subprotocol("prefect")],
        additional_headers=bed.bearer("viola"), open_timeout=30,
    ) as socket:
        await socket.send(json.dumps({"type": "auth", "token": None}))
        assert json.loads(await socket.recv()) == {"type": "auth_success"}
