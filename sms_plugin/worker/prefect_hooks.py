"""Every private Prefect object SMS patches, overrides or imports, checked before SMS relies on it.

A patch by assignment never fails and an override of a renamed hook is never called: when Prefect
renames or reshapes one of these objects, SMS would silently lose what the patch did. So each
object is listed here with the parameter names SMS expects (:data:`TARGETS`), and :func:`check`
refuses to go on, naming every object that is missing or changed and the Prefect version, when
the sms and sms-process workers start (in their constructor, before they talk to the API) and
as the run-script flow's first step. :func:`install` (the sms worker, at set-up) checks, then
applies :data:`PATCHES`. Why each exists and what upstream change would let
it go: docs/worker.md#prefect-internals. The canary tests (tests/unit/test_prefect_canaries.py)
check each target's signature and each patch's effect against the installed Prefect.

Example::

    prefect_hooks.check()      # raises PrefectChanged if Prefect no longer has what SMS uses
    prefect_hooks.install()    # check, then patch (idempotent)
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import prefect

from sms_plugin.errors import SMSError
from sms_plugin.worker import engine, flow_heartbeats, log_delivery


class PrefectChanged(SMSError):
    """The installed Prefect lacks, or has changed, a private object SMS relies on."""


@dataclass(frozen=True)
class Target:
    """One private Prefect object: ``owner`` is a module, or ``module:Class``; ``parameters`` are
    the names of its parameters as SMS calls or overrides it (None: not a callable)."""

    owner: str
    name: str
    parameters: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        return f"{self.owner.replace(':', '.')}.{self.name}"

    def owner_object(self) -> Any:
        module_name, _, class_name = self.owner.partition(":")
        owner: Any = importlib.import_module(module_name)
        return getattr(owner, class_name) if class_name else owner

    def prefect_object(self) -> Any:
        """Prefect's own object (also after SMS replaced it); AttributeError if it is gone."""
        patched = _ORIGINALS.get(self)
        return patched if patched is not None else getattr(self.owner_object(), self.name)

    def problem(self) -> str | None:
        """Why SMS cannot rely on this object, or None."""
        try:
            found = self.prefect_object()
        except (ImportError, AttributeError):
            return f"{self.label} is missing"
        if self.parameters is None:
            return None
        try:
            parameters = tuple(inspect.signature(found).parameters)
        except (TypeError, ValueError):
            return f"{self.label} is no longer a function"
        if parameters != self.parameters:
            return f"{self.label} takes ({', '.join(parameters)}), SMS expects ({', '.join(self.parameters)})"
        return None


@dataclass(frozen=True)
class Patch:
    """SMS's replacement of ``target``: ``replacement(prefect_object)`` returns what to put there."""

    target: Target
    replacement: Callable[[Any], Any]


# --- patched (sms worker only; see engine.py, flow_heartbeats.py, log_delivery.py) ------------------
TERMINATION_INTENT = Target("prefect.flow_engine", "_termination_intent", ())
SUSPENSION_OBSERVER = Target(
    "prefect.flow_engine", "observe_flow_run_suspension", ("flow_run_id", "suspension_request", "polling_interval")
)
SEND_HEARTBEATS = Target("prefect.flow_engine", "_send_heartbeats", ("engine", "join_on_exit"))
READ_RESULT_STORAGE = Target("prefect.results", "_read_server_default_result_storage_block_id", ())
AREAD_RESULT_STORAGE = Target("prefect.results", "_aread_server_default_result_storage_block_id", ())
CLIENT_SSL = Target("prefect.client.orchestration", "ssl")
LOG_SEND = Target("prefect.logging.handlers:APILogWorker", "send", ("self", "item"))
LOG_HANDLE_BATCH = Target("prefect.logging.handlers:APILogWorker", "_handle_batch", ("self", "items"))

PATCHES: tuple[Patch, ...] = (
    Patch(TERMINATION_INTENT, engine.per_run_termination_intent),
    Patch(SUSPENSION_OBSERVER, engine.no_suspension_observer),
    Patch(SEND_HEARTBEATS, flow_heartbeats.one_thread_for_all_runs),
    Patch(READ_RESULT_STORAGE, engine.cached_result_storage_id),
    Patch(AREAD_RESULT_STORAGE, engine.acached_result_storage_id),
    Patch(CLIENT_SSL, engine.shared_ssl_contexts),
    Patch(LOG_SEND, log_delivery._count_queued),
    Patch(LOG_HANDLE_BATCH, log_delivery._count_handled),
)

