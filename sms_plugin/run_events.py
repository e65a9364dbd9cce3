"""What SMS announces about its runs on Prefect's event bus (the metrics exporter listens).

Prefect emits the flow-run state events itself (``prefect.flow-run.<State>``); the run-script
flow adds two of its own:

- ``sms.run.finished``: the script ended with an exit code. Resource ``sms.run.<flow run id>``
  labelled ``sms.script`` and ``sms.host``; payload ``exit_code``, ``timed_out`` and ``lines``
  (output lines per stream, e.g. ``{"stdout": 12, "stderr": 1}``).
- ``sms.transport.error``: the host could not be used. Resource ``sms.host.<host>`` labelled
  ``sms.host`` and ``sms.script``; payload ``kind`` (``host_unreachable``, ``authentication_failed``,
  ``host_key_error``, ``incompatible_host``, ``transport_error``) and ``unreachable`` (true: the
  transport could not be opened; false: it broke once open).

Both are emitted per host execution: a fleet run emits one per host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from prefect.events import emit_event

RUN_FINISHED = "sms.run.finished"
TRANSPORT_ERROR = "sms.transport.error"
PREFIX = "sms."


def error_kind(error: Exception) -> str:
    """``HostKeyError`` → ``host_key_error``: the error class as a label value.

    >>> error_kind(ValueError())
    'value_error'
    """
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()


def run_finished(run_id: str, *, script: str, host: str, exit_code: int, timed_out: bool,
                 lines: Mapping[str, int]) -> None:
    emit_event(
        event=RUN_FINISHED,
        resource={"prefect.resource.id": f"sms.run.{run_id}", "sms.script": script, "sms.host": host},
        payload={"exit_code": exit_code, "timed_out": timed_out, "lines": dict(lines)},
    )


def transport_error(*, script: str, host: str, error: Exception, unreachable: bool) -> None:
    emit_event(
        event=TRANSPORT_ERROR,
        resource={"prefect.resource.id": f"sms.host.{host}", "sms.host": host, "sms.script": script},
        payload={"kind": error_kind(error), "unreachable": unreachable},
    )
