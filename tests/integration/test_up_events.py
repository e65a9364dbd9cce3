"""``sms up`` with ``SMS_KAFKA_BOOTSTRAP`` starts the event publisher (docs/events.md): a script added
through the CLI against that stack arrives as its CloudEvent on ``sms.catalog``, read by a real
consumer from the session's Kafka cluster. Without Kafka configured ``sms up`` starts no publisher
(tests/integration/test_faces.py, ``test_sms_up_runs_the_samples_and_stops_cleanly``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from infra.testbed.ports import free_port
from tests.integration.test_events_kafka import first_copies, read_events

pytestmark = pytest.mark.integration

SMS = str(Path(sys.executable).with_name("sms"))


def child_commands(pid: int) -> list[str]:
    """The command lines of ``pid``'s children."""
    listed = subprocess.run(["pgrep", "-a", "-P", str(pid)], capture_output=True, text=True).stdout
    return [line.split(" ", 1)[1] for line in listed.splitlines()]


def test_sms_up_starts_the_publisher_when_kafka_is_configured(kafka, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SMS_"))}
    env.update(SMS_HOME=str(tmp_path / "home"), SMS_KAFKA_BOOTSTRAP=kafka.bootstrap,
               SMS_EXPORTER_PORT=str(free_port()), SMS_EVENTS_METRICS_PORT=str(free_port()))
    # No declarative catalog to apply: the stack starts with host `local` only.
    up = subprocess.Popen([SMS, "up", "--port", str(port), "--catalog", str(tmp_path / "no-catalog")], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert up.stdout is not None
        seen, deadline = "", time.monotonic() + 180
        while "SMS is up" not in seen and time.monotonic() < deadline and up.poll() is None:
            seen += up.stdout.readline()
        assert "SMS is up" in seen, seen
        assert any(command.endswith("sms events") for command in child_commands(up.pid))

        name = f"up-events-{uuid.uuid4().hex[:8]}"
        script = tmp_path / "hello.sh"
        script.write_text("echo hello\n")
        added = subprocess.run([SMS, "script", "add", name, "-t", "sh", "--host", "local", "--file", str(script)],
                               env={**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"},
                               capture_output=True, text=True, timeout=120)
        assert added.returncode == 0, added.stdout + added.stderr

        found = read_events(kafka.bootstrap, name, lambda events: any(e["type"] == "sms.script.added" for e in events))
        [event] = [e for e in first_copies(found["sms.catalog"]) if e["type"] == "sms.script.added"]
        assert (event["source"], event["subject"]) == ("/sms/catalog", name)
        assert event["data"] == {"script": name, "interpreter": "sh", "host": "local", "tags": [], "enabled": True}
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(120) == 0
