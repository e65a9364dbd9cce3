"""Which modules a run of the real ``sms`` command imported (``python -X importtime``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

SMS = str(Path(sys.executable).with_name("sms"))

HEAVY_FOR_HELP = ("prefect", "sqlalchemy", "alembic", "paramiko", "pypsrp", "fastapi", "elasticsearch")
"""Top-level packages that `sms --help` and `sms VERB --help` must not import."""

HEAVY_FOR_GATEWAY_READS = ("prefect", "sqlalchemy", "paramiko", "pypsrp", "fastapi")
"""Top-level packages that verbs read through the gateway must not import."""

UNNEEDED_FOR_LOCAL_LISTING = (
    "prefect", "alembic", "paramiko", "pypsrp", "fastapi", "elasticsearch", "httpx", "typer.rich_utils",
    "sqlalchemy.dialects.mysql", "rich.live", "sms_plugin.deploy", "sms_plugin.hosts", "sms_plugin.schedules",
    "sms_plugin.transports.interpreters", "sms_plugin.cli.fleet_run", "sms_plugin.gateway_client",
)
"""Modules (or packages) `sms script list` on a current local SQLite catalog must not import: Prefect,
migrations, transports, the gateway's client, MariaDB's dialect, typer's rich help, what only changes use."""


def sms_modules(*args: str, env: Mapping[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Runs ``sms ARGS`` and returns the finished process and the full names of the modules it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", SMS, *args], env=dict(env if env is not None else os.environ),
        capture_output=True, text=True, timeout=120, start_new_session=True,
    )
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert imported, f"no -X importtime output: {done.stderr[-500:]}"
    return done, imported


def sms_imports(*args: str, env: Mapping[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Runs ``sms ARGS`` and returns the finished process and the top-level packages it imported."""
    done, modules = sms_modules(*args, env=env)
    return done, {name.split(".")[0] for name in modules}


def imported_any(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` that ``modules`` holds, a package counting as imported when one of its modules is."""
    return sorted(name for name in names if any(m == name or m.startswith(f"{name}.") for m in modules))
