"""The transactional outbox on SQLite: each committed catalog change leaves exactly its event, a
rolled-back change leaves none, and no secret reaches an event."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from sms_plugin import host_groups
from datetime import UTC, datetime, timedelta

from sms_plugin.catalog import (
    Catalog,
    ScriptSpec,
    add_script,
    add_version,
    audit,
    record_host_execution,
    record_run,
    remove_script,
    update_host_execution,
    update_script,
)
from sms_plugin.catalog import access
from sms_plugin.catalog.models import OutboxEvent
from sms_plugin.catalog.outbox import (
    CATALOG_TOPIC, RUNS_TOPIC, backlog, get_position, pending, position_step, purge, set_position,
)
from sms_plugin.errors import Conflict
from sms_plugin.events.publisher import unbroken
from tests.unit.test_gateway_sessions import catalog  # noqa: F401 - the fixture: a fresh SQLite catalog




def events(catalog: Catalog, topic: str = CATALOG_TOPIC) -> list[tuple[str, str, dict]]:
    with catalog.session() as s:
        rows = s.scalars(select(OutboxEvent).order_by(OutboxEvent.position)).all()
        return [(row.type, row.key, row.data) for row in rows if row.topic == topic]


def test_each_catalog_change_leaves_its_event_in_order(catalog):
    spec = ScriptSpec(name="backup", interpreter="bash", host="web-1", env={"TOKEN": "hunter2"})
    with catalog.session() as s:
        add_script(s, spec, content="echo 1", author="ada")
    with catalog.session() as s:
        add_version(s, "backup", "echo 2", author="ada")
        add_version(s, "backup", "echo 2", author="ada")  # identical content: no version, no event
    with catalog.session() as s:
        update_script(s, "backup", spec.model_copy(update={"timeout_seconds": 60}), author="ada")
        update_script(s, "backup", spec.model_copy(update={"timeout_seconds": 60}), author="ada")  # no change
    with catalog.session() as s:
        rule = access.add_rule(s, created_by="ada", subject_kind="group", subject="ops", actions=["run"])
        access.add_webhook(s, id="hook-1", created_by="ada", script="backup", secret="sealed-secret")
    with catalog.session() as s:
        access.replace_rule(s, rule.id, actions=["run", "read"])
        access.update_webhook(s, "hook-1", enabled=False)
        host_groups.add(s, "web", "role=web", author="ada")
    with catalog.session() as s:
        access.remove_webhook(s, "hook-1")
        access.remove_rule(s, rule.id)
        host_groups.remove(s, "web", author="ada")
        remove_script(s, "backup", author="ada")

    found = events(catalog)
    assert [(kind, key) for kind, key, _ in found] == [
        ("sms.script.added", "backup"),
        ("sms.script.version.pushed", "backup"),
        ("sms.script.version.pushed", "backup"),
        ("sms.script.changed", "backup"),
        ("sms.access-rule.added", f"access-rule:{rule.id}"),
        ("sms.webhook.added", "backup"),
        ("sms.access-rule.changed", f"access-rule:{rule.id}"),
        ("sms.webhook.changed", "backup"),
        ("sms.host-group.added", "host-group:web"),
        ("sms.webhook.removed", "backup"),
        ("sms.access-rule.removed", f"access-rule:{rule.id}"),
        ("sms.host-group.removed", "host-group:web"),
        ("sms.script.removed", "backup"),
    ]
    assert [data["version"] for kind, _, data in found if kind == "sms.script.version.pushed"] == [1, 2]
    assert found[3][2]["changed"] == ["timeout_seconds"]
    assert found[7][2]["changed"] == ["enabled"]
    text = json.dumps([data for _, _, data in found])
    assert "hunter2" not in text and "sealed-secret" not in text and "echo" not in text


def test_a_rolled_back_change_leaves_no_event(catalog):
    spec = ScriptSpec(name="backup", interpreter="bash", host="web-1")
    with catalog.session() as s:
        add_script(s, spec, content="echo 1", author="ada")
    with pytest.raises(Conflict), catalog.session() as s:
        add_version(s, "backup", "echo 2", author="ada")
        add_script(s, spec, content="echo 1", author="ada")  # refused: the whole transaction rolls back
    assert [kind for kind, _, _ in events(catalog)] == ["sms.script.added", "sms.script.version.pushed"]
    with catalog.session() as s:
        assert add_version(s, "backup", "echo 2", author="ada")[0].number == 2  # the rolled-back one was not kept


def test_event_ids_are_unique_and_positions_resume(catalog):
    with catalog.session() as s:
        add_script(s, ScriptSpec(name="a", interpreter="bash", host="h"), content="x", author="ada")
        for n in range(5):
            add_version(s, "a", f"x{n}", author="ada")
    with catalog.session() as s:
        rows = pending(s, 0, 100)
        assert len({row.id for row in rows}) == len(rows) == 7
        assert [row.position for row in rows] == sorted(row.position for row in rows)
        set_position(s, "kafka", str(rows[3].position))
    with catalog.session() as s:
        published = int(get_position(s, "kafka") or 0)
        assert backlog(s, published) == 3
        assert [row.position for row in pending(s, published, 2)] == [rows[4].position, rows[5].position]
        assert purge(s, published, keep=1) == 3
        assert len(pending(s, 0, 100)) == 4


def test_each_host_of_a_run_leaves_its_steps_and_a_reaping_its_event(catalog):
    began = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    with catalog.session() as s:
        record_run(s, "run-1", script_name="backup", version_number=1, host="fleet", trigger="cli", requested_by="ada")
        for host in ("web-1", "web-2", "web-3"):
            record_host_execution(s, "run-1", host)
    with catalog.session() as s:
        update_host_execution(s, "run-1", "web-1", state="running")  # connecting: no event yet
        update_host_execution(s, "run-1", "web-1", remote_pid=4242, started_at=began)
        update_host_execution(s, "run-1", "web-3", state="unreachable", message="refused")
    with catalog.session() as s:
        update_host_execution(s, "run-1", "web-1", state="failed", exit_code=3, ended_at=began + timedelta(seconds=2))
        update_host_execution(s, "run-1", "web-2", state="skipped")
        audit(s, actor="sms-reaper", action="run.reap", object_type="run", object_name="run-1",
              detail={"script": "backup", "host": "web-1", "pgid": 4242, "reason": "worker gone", "outcome": "killed"})
        audit(s, actor="ada", action="run.start", object_type="run", object_name="run-2")  # not an event
    with pytest.raises(Conflict), catalog.session() as s:
        update_host_execution(s, "run-1", "web-2", state="stopped")
        raise Conflict("rolled back")  # a step that was not committed leaves no event

    found = events(catalog, RUNS_TOPIC)
    assert [(kind, key, data["host"]) for kind, key, data in found] == [
        ("sms.run.host.started", "backup", "web-1"),
        ("sms.run.host.unreachable", "backup", "web-3"),
        ("sms.run.host.failed", "backup", "web-1"),
        ("sms.run.host.skipped", "backup", "web-2"),
        ("sms.run.reaped", "backup", "web-1"),
    ]
    assert found[0][2] == {"script": "backup", "run_id": "run-1", "host": "web-1", "state": "running", "remote_pid": 4242}
    assert found[2][2] == {"script": "backup", "run_id": "run-1", "host": "web-1", "state": "failed", "exit_code": 3,
                           "seconds": 2.0}
    assert found[4][2] == {"script": "backup", "run_id": "run-1", "host": "web-1", "result": "ok",
                           "reason": "worker gone"}


@pytest.mark.parametrize(("positions", "after", "step", "count"), [
    ([1, 2, 3], 0, 1, 3),
    ([2, 3], 0, 1, 0),          # position 1 not committed yet
    ([1, 2, 4, 5], 0, 1, 2),
    ([1, 4, 7, 10], 0, 3, 4),   # one Galera node of three
    ([4, 7, 13], 1, 3, 2),      # 10 not committed yet
    ([8, 11], 4, 3, 0),         # 7 not committed yet
    ([5, 6, 9], 4, 3, 3),       # another node's ids after a fail-over: within the step
    ([], 0, 3, 0),
])
def test_unbroken_counts_the_positions_before_the_first_hole(positions, after, step, count):
    assert unbroken(positions, after, step) == count


def test_sqlite_positions_step_by_one(catalog):  # noqa: F811 - the imported fixture
    with catalog.session() as s:
        assert position_step(s) == 1
