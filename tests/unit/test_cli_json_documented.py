"""docs/cli.md names every field `--output json` prints (the shapes of sms_plugin/cli/output.py)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from sms_plugin.access_listings import AccessRuleInfo, WebhookInfo
from sms_plugin.cli.backend import Version
from sms_plugin.host_kinds.checks import HostCheck
from sms_plugin.host_listings import HostGroupInfo, HostInfo
from sms_plugin.run_results import HostResult, RunResult, RunSummary
from sms_plugin.schedules import Preview
from sms_plugin.scripts import ScriptSpec

DOC = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()


def names(shape: type) -> set[str]:
    return {field.name for field in dataclasses.fields(shape)}


def documented(heading: str) -> set[str]:
    """The backquoted names of the paragraph that starts with **heading**."""
    paragraph = re.search(rf"\*\*{heading}\*\* — (.*?)(?:\n\n|\Z)", DOC, re.S)
    assert paragraph, f"docs/cli.md has no **{heading}** paragraph"
    return set(re.findall(r"`([a-z0-9_]+)`", paragraph.group(1)))


@pytest.mark.parametrize(("heading", "fields"), [
    ("Script", set(ScriptSpec.model_fields)),
    ("Host check", names(HostCheck) | {"usable"}),
    ("Host", names(HostInfo) | {"pinned_keys", "legacy"}),
    ("Host group", names(HostGroupInfo) | {"hosts"}),
    ("Version", names(Version)),
    ("Run result", names(RunResult) | names(HostResult)),
    ("Run", names(RunSummary)),
    ("Schedule preview", names(Preview)),
    ("Access rule", names(AccessRuleInfo)),
    ("Webhook", names(WebhookInfo) | {"path"}),
])
def test_every_printed_field_is_documented(heading, fields):
    assert fields - documented(heading) == set()
