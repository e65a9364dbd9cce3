"""What a non-admin may put in a proxied request: ``include_secrets`` and the body schemas of the
two changes a non-admin may make through the proxy (start a run, stop or retry a run).

Fields outside a schema are refused even when ``null`` (Prefect does not treat every ``null`` as
absent); an allowed field set to ``null`` counts as absent. Every refusal is a :class:`Refused`
naming the field, which the proxy answers with 403.

- ``include_secrets`` (query parameter or body field, at any depth, in any case, ``-`` or ``_``)
  is for sms-admin only unless it is false as Prefect reads booleans.
- ``create_flow_run``: ``parameters`` (names among the deployment's parameter schema; ``script``
  only the deployment's own), ``name``, ``tags``, ``idempotency_key``, ``enforce_parameter_schema``
  (true, or the deployment's own value) and ``state``: a scheduled start (type ``SCHEDULED``,
  optional name ``Scheduled``, a message, ``state_details.scheduled_time``). What the Prefect UI's
  custom-run form adds is accepted when it changes nothing: ``job_variables`` ``{}``,
  ``work_queue_name`` the deployment's own, ``empirical_policy`` with every field null. Nothing
  else: no ``infrastructure_document_id``, ``context``, ``labels``, ``parent_task_run_id``, ...
- ``set_state``: ``state`` (type, name, message, ``state_details``) and ``force``. To
  ``CANCELLING``/``CANCELLED`` is a ``stop`` (no state details). To ``SCHEDULED`` is a retry, a
  ``start``: name ``AwaitingRetry`` or ``Scheduled``, at most a ``scheduled_time``, no ``force``
  (Prefect's orchestration rules still apply), and only of a run that has ended. Anything else
  is for sms-admin.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from sms_plugin.gateway.rbac import Action

_BOOL = TypeAdapter(bool)
_RUN_FIELDS = frozenset({
    "parameters", "name", "tags", "idempotency_key", "state", "enforce_parameter_schema",
    "job_variables", "work_queue_name", "empirical_policy",
})
#: The fields of Prefect's ``empirical_policy`` the UI's run form sends, all null when unchanged.
_POLICY_FIELDS = frozenset({"retries", "retry_delay", "max_retries", "retry_delay_seconds", "retry_jitter_factor"})
_STATE_FIELDS = frozenset({"type", "name", "message", "state_details", "data"})
_STOP_STATES = frozenset({"CANCELLING", "CANCELLED"})
_RETRY_NAMES = frozenset({"AwaitingRetry", "Scheduled"})
#: States a run must be in to be retried by a non-admin.
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})


class Refused(Exception):
    """A request a non-admin may not send; the message names the field and why."""


def secrets_requested(query: Iterable[tuple[str, str]], body: Any) -> str | None:
    """Where ``include_secrets`` is asked for (``"query parameter 'X'"``, ``"body field 'a.X'"``),
    or None."""
    for name, value in query:
        if _is_secrets_flag(name) and not _false(value):
            return f"query parameter {name!r}"
    return _secrets_in(body, "")


def _secrets_in(value: Any, where: str) -> str | None:
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if _is_secrets_flag(str(key)) and not _false(item):
                return f"body field {path!r}"
            if (found := _secrets_in(item, path)) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _secrets_in(item, f"{where}[{index}]")) is not None:
                return found
    return None


def _is_secrets_flag(name: str) -> bool:
    return name.strip().casefold().replace("-", "_") == "include_secrets"


def _false(value: Any) -> bool:
    try:
        return _BOOL.validate_python(value) is False
    except ValidationError:
        return False


def _fields(value: Any, what: str, allowed: frozenset[str]) -> dict[str, Any]:
    """The non-null fields of the JSON object ``value``; :class:`Refused` when it is no object or
    holds a field outside ``allowed`` (even a null one)."""
    if not isinstance(value, dict):
        raise Refused(f"{what} must be a JSON object")
    for name in value:
        if name not in allowed:
            raise Refused(f"field {name!r} of {what} is for sms-admin only (allowed: {', '.join(sorted(allowed))})")
    return {key: item for key, item in value.items() if item is not None}


def check_create_flow_run(body: Any, deployment: dict[str, Any]) -> dict[str, Any]:
    """The run parameters of a create_flow_run ``body`` a non-admin may send for ``deployment``
    (as Prefect returns it); :class:`Refused` otherwise."""
    fields = _fields(body, "the create_flow_run body", _RUN_FIELDS)
    if body.get("empirical_policy", {}) is None:
        raise Refused("field 'empirical_policy' may not be null (leave it out)")
    parameters = fields.get("parameters", {})
    if not isinstance(parameters, dict):
        raise Refused("field 'parameters' must be a JSON object")
    declared = ((deployment.get("parameter_openapi_schema") or {}).get("properties") or {}).keys()
    for name in parameters:
        if name not in declared:
            raise Refused(f"parameter {name!r} is not one of the deployment's parameters ({', '.join(sorted(declared)) or 'none'})")
    own_script = (deployment.get("parameters") or {}).get("script")
    if "script" in parameters and parameters["script"] != own_script:
        raise Refused(f"parameter 'script' may only name the deployment's own script ({own_script!r})")
    for name in ("name", "idempotency_key"):
        if name in fields and not isinstance(fields[name], str):
            raise Refused(f"field {name!r} must be a string")
    tags = fields.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise Refused("field 'tags' must be a list of strings")
    enforce = fields.get("enforce_parameter_schema")
    if enforce is not None and enforce is not True and enforce != deployment.get("enforce_parameter_schema"):
        raise Refused("field 'enforce_parameter_schema' may only be true or the deployment's own value")
    _unchanged_run_settings(fields, deployment)
    if "state" in fields:
        state = _state(fields["state"])
        if state.get("type") != "SCHEDULED" or state.get("name", "Scheduled") != "Scheduled":
            raise Refused("field 'state' may only be a scheduled start (type SCHEDULED)")
        _scheduled_time_only(state)
    return parameters


def _unchanged_run_settings(fields: dict[str, Any], deployment: dict[str, Any]) -> None:
    """Refuse the run settings the UI's run form sends unless they change nothing."""
    if fields.get("job_variables", {}) != {}:
        raise Refused("field 'job_variables' is for sms-admin only (only {} is accepted)")
    own_queue = deployment.get("work_queue_name")
    if fields.get("work_queue_name", own_queue) != own_queue:
        raise Refused(f"field 'work_queue_name' may only be the deployment's own queue ({own_queue!r})")
    if "empirical_policy" in fields:
        policy = _fields(fields["empirical_policy"], "field 'empirical_policy'", _POLICY_FIELDS)
        if policy:
            raise Refused(f"field 'empirical_policy.{min(policy)}' is for sms-admin only (retries come from the script)")


