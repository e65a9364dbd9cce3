"""No command from a caller: SMS's workers execute SMS's flow with their pool's fixed configuration.

Prefect lets whoever creates a flow run pass ``job_variables`` that the worker folds into the
run's job configuration: for a process worker ``command`` replaces the flow with any shell command
and ``env`` sets the process's environment. SMS's pools expose no variables at all
(:func:`base_job_template`), and SMS's workers refuse a flow run that carries any job variable
(:func:`check_job_variables`): Prefect's worker base class then marks the run Crashed with the
reason, before anything is executed.
"""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import FlowRun

ALLOWED_JOB_VARIABLES: frozenset[str] = frozenset()
"""Job variables a flow run may carry. None: SMS's deployments set none, and every variable
Prefect knows of (``command``, ``env``, ``working_dir``, ``stream_output``, ...) changes what runs."""


class JobVariablesRefused(ValueError):
    """A flow run asked for job variables SMS's workers do not take."""


def check_job_variables(flow_run: FlowRun) -> None:
    """Raise :class:`JobVariablesRefused` when ``flow_run`` carries a job variable not allowed."""
    refused = sorted(set(flow_run.job_variables or {}) - ALLOWED_JOB_VARIABLES)
    if refused:
        raise JobVariablesRefused(
            f"job variables refused: {', '.join(refused)}. SMS workers run only SMS's flow, with the "
            "work pool's fixed configuration; start scripts with their declared parameters instead"
        )


def base_job_template() -> dict[str, Any]:
    """The base job template of SMS's work pools: no variables, so nothing a caller can set; the
    environment is fixed empty (Prefect refuses a template whose job configuration is empty)."""
    return {"job_configuration": {"env": {}}, "variables": {"type": "object", "properties": {}}}
