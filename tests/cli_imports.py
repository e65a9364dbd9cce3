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


def sms_imports(*args: str, env: Mapping[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Runs ``sms ARGS`` and returns the finished process and the top-level packages it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", SMS, *args], env=dict(env if env is not None else os.environ),
        capture_output=True, text=True, timeout=120, start_new_session=True,
    )
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert imported, f"no -X importtime output: {done.stderr[-500:]}"
    return done, imported