def set_state_action(body: Any, run_state: str | None) -> Action:
    """What a set_state ``body`` is for a non-admin: ``stop`` or ``start`` (a retry of a run
    now in ``run_state``); :class:`Refused` otherwise."""
    fields = _fields(body, "the set_state body", frozenset({"state", "force"}))
    state = _state(fields.get("state"))
    kind = state.get("type")
    if kind in _STOP_STATES:
        if state.get("state_details"):
            raise Refused("field 'state.state_details' is for sms-admin only when stopping a run")
        return "stop"
    if kind == "SCHEDULED":
        if state.get("name", "AwaitingRetry") not in _RETRY_NAMES:
            raise Refused("field 'state.name' of a retry may only be AwaitingRetry or Scheduled")
        if fields.get("force"):
            raise Refused("field 'force' is for sms-admin only on a retry (Prefect's rules decide)")
        if run_state not in FINAL_STATES:
            raise Refused(f"only a run that has ended may be retried (this one is {run_state})")
        _scheduled_time_only(state)
        return "start"
    raise Refused(f"set_state to {kind} is for sms-admin only (operators may cancel or retry)")


def _state(value: Any) -> dict[str, Any]:
    state = _fields(value, "field 'state'", _STATE_FIELDS)
    if "data" in state:
        raise Refused("field 'state.data' is for sms-admin only")
    if not isinstance(state.get("type"), str):
        raise Refused("field 'state.type' must be a state type")
    return state


def _scheduled_time_only(state: dict[str, Any]) -> None:
    _fields(state.get("state_details", {}), "field 'state.state_details'", frozenset({"scheduled_time"}))
