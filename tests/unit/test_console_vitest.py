"""The console's own tests (Vitest: permissions → controls, cron and parameter forms, diff, output
buffer, live output, dashboard and log search on recorded answers), run as part of the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CONSOLE = Path(__file__).resolve().parents[2] / "console"


@pytest.mark.timeout(600)
def test_the_console_vitest_suite_passes() -> None:
    npx = shutil.which("npx")
    assert npx, "npx (Node.js 20+) is needed for the console's tests; infra/bootstrap.sh says how"
    assert (CONSOLE / "node_modules").is_dir(), "console/node_modules is missing: run bash infra/bootstrap.sh"
    done = subprocess.run(
        [npx, "vitest", "run", "--reporter=dot"], cwd=CONSOLE, capture_output=True, text=True, timeout=600,
        env={**os.environ, "CI": "true", "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-4000:]
    assert "passed" in done.stdout and "failed" not in done.stdout.split("Test Files")[-1], done.stdout[-2000:]
