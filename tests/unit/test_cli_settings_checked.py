"""`sms script add` and `sms schedule preview` judge a schedule before anything is saved: one line,
exit status 2, no catalog even created (docs/cli.md, "Settings checked before anything is saved")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SMS = str(Path(sys.executable).with_name("sms"))


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    # No Prefect here: a check that reached it would fail differently (exit 1, "cannot reach").
    return {**os.environ, "HOME": str(tmp_path), "SMS_HOME": str(tmp_path / ".sms"),
            "PREFECT_API_URL": "http://127.0.0.1:9/api", "SMS_SCHEDULE_MIN_SECONDS": "300"}


@pytest.mark.parametrize(("args", "error"), [
    (["--every", "10"], "error: --every 10: the shortest interval SMS schedules is 300 s (SMS_SCHEDULE_MIN_SECONDS)"),
    (["--cron", "* * * * *"], "error: cron '* * * * *' fires every 60 s at times"),
    (["-t", "cobol"], "error: unknown interpreter 'cobol'"),
])
def test_a_refused_setting_is_one_line_exit_2_and_creates_nothing(env, tmp_path, args, error):
    source = tmp_path / "tick.sh"
    source.write_text("echo tick\n")
    interpreter = [] if "-t" in args else ["-t", "sh"]
    done = subprocess.run([SMS, "script", "add", "tick", *interpreter, "-h", "web-01", "-f", str(source), *args],
                          env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert error in done.stderr and "Traceback" not in done.stderr
    if error.startswith("error: "):
        assert done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / ".sms" / "catalog.db").exists()  # nothing was created, not even the catalog


def test_schedule_preview_prints_the_next_runs_as_json_and_refuses_a_too_frequent_one(env):
    done = subprocess.run([SMS, "schedule", "preview", "30 2 * * MON", "--timezone", "Europe/Paris", "-n", "3", "-o", "json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert set(shown) == {"cron", "timezone", "explanation", "next_runs", "shortest_gap_seconds"}
    assert len(shown["next_runs"]) == 3 and all(run.endswith("+01:00") or run.endswith("+02:00") for run in shown["next_runs"])
    assert shown["shortest_gap_seconds"] == 7 * 24 * 3600
    refused = subprocess.run([SMS, "schedule", "preview", "*/2 * * * *"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "fires every 120 s" in refused.stderr