# --- used by the patches above ------------------------------------------------------------------
USED_BY_PATCHES: tuple[Target, ...] = (
    Target("prefect.flow_engine:AsyncFlowRunEngine", "heartbeat_seconds"),
    Target("prefect.flow_engine:AsyncFlowRunEngine", "flow_run"),
    Target("prefect.flow_engine:AsyncFlowRunEngine", "_build_heartbeat_event_template", ("self",)),
    Target("prefect.flow_engine:AsyncFlowRunEngine", "_emit_flow_run_heartbeat", ("self", "resource", "related")),
)

# --- overridden or imported (worker.py, process.py) ---------------------------------------------
RESOLVE_PARAMETERS = ("flow_run", "client", "work_pool", "worker_name", "worker_id", "deployment")
OVERRIDDEN: tuple[Target, ...] = (
    Target("prefect.workers.base:BaseJobConfiguration", "_base_environment", ()),
    Target("prefect.workers.base:BaseJobConfiguration", "resolve_for_flow_run", RESOLVE_PARAMETERS),
    Target("prefect.workers.process:ProcessJobConfiguration", "resolve_for_flow_run", RESOLVE_PARAMETERS),
    Target("prefect.workers.base:BaseWorker", "_description"),
    Target("prefect.workers.base:BaseWorker", "_initialize_after_sync", ("self",)),
    Target("prefect.workers.base:BaseWorker", "_setup_cancellation_observer", ("self",)),
    Target("prefect.workers.base:BaseWorker", "_submit_run", ("self", "flow_run")),
    Target("prefect.workers.base:BaseWorker", "_propose_submitting_state", ("self", "flow_run")),
    Target("prefect.workers.base:BaseWorker", "_cancel_run", ("self", "flow_run_id")),
    Target(
        "prefect._internal.observers:FlowRunCancellingObserver",
        "__init__",
        ("self", "on_cancelling", "polling_interval", "event_filter", "on_failure"),
    ),
    Target("prefect._internal.observers:FlowRunCancellingObserver", "add_in_flight_flow_run_id", ("self", "flow_run_id")),
    Target(
        "prefect._internal.observers:FlowRunCancellingObserver", "remove_in_flight_flow_run_id", ("self", "flow_run_id")
    ),
)

TARGETS: tuple[Target, ...] = (*(patch.target for patch in PATCHES), *USED_BY_PATCHES, *OVERRIDDEN)

WORKER_ATTRIBUTES: tuple[str, ...] = ("_logger", "_work_pool", "_exit_stack", "_runs_task_group", "_cancelling_observer")
"""Attributes ``BaseWorker.__init__`` sets that the sms worker reads (checked on the instance)."""

_ORIGINALS: dict[Target, Any] = {}
_checked = False


def problems() -> list[str]:
    """What is missing or changed among :data:`TARGETS` in the installed Prefect."""
    return [problem for target in TARGETS if (problem := target.problem()) is not None]


def check() -> None:
    """Raises :class:`PrefectChanged` naming every target Prefect no longer has as SMS expects
    (once it passed, later calls in the process return at once)."""
    global _checked
    if _checked:
        return
    _refuse(problems())
    _checked = True


def check_worker(worker: object) -> None:
    """Raises :class:`PrefectChanged` if ``BaseWorker.__init__`` no longer set what SMS reads."""
    _refuse([f"BaseWorker instances have no {name}" for name in WORKER_ATTRIBUTES if not hasattr(worker, name)])


def install() -> None:
    """Checks, then applies :data:`PATCHES` (once per process)."""
    check()
    for patch in PATCHES:
        if patch.target in _ORIGINALS:
            continue
        original = patch.target.prefect_object()
        setattr(patch.target.owner_object(), patch.target.name, patch.replacement(original))
        _ORIGINALS[patch.target] = original


def _refuse(found: list[str]) -> None:
    if found:
        raise PrefectChanged(
            f"SMS cannot run on Prefect {prefect.__version__}: {'; '.join(found)}. "
            "Install the Prefect version SMS pins (see docs/worker.md#prefect-internals)."
        )
