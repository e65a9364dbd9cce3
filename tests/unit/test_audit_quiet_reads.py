"""The gateway's list of reads it does not audit when allowed names only real read actions."""

from __future__ import annotations

import re
from pathlib import Path

from sms_plugin.gateway.api import QUIET_READS

GATEWAY = Path(__file__).resolve().parents[2] / "sms_plugin" / "gateway"
ACTIONS = {f"api.{name}" for path in GATEWAY.glob("*.py") for name in re.findall(r'\.action\("([a-z.-]+)"', path.read_text())}
ALWAYS_AUDITED = {
    "api.run.show", "api.run.logs", "api.run.output", "api.logs.search", "api.audit.list", "api.host.key", "api.host.check",
}


def test_every_quiet_read_is_an_action_of_the_gateway() -> None:
    assert QUIET_READS <= ACTIONS, sorted(QUIET_READS - ACTIONS)


def test_changes_and_reads_of_output_logs_audit_and_hosts_are_always_audited() -> None:
    verbs_of_change = {"add", "remove", "replace", "push", "settings", "start", "stop", "trust", "labels", "update", "rotate"}
    changes = {action for action in ACTIONS if action.rsplit(".", 1)[1] in verbs_of_change}
    assert changes and not changes & QUIET_READS
    assert ALWAYS_AUDITED <= ACTIONS and not ALWAYS_AUDITED & QUIET_READS
