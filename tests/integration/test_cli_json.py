"""Every list and show command's `--output json`, parsed back: the fields docs/cli.md promises,
with the values the catalog and Prefect hold; piped, so exactly as a program reads it."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sms_plugin import AsyncSMSClient
from sms_plugin.catalog import access

pytestmark = pytest.mark.integration

SMS = str(Path(sys.executable).with_name("sms"))
HOST_FIELDS = {"name", "kind", "where", "pinned_keys", "legacy", "labels", "admins_only", "max_parallel_sessions",
               "settings"}
VERSION_FIELDS = {"number", "sha256", "author", "created_at", "comment"}
GROUP_FIELDS = {"name", "selector", "description", "created_by", "created_at", "updated_at"}
RULE_FIELDS = {"id", "subject_kind", "subject", "actions", "script_glob", "script_tag", "host_glob", "host_label",
               "description", "created_by", "created_at"}
WEBHOOK_FIELDS = {"id", "path", "script", "description", "arguments", "max_per_minute", "enabled", "created_by",
                  "created_at"}


def sms(*args: str) -> str:
    """stdout of `sms ARGS`, piped, with no terminal anywhere; it must succeed."""
    done = subprocess.run([SMS, *args], capture_output=True, text=True, timeout=120, env=os.environ,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout


def sms_json(*args: str) -> Any:
    return json.loads(sms(*args, "--output", "json"))


@pytest.fixture(scope="module")
async def catalog_objects(prefect_server, tmp_path_factory) -> dict[str, str]:
    sdk = AsyncSMSClient(user="json-tester")
    suffix = uuid.uuid4().hex[:8]
    names = {"host": f"jh-{suffix}", "script": f"js-{suffix}", "group": f"jg-{suffix}"}
    await sdk.add_host(names["host"], "local", labels=["role=json", "prod-eu"])
    await sdk.add_script(names["script"], interpreter="sh", host=names["host"], content="echo one\n",
                         tags=["json"], description="printed as JSON")
    second = tmp_path_factory.mktemp("json") / "two.sh"
    second.write_text("echo two\n")
    pushed = subprocess.run([SMS, "script", "push", names["script"], str(second), "-m", "second"],
                            capture_output=True, text=True, timeout=120, env=os.environ)
    assert pushed.returncode == 0, pushed.stderr
    await sdk.add_host_group(names["group"], "role=json", "the JSON test's hosts")
    return names


async def test_host_list_and_check(catalog_objects):
    listed = await asyncio.to_thread(sms_json, "host", "list", "--select", "role=json")
    [host] = [h for h in listed if h["name"] == catalog_objects["host"]]
    assert set(host) == HOST_FIELDS
    assert (host["kind"], host["labels"], host["pinned_keys"]) == ("local", ["role=json", "prod-eu"], 0)
    checked = await asyncio.to_thread(sms_json, "host", "check", catalog_objects["host"])
    assert checked["name"] == catalog_objects["host"] and checked["usable"] is True
    assert checked["interpreters"]["sh"]


async def test_script_list_show_and_versions(catalog_objects):
    name = catalog_objects["script"]
    [listed] = [s for s in await asyncio.to_thread(sms_json, "script", "list", "--tag", "json") if s["name"] == name]
    assert (listed["interpreter"], listed["host"], listed["tags"], listed["description"]) == (
        "sh", catalog_objects["host"], ["json"], "printed as JSON")
    shown = await asyncio.to_thread(sms_json, "script", "show", name)
    assert shown["name"] == name and shown["newest_version"]["number"] == 2
    assert shown["newest_version"]["content"] == "echo two\n"
    versions = await asyncio.to_thread(sms_json, "script", "versions", name)
    assert [v["number"] for v in versions] == [2, 1] and all(set(v) == VERSION_FIELDS for v in versions)
    assert versions[0]["comment"] == "second" and datetime.fromisoformat(versions[0]["created_at"])


async def test_host_group_list_and_show(catalog_objects):
    name = catalog_objects["group"]
    [listed] = [g for g in await asyncio.to_thread(sms_json, "host", "group", "list") if g["name"] == name]
    assert set(listed) == GROUP_FIELDS and listed["selector"] == "role=json"
    shown = await asyncio.to_thread(sms_json, "host", "group", "show", name)
    assert set(shown) == GROUP_FIELDS | {"hosts"} and catalog_objects["host"] in shown["hosts"]


def test_an_unknown_output_format_is_a_usage_error():
    done = subprocess.run([SMS, "script", "list", "-o", "yaml"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "'yaml' is not one of" in done.stderr and "Traceback" not in done.stderr


async def test_access_rule_and_webhook_list_without_the_webhooks_secret(catalog_objects, catalog):
    script, sealed = catalog_objects["script"], f"sealed-{secrets.token_hex(8)}"
    with catalog.session() as session:
        rule_id = access.add_rule(session, created_by="json-tester", subject_kind="group", subject=f"team-{script}",
                                  actions=["start", "stop"], script_tag="json", host_label="prod-eu",
                                  description="the JSON test's rule").id
        hook_id = access.add_webhook(session, id=f"wh_{secrets.token_hex(8)}", created_by="json-tester", script=script,
                                     secret=sealed, arguments=[{"field": "ref", "pattern": "^[a-z]+$"}],
                                     max_per_minute=5, description="the JSON test's hook").id

    [rule] = [r for r in await asyncio.to_thread(sms_json, "access-rule", "list") if r["id"] == rule_id]
    assert set(rule) == RULE_FIELDS
    assert (rule["subject_kind"], rule["subject"], rule["actions"], rule["script_tag"], rule["host_label"],
            rule["script_glob"]) == ("group", f"team-{script}", ["start", "stop"], "json", "prod-eu", None)
    assert datetime.fromisoformat(rule["created_at"])
    [hook] = await asyncio.to_thread(sms_json, "webhook", "list", "--script", script)
    assert set(hook) == WEBHOOK_FIELDS  # no secret, sealed or not
    assert (hook["id"], hook["path"], hook["enabled"], hook["max_per_minute"]) == (hook_id, f"/hooks/{hook_id}", True, 5)
    assert hook["arguments"] == [{"field": "ref", "pattern": "^[a-z]+$"}]

    table = await asyncio.to_thread(sms, "webhook", "list", "--script", script)  # piped: whole ids and names
    [row] = [line for line in table.splitlines() if hook_id in line]
    assert script in row and "the JSON test's hook" in row and sealed not in table
    [row] = [line for line in (await asyncio.to_thread(sms, "access-rule", "list")).splitlines() if f"team-{script}" in line]
    assert "start stop" in row and "tagged json" in row and "labelled prod-eu" in row
