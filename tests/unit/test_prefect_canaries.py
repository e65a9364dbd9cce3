"""Canaries for the private Prefect objects SMS patches, overrides or imports
(``sms_plugin.worker.prefect_hooks``): each exists with the parameters SMS expects, Prefect still
calls it by that name, and each patch has its effect on the real Prefect objects (a real Prefect
server where the object talks to one). A Prefect upgrade that would break SMS fails here."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import threading
import types
from datetime import UTC, datetime
from uuid import UUID, uuid4

import prefect.flow_engine
import prefect.results
import pytest
from prefect import flow, get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.exceptions import TerminationSignal
from prefect.flow_engine import AsyncFlowRunEngine, run_flow
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from sms_plugin.worker import engine, flow_heartbeats, log_delivery, prefect_hooks
from sms_plugin.worker.prefect_hooks import Target
from sms_plugin.worker.runloop import RunLoop

# Where Prefect calls each target by name: a renamed call site would leave SMS's patch or
# override in place but never used. (USED_BY_PATCHES are called by SMS's replacements.)
CALLERS: dict[Target, str] = {
    prefect_hooks.TERMINATION_INTENT: "prefect.flow_engine",
    prefect_hooks.SUSPENSION_OBSERVER: "prefect.flow_engine",
    prefect_hooks.SEND_HEARTBEATS: "prefect.flow_engine",
    prefect_hooks.READ_RESULT_STORAGE: "prefect.results",
    prefect_hooks.AREAD_RESULT_STORAGE: "prefect.results",
    prefect_hooks.CLIENT_SSL: "prefect.client.orchestration",
    prefect_hooks.LOG_SEND: "prefect.logging.handlers",
    prefect_hooks.LOG_HANDLE_BATCH: "prefect._internal.concurrency.services",
    **{target: "prefect.workers.base" for target in prefect_hooks.OVERRIDDEN if target.name != "__init__"},
}


def _code_objects(code: types.CodeType):
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_objects(constant)


def _names_used(module_name: str) -> set[str]:
    """Every global or attribute name the functions and methods defined in the module use."""
    module = importlib.import_module(module_name)
    names: set[str] = set()
    objects = [value for value in vars(module).values() if getattr(value, "__module__", None) == module_name]
    for value in list(objects):
        if inspect.isclass(value):
            objects += [inspect.unwrap(v.__func__ if isinstance(v, classmethod | staticmethod) else v.fget if isinstance(v, property) else v)
                        for v in vars(value).values()]
    for value in objects:
        code = getattr(inspect.unwrap(value), "__code__", None) if callable(value) else None
        for nested in _code_objects(code) if code is not None else ():
            names |= set(nested.co_names)
    return names


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    prefect_hooks.install()


@pytest.mark.parametrize("target", prefect_hooks.TARGETS, ids=lambda target: target.label)
def test_the_target_exists_with_the_parameters_sms_expects(target: Target) -> None:
    assert target.problem() is None


@pytest.mark.parametrize("target", list(CALLERS), ids=lambda target: target.label)
def test_prefect_still_calls_the_target_by_its_name(target: Target) -> None:
    assert target.name in _names_used(CALLERS[target]), f"{CALLERS[target]} no longer uses {target.name}"


def test_every_target_prefect_calls_has_a_caller_canary() -> None:
    not_called_by_prefect = {*prefect_hooks.USED_BY_PATCHES, *(t for t in prefect_hooks.OVERRIDDEN if t.name == "__init__")}
    assert set(prefect_hooks.TARGETS) - set(CALLERS) == not_called_by_prefect


def test_a_missing_or_reshaped_target_is_named(monkeypatch) -> None:
    from prefect.workers.base import BaseWorker

    monkeypatch.delattr(BaseWorker, "_cancel_run")
    monkeypatch.setattr(BaseWorker, "_submit_run", lambda self, run, extra: None)
    assert prefect_hooks.problems() == [
        "prefect.workers.base.BaseWorker._submit_run takes (self, run, extra), SMS expects (self, flow_run)",
        "prefect.workers.base.BaseWorker._cancel_run is missing",
    ]


def test_the_worker_refuses_a_prefect_without_a_target(monkeypatch) -> None:
    from sms_plugin.worker import SMSWorker

    monkeypatch.setattr(prefect_hooks, "_checked", False)
    monkeypatch.setattr(prefect_hooks, "TARGETS", (Target("prefect.flow_engine", "_no_such_hook", ()),))
    with pytest.raises(prefect_hooks.PrefectChanged, match=rf"Prefect {prefect.__version__}: prefect.flow_engine._no_such_hook is missing"):
        SMSWorker(work_pool_name="canary")


# --- each patch has its effect --------------------------------------------------------------------

_run_ids: list[UUID] = []


@flow
async def _sleeps(started: threading.Event | None = None) -> None:
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    _run_ids.append(context.flow_run.id)
    if started is not None:
        started.set()
    await asyncio.sleep(60)


async def _state_of(flow_run_id: UUID) -> str:
    async with get_client() as client:
        state = (await client.read_flow_run(flow_run_id)).state
    assert state is not None
    return state.type.value


async def test_termination_intent_a_cancelled_run_task_ends_cancelled_not_crashed(prefect_server) -> None:
    """As in the sms worker, the run executes on a loop of its own thread (in the main thread,
    Prefect's engine ends the process with SIGTERM after a TerminationSignal)."""
    control = engine.RunControl()
    started = threading.Event()
    run_loop = RunLoop("canary-runs")

    async def run() -> object:
        control.bind()
        return await run_flow(_sleeps, parameters={"started": started}, return_type="state")

    try:
        task = asyncio.create_task(run_loop.run(run()))
        assert await asyncio.to_thread(started.wait, 60)
        run_loop.loop.call_soon_threadsafe(control.cancel)
        with pytest.raises(TerminationSignal):
            await task
    finally:
        run_loop.close()
    assert await _state_of(_run_ids[-1]) == "CANCELLED"
    assert prefect.flow_engine._termination_intent() is None  # outside the run: the process's intent


def test_suspension_observer_no_thread_for_a_run_of_a_deployment() -> None:
    run_engine = AsyncFlowRunEngine(flow=_sleeps, flow_run=FlowRun(flow_id=uuid4(), deployment_id=uuid4()))
    before = threading.active_count()
    with run_engine.setup_flow_run_suspension_request():
        assert threading.active_count() == before


async def test_send_heartbeats_the_run_beats_from_the_one_shared_thread(prefect_server) -> None:
    seen: list[bool] = []

    @flow
    async def beating() -> None:
        seen.append(any(isinstance(b.engine, AsyncFlowRunEngine) for b in flow_heartbeats._EMITTER._runs.values()))
        seen.append(any(thread.name == "sms-flow-heartbeats" for thread in threading.enumerate()))

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
        await run_flow(beating, return_type="state")
    assert seen == [True, True]


async def test_result_storage_read_once_for_both_clients(prefect_server) -> None:
    engine._result_storage = None
    await prefect.results._aread_server_default_result_storage_block_id()
    assert engine._result_storage is not None
    first = engine._result_storage
    await asyncio.to_thread(prefect.results._read_server_default_result_storage_block_id)
    await prefect.results._aread_server_default_result_storage_block_id()
    assert engine._result_storage is first  # neither read went to the server again


def test_client_ssl_clients_share_one_context() -> None:
    first, second = PrefectClient(api="http://127.0.0.1:9/api"), PrefectClient(api="http://127.0.0.1:9/api")
    contexts = [client._client._transport._pool._ssl_context for client in (first, second)]
    assert contexts[0] is contexts[1]


async def test_log_delivery_counts_what_prefects_service_queued_and_sent(prefect_server) -> None:
    async with get_client() as client:
        flow_run = await client.create_flow_run(_sleeps)
    line = f"canary line {uuid4()}"
    before = log_delivery.queued()
    APILogWorker.instance().send(
        {"name": "canary", "level": 20, "message": line, "flow_run_id": str(flow_run.id), "timestamp": datetime.now(UTC).isoformat()}
    )
    assert log_delivery.queued() == before + 1
    assert await log_delivery.handled(log_delivery.queued(), timeout=30)
    async with get_client() as client:
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
    assert [log.message for log in logs] == [line]


def test_install_applies_each_patch_once() -> None:
    wrapped = APILogWorker.send
    prefect_hooks.install()
    assert APILogWorker.send is wrapped
    assert prefect_hooks.LOG_SEND.prefect_object() is inspect.unwrap(wrapped)
