"""Property tests (hypothesis): the gateway judges the request Prefect will act on.

Paths: for every generated request target the gateway does not refuse with 400, the endpoint the
gateway classified is the one Prefect's real server app (``create_app``, base path
``/prefect/api``) dispatches the exact forwarded bytes to — the app is driven in-process as
uvicorn would (``path`` = the unquoted raw path), with every route's ``handle`` replaced by a
recorder (which, like ``handle``, lets only the route's methods through) so that no endpoint runs.

Bodies: every create_flow_run and set_state body the gateway lets a non-admin send is, as
Prefect's own request models read it, a scheduled start without job variables, queue or
infrastructure, with declared parameters only; or a cancel, or an unforced retry.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount, Route, WebSocketRoute

from sms_plugin.gateway.prefect_bodies import Refused, check_create_flow_run, set_state_action
from sms_plugin.gateway.prefect_paths import BadPath, canonical_path
from sms_plugin.gateway.prefect_route_table import ROUTES
from sms_plugin.gateway.prefect_routes import UI_KEY, NoRoute, resolve
from tests.load import scaled

EXAMPLES = scaled(2_500, 10_000)
"""Examples per test: 2,500 in CI (fresh random ones each run, ~10-20 s a test), 10,000 with
SMS_FULL_LOAD=1 (several minutes per test on a loaded 2-core machine)."""
pytestmark = pytest.mark.timeout(1800)
UI = "UI"
_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


# ------------------------------------------------------------------ Prefect's app, recorded


@pytest.fixture(scope="module")
def prefect_dispatch() -> Iterator[Any]:
    """``dispatch(raw, method, websocket)``: the route key Prefect's real app hands the request
    to ("UI" for the UI mount, None when no endpoint runs)."""
    from prefect.server.api.server import create_app
    from prefect.settings import PREFECT_SERVER_API_BASE_PATH, PREFECT_UI_SERVE_BASE, temporary_settings

    with temporary_settings(updates={PREFECT_SERVER_API_BASE_PATH: "/prefect/api", PREFECT_UI_SERVE_BASE: "/prefect"}):
        app = create_app(ephemeral=True, webserver_only=True, ignore_cache=True)
    seen: list[str] = []
    mount_handle = Mount.handle

    async def answer(scope: dict, send: Any) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    async def record_route(self: Route, scope: dict, receive: Any, send: Any) -> None:
        if not self.methods or scope["method"] in self.methods:  # else handle() answers 405 itself
            seen.append(f"{scope['method']} {self.path}")
        await answer(scope, send)

    async def record_socket(self: WebSocketRoute, scope: dict, receive: Any, send: Any) -> None:
        seen.append(f"WS {self.path}")
        await answer(scope, send)

    async def record_mount(self: Mount, scope: dict, receive: Any, send: Any) -> None:
        if self.name == "api":
            await mount_handle(self, scope, receive, send)
        else:
            seen.append(UI if self.name == "ui" else f"MOUNT {self.path}")
            await answer(scope, send)

    loop = asyncio.new_event_loop()

    def dispatch(raw: bytes, method: str, websocket: bool) -> str | None:
        seen.clear()
        scope: dict[str, Any] = {
            "type": "websocket" if websocket else "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "scheme": "ws" if websocket else "http", "path": unquote(raw.decode("ascii")), "raw_path": raw,
            "root_path": "", "query_string": b"", "headers": [(b"host", b"prefect")],
            "client": ("127.0.0.1", 1), "server": ("prefect", 80), "state": {}, "subprotocols": [],
        }
        if not websocket:
            scope["method"] = method
        events = iter([{"type": "websocket.connect"} if websocket else {"type": "http.request", "body": b""}])

        async def receive() -> dict:
            return next(events, {"type": "http.disconnect"})

        async def send(message: dict) -> None:
            return None

        loop.run_until_complete(app(scope, receive, send))
        assert len(seen) <= 1, seen
        return seen[0] if seen else None

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(APIRoute, "handle", record_route)
        patch.setattr(Route, "handle", record_route)
        patch.setattr(WebSocketRoute, "handle", record_socket)
        patch.setattr(Mount, "handle", record_mount)
        yield dispatch
    loop.close()


# ------------------------------------------------------------------ generated request targets

_TRICKY = [
    "%3F", "%3f", "%23", "%2F", "%2f", "%5C", "%5c", "%25", "%253F", "%252F", "%C0%AF", "%E0%80%AF", "%C3%A9",
    "%c3%a9", "%20", "%09", "%00", "%7F", "%E2%80%8B", "%EF%BC%8F", ".", "..", "", "?", "#", "\\", " ", ";", "=",
    "x=", "filter", "count", "api", "API", "Filter", "%66ilter", "%61pi", "~", "@", ":", "+", "é",
]
_SEGMENT = st.one_of(
    st.sampled_from(_TRICKY),
    st.uuids().map(str),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1, max_size=12),
    st.lists(st.sampled_from(_TRICKY), min_size=1, max_size=3).map("".join),
)
_CLEAN = st.one_of(st.uuids().map(str), st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1, max_size=12))
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@st.composite
def request_targets(draw: st.DrawFn) -> tuple[bytes, str, bool]:
    """A raw path near Prefect's routes: a real template with odd parameters and edits, or odd
    segments under the API or UI prefix; a method; websocket or not."""
    method = draw(st.sampled_from(_METHODS))
    if draw(st.booleans()):
        kind, template = draw(st.sampled_from(sorted(ROUTES))).split(" ", 1)
        method = kind if kind in _METHODS and draw(st.integers(0, 3)) else method
        odd = draw(st.integers(0, 2)) == 0
        segments = [
            draw(_SEGMENT if odd else _CLEAN) if part.startswith("{") else part for part in template.split("/")[1:]
        ]
        if draw(st.integers(0, 3)) == 0:  # an edit: insert a segment
            segments.insert(draw(st.integers(0, len(segments))), draw(_SEGMENT))
        prefix = draw(st.sampled_from(["/prefect/api", "/prefect/api", "/prefect/api", "/prefect", "/prefect/API", "/prefect/api/"]))
    else:
        segments = draw(st.lists(_SEGMENT, min_size=0, max_size=6))
        prefix = draw(st.sampled_from(["/prefect/api", "/prefect"]))
    text = prefix + "/" + "/".join(segments) if segments else prefix
    if draw(st.integers(0, 3)) == 0:
        text += draw(st.sampled_from(["/", "//", "/.", "%2F", "?", " ", ""]))
    return text.encode("utf-8"), method, draw(st.integers(0, 9)) == 0


def test_the_gateway_judges_the_endpoint_prefect_dispatches_to(prefect_dispatch) -> None:
    counts = {"refused": 0, "no route": 0, "endpoint": 0}

    @_SETTINGS
    @given(request_targets())
    def check(target: tuple[bytes, str, bool]) -> None:
        raw, method, websocket = target
        try:
            path = canonical_path(raw)
        except BadPath:
            counts["refused"] += 1
            return
        truth = prefect_dispatch(raw, method, websocket)
        try:
            judged = resolve(method, path, websocket=websocket).key
        except NoRoute:
            counts["no route"] += 1
            assert truth in (None, UI), (raw, method, websocket, truth)  # no API endpoint runs
            return
        counts["endpoint"] += 1
        assert (UI if judged == UI_KEY else judged) == truth, (raw, method, websocket)

    check()
    assert sum(counts.values()) >= EXAMPLES
    assert min(counts.values()) > EXAMPLES // 20, counts  # each outcome well exercised


# ------------------------------------------------------------------ generated bodies

DEPLOYMENT = {
    "parameters": {"script": "pay-report"},
    "parameter_openapi_schema": {"properties": {"script": {}, "host": {}, "args": {}}},
    "enforce_parameter_schema": False,
}
_RUN_FIELDS = [
    "parameters", "name", "tags", "idempotency_key", "state", "enforce_parameter_schema", "job_variables",
    "work_queue_name", "infrastructure_document_id", "context", "empirical_policy", "labels",
    "parent_task_run_id", "Job_Variables", "infra_overrides", "job-variables",
]
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(["", "x", "SCHEDULED", "pay-report", "backup", "sh -c id"]),
    st.just({}), st.just([]), st.just(["t"]), st.just({"command": "sh -c id"}),
)
_STATES = st.fixed_dictionaries(
    {"type": st.sampled_from(["SCHEDULED", "scheduled", "RUNNING", "CANCELLING", "CANCELLED", "COMPLETED", "PENDING"])},
    optional={
        "name": st.sampled_from([None, "Scheduled", "AwaitingRetry", "Late", "Cancelling"]),
        "message": st.sampled_from([None, "Run from the Prefect UI", "m"]),
        "data": st.sampled_from([None, {"x": 1}]),
        "state_details": st.dictionaries(
            st.sampled_from(["scheduled_time", "pause_key", "flow_run_id", "deferred"]),
            st.sampled_from([None, "2030-01-01T00:00:00Z", str(uuid.UUID(int=1)), True]), max_size=2,
        ),
    },
)
_PARAMETERS = st.dictionaries(
    st.sampled_from(["script", "host", "args", "env", "Script", "job_variables"]),
    st.sampled_from(["pay-report", "backup", "eu-1", None, ["a"]]), max_size=3,
)


@st.composite
def run_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(_RUN_FIELDS), max_size=5, unique=True)):
        body[name] = draw(_STATES if name == "state" else _PARAMETERS if name == "parameters" else _VALUES)
    return body


@_SETTINGS
@given(run_bodies())
def test_an_accepted_create_flow_run_is_a_plain_start_for_prefect_too(body: dict[str, Any]) -> None:
    from prefect.server.schemas.actions import DeploymentFlowRunCreate

    try:
        check_create_flow_run(body, DEPLOYMENT)
    except Refused:
        return
    try:
        run = DeploymentFlowRunCreate.model_validate(body)
    except ValueError:
        return  # Prefect refuses it (422): nothing happens
    assert not run.job_variables and run.work_queue_name is None and run.infrastructure_document_id is None
    assert run.context == {} and run.parent_task_run_id is None and not run.labels
    assert set(run.parameters) <= {"script", "host", "args"}
    assert run.parameters.get("script", "pay-report") == "pay-report"
    if run.state is not None:
        assert run.state.type.value == "SCHEDULED" and run.state.data is None
        assert set(run.state.state_details.model_dump(exclude_defaults=True)) <= {"scheduled_time"}


@_SETTINGS
@given(st.fixed_dictionaries({"state": _STATES}, optional={"force": _VALUES, "orchestration": _VALUES}),
       st.sampled_from(["RUNNING", "FAILED", "COMPLETED", "SCHEDULED", None]))
def test_an_accepted_set_state_is_a_cancel_or_an_unforced_retry_for_prefect_too(body: dict[str, Any], now: str | None) -> None:
    from pydantic import TypeAdapter

    from prefect.server.schemas.actions import StateCreate

    try:
        action = set_state_action(body, now)
    except Refused:
        return
    try:
        state = StateCreate.model_validate(body["state"])
        force = TypeAdapter(bool).validate_python(body.get("force", False))
    except ValueError:
        return
    assert state.data is None
    if action == "stop":
        assert state.type.value in ("CANCELLING", "CANCELLED")
        assert state.state_details.model_dump(exclude_defaults=True) == {}
    else:
        assert action == "start" and state.type.value == "SCHEDULED" and not force
        assert now in ("FAILED", "COMPLETED")
