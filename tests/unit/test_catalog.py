"""The catalog on SQLite. ``CatalogBehaviour`` holds the tests every backend must pass; the MariaDB
integration tests reuse it with their own ``catalog`` fixture."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from sms_plugin.catalog import (
    Catalog,
    ScheduleSpec,
    ScriptSpec,
    add_script,
    add_version,
    audit,
    get_run,
    get_script,
    get_version,
    host_executions,
    list_audit,
    list_runs,
    list_scripts,
    list_versions,
    record_host_execution,
    record_run,
    remove_script,
    touch_heartbeats,
    update_host_execution,
    update_run,
    update_script,
)
from sms_plugin.catalog.models import Base
from sms_plugin.errors import Conflict, InvalidInput, NotFound


@pytest.fixture
def catalog(own_catalog: Catalog) -> Catalog:
    return own_catalog


def spec(name: str = "hello", **fields: Any) -> ScriptSpec:
    return ScriptSpec(**{"name": name, "interpreter": "bash", "host": "web-1", **fields})


def run_fields(**fields: Any) -> dict[str, Any]:
    defaults = {"script_name": "hello", "version_number": 1, "host": "web-1", "trigger": "cli", "requested_by": "alice"}
    return defaults | fields


class CatalogBehaviour:
    """What every catalog backend must do; subclasses get ``catalog`` from their module's fixture."""

    def test_host_executions_are_recorded_updated_and_reset_on_retry(self, catalog: Catalog) -> None:
        with catalog.session() as s:
            record_run(s, "run-f", **run_fields(host="2 hosts"))
            for host in ("web-2", "web-1"):
                record_host_execution(s, "run-f", host)
            update_host_execution(s, "run-f", "web-1", state="running", remote_pid=42,
                                  started_at=datetime(2026, 1, 1, tzinfo=UTC))
            update_host_execution(s, "run-f", "web-2", state="unreachable", message="cannot connect")
        with catalog.session() as s:
            rows = host_executions(s, "run-f")
            assert [(r.host, r.state, r.remote_pid, r.message) for r in rows] == [
                ("web-2", "unreachable", None, "cannot connect"), ("web-1", "running", 42, "")]
            assert rows[1].started_at == datetime(2026, 1, 1, tzinfo=UTC)
            with pytest.raises(InvalidInput, match="unknown host execution state 'done'"):
                update_host_execution(s, "run-f", "web-1", state="done")
            with pytest.raises(InvalidInput, match=r"host executions have no field\(s\) \['pid'\]"):
                update_host_execution(s, "run-f", "web-1", pid=1)
            with pytest.raises(NotFound, match="run 'run-f' has no execution on host 'web-9'"):
                update_host_execution(s, "run-f", "web-9", state="failed")
        with catalog.session() as s:  # a retried run starts its hosts afresh
            record_host_execution(s, "run-f", "web-1")
        with catalog.session() as s:
            row = host_executions(s, "run-f")[1]
            assert (row.state, row.remote_pid, row.started_at, row.message) == ("pending", None, None, "")
            assert host_executions(s, "other") == []

    def test_a_script_targets_a_selector_instead_of_a_host(self, catalog: Catalog) -> None:
        with catalog.session() as s:
            add_script(s, spec("fleet", host=None, targets="role=web AND NOT legacy"), content="echo", author="a")
        with catalog.session() as s:
            script = get_script(s, "fleet")
            assert (script.host, script.targets) == (None, "role=web AND NOT legacy")
            assert ScriptSpec.from_script(script).targets == "role=web AND NOT legacy"
        for fields, message in (({"targets": "role=web"}, "exactly one of 'host'"), ({"host": None}, "exactly one of 'host'"),
                                ({"host": None, "targets": "role=web AND ("}, "selector error at column")):
            with pytest.raises(InvalidInput, match=re.escape(message)):
                ScriptSpec.parse({"name": "x", "interpreter": "sh", "host": "web-1", **fields})

    def test_migrations_create_the_tables_and_rerunning_them_is_a_no_op(self, catalog: Catalog) -> None:
        with catalog.session() as s:
            add_script(s, spec(), content="echo hi", author="alice")
        catalog.upgrade()
        with catalog.engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == "0009"
            tables = set(inspect(connection).get_table_names())
        assert tables == {
            "alembic_version", "scripts", "script_versions", "runs", "audit_events",
            "access_rules", "webhooks", "webhook_deliveries", "webhook_refusals", "gateway_sessions",
            "host_groups", "host_executions", "event_outbox", "event_positions",
        }
        with catalog.session() as s:
            assert get_version(s, "hello").content == "echo hi"

    def test_migrated_schema_matches_the_models(self, catalog: Catalog) -> None:
        with catalog.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []

    def test_add_get_list_update_remove(self, catalog: Catalog) -> None:
        schedule = {"cron": "0 3 * * 1-5", "timezone": "Europe/Paris"}
        with catalog.session() as s:
            add_script(s, spec("b", tags=["nightly"], env={"A": "1"}, schedules=[schedule]), content="x", author="al")
            add_script(s, spec("a"), content="y", author="al")
        with catalog.session() as s:
            b = get_script(s, "b")
            assert (b.interpreter, b.host, b.env, b.tags, b.enabled) == ("bash", "web-1", {"A": "1"}, ["nightly"], True)
            assert (b.retries, b.retry_delay_seconds, b.path, b.default_args) == (0, 30, None, [])
            assert b.schedules == [schedule]
            assert ScriptSpec.from_script(b) == spec("b", tags=["nightly"], env={"A": "1"}, schedules=[schedule])
            assert [x.name for x in list_scripts(s)] == ["a", "b"]
            assert [x.name for x in list_scripts(s, tag="nightly")] == ["b"]
        with catalog.session() as s:
            script, changes = update_script(s, "b", spec("b", tags=["nightly"], retries=3, path="/x"), author="bo")
        assert changes == {
            "retries": (0, 3), "path": (None, "/x"), "env": ({"A": "1"}, {}), "schedules": ([schedule], [])
        }
        with catalog.session() as s:
            assert get_script(s, "b").retries == 3
            assert update_script(s, "b", spec("b", tags=["nightly"], retries=3, path="/x"), author="bo")[1] == {}
            remove_script(s, "b", author="cy")
        with catalog.session() as s:
            assert [x.name for x in list_scripts(s)] == ["a"]
            with pytest.raises(NotFound, match="no script named 'b'"):
                get_script(s, "b")

    def test_versions(self, catalog: Catalog) -> None:
        with catalog.session() as s:
            add_script(s, spec(), content="echo 1", author="alice", comment="first")
            v2, created = add_version(s, "hello", "echo 2", author="bob", comment="second")
            assert (v2.number, created) == (2, True)
            same, created = add_version(s, "hello", "echo 2", author="carol")
            assert (same.id, same.number, created) == (v2.id, 2, False)
            add_version(s, "hello", "echo 1", author="dan")
        with catalog.session() as s:
            versions = list_versions(s, "hello")
            assert [(v.number, v.content, v.author) for v in versions] == [
                (3, "echo 1", "dan"), (2, "echo 2", "bob"), (1, "echo 1", "alice")
            ]
            assert versions[1].sha256 == hashlib.sha256(b"echo 2").hexdigest()
            assert versions[2].comment == "first"
            assert get_version(s, "hello").number == 3
            assert get_version(s, "hello", 2).content == "echo 2"
            with pytest.raises(NotFound, match="script 'hello' has no version 7: versions are 1 to 3"):
                get_version(s, "hello", 7)

    def test_audit_events_for_every_change(self, catalog: Catalog) -> None:
        with catalog.session() as s:
            add_script(s, spec(), content="echo 1", author="alice")
            update_script(s, "hello", spec(description="greets"), author="bob")
            update_script(s, "hello", spec(description="greets"), author="bob")  # no change, no event
            add_version(s, "hello", "echo 2", author="carol")
            add_version(s, "hello", "echo 2", author="carol")  # same content, no event
            remove_script(s, "hello", author="dan")
            audit(s, actor="eve", action="run.start", object_type="run", object_name="other")
        with catalog.session() as s:
            events = list_audit(s, object_name="hello")
            assert [(e.actor, e.action, e.object_type, e.outcome) for e in events] == [
                ("dan", "script.remove", "script", "ok"),
                ("carol", "script.version", "script", "ok"),
                ("bob", "script.update", "script", "ok"),
                ("alice", "script.add", "script", "ok"),
            ]
            assert events[0].detail == {"versions": 2}
            assert events[2].detail == {"changes": {"description": ["", "greets"]}}
            assert events[3].detail["version"] == 1
            assert [e.action for e in list_audit(s, limit=2)] == ["run.start", "script.remove"]

    def test_remove_keeps_run_records_and_audit_and_drops_versions(self, catalog: Catalog) -> None:
        with catalog.session() as s:
            add_script(s, spec(), content="echo 1", author="alice")
            record_run(s, "run-1", **run_fields())
            remove_script(s, "hello", author="alice")
        with catalog.session() as s:
            assert get_run(s, "run-1").script_name == "hello"
            assert len(list_audit(s, object_name="hello")) == 2
            add_script(s, spec(), content="echo new", author="bob")
            assert [v.content for v in list_versions(s, "hello")] == ["echo new"]

    def test_heartbeats_of_many_runs_in_one_call(self, catalog: Catalog) -> None:
        at = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
        ids = [f"run-{n}" for n in range(1200)]  # more than one statement's worth
        with catalog.session() as s:
            for run_id in [*ids, "other"]:
                record_run(s, run_id, **run_fields())
        with catalog.session() as s:
            touch_heartbeats(s, [*ids, "no-such-run"], at)
        with catalog.session() as s:
            assert {r.heartbeat_at for r in list_runs(s, limit=2000) if r.flow_run_id != "other"} == {at}
            assert get_run(s, "other").heartbeat_at is None

    def test_run_records(self, catalog: Catalog) -> None:
        started = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=ZoneInfo("Europe/Paris"))
        with catalog.session() as s:
            record_run(s, "run-1", **run_fields())
            record_run(s, "run-2", **run_fields(script_name="other"))
            update_run(s, "run-1", remote_pid=4242, started_at=started)
        with catalog.session() as s:
            retried = record_run(s, "run-1", **run_fields(version_number=2, trigger="schedule"))
            assert (retried.version_number, retried.trigger, retried.remote_pid) == (2, "schedule", 4242)
            update_run(s, "run-1", exit_code=3, output_tail="done\n", ended_at=started + timedelta(seconds=1))
        with catalog.session() as s:
            run = get_run(s, "run-1")
            assert (run.exit_code, run.output_tail, run.requested_by) == (3, "done\n", "alice")
            assert run.started_at == started and run.started_at.tzinfo == UTC
            assert run.started_at.hour == 2
            assert [r.flow_run_id for r in list_runs(s)] == ["run-2", "run-1"]
            assert [r.flow_run_id for r in list_runs(s, script_name="hello")] == ["run-1"]
            assert len(list_runs(s, limit=1)) == 1
            with pytest.raises(InvalidInput, match="run records have no field"):
                update_run(s, "run-1", colour="red")
            with pytest.raises(NotFound, match="no run record for flow run 'nope'"):
                get_run(s, "nope")

    def test_errors(self, catalog: Catalog) -> None:
        with catalog.session() as s:
            add_script(s, spec(), content="echo 1", author="alice")
            with pytest.raises(Conflict, match="script 'hello' exists already"):
                add_script(s, spec(), content="echo 1", author="alice")
            with pytest.raises(InvalidInput, match="needs content"):
                add_script(s, spec("b"), content=None, author="alice")
            original = spec("orig", interpreter="original", path="/opt/x.sh")
            with pytest.raises(InvalidInput, match="give no content"):
                add_script(s, original, content="echo", author="alice")
            add_script(s, original, content=None, author="alice")
            with pytest.raises(NotFound, match="script 'orig' has no versions"):
                get_version(s, "orig")
            with pytest.raises(InvalidInput, match="no content versions"):
                add_version(s, "orig", "echo", author="alice")
            with pytest.raises(InvalidInput, match="cannot be renamed"):
                update_script(s, "hello", spec("other"), author="alice")
            for call in (lambda: get_version(s, "nope"), lambda: list_versions(s, "nope")):
                with pytest.raises(NotFound, match="no script named 'nope'"):
                    call()

    def test_a_failing_session_rolls_back(self, catalog: Catalog) -> None:
        with pytest.raises(RuntimeError), catalog.session() as s:
            add_script(s, spec(), content="echo 1", author="alice")
            raise RuntimeError("boom")
        with catalog.session() as s:
            assert list_scripts(s) == [] and list_audit(s) == []

    def test_timestamps_are_aware_utc(self, catalog: Catalog) -> None:
        before = datetime.now(UTC)
        with catalog.session() as s:
            add_script(s, spec(), content="echo 1", author="alice")
            record_run(s, "run-1", **run_fields())
        with catalog.session() as s:
            script = get_script(s, "hello")
            stamps = [script.created_at, script.updated_at, get_version(s, "hello").created_at]
            stamps += [get_run(s, "run-1").created_at, list_audit(s)[0].at]
        for stamp in stamps:
            assert stamp.tzinfo == UTC and before <= stamp <= datetime.now(UTC)

    def test_non_ascii_and_five_megabyte_contents_round_trip(self, catalog: Catalog) -> None:
        unicode = "#!/bin/bash\necho 'Grüße, 世界, 🚀'\n"
        large = "echo " + "x" * 5 * 1024 * 1024 + "\n"
        with catalog.session() as s:
            add_script(s, spec(description="Répertoire 🚀"), content=unicode, author="Zoë")
            add_version(s, "hello", large, author="Zoë")
        with catalog.session() as s:
            first, second = get_version(s, "hello", 1), get_version(s, "hello", 2)
            assert (first.content, first.author, get_script(s, "hello").description) == (unicode, "Zoë", "Répertoire 🚀")
            assert first.sha256 == hashlib.sha256(unicode.encode()).hexdigest()
            assert second.content == large


class TestCatalogOnSQLite(CatalogBehaviour):
    """The shared behaviour on an SQLite file."""


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "Hello"}, "script name 'Hello' is invalid"),
        ({"name": "-x"}, "script name '-x' is invalid"),
        ({"name": "x" * 101}, "is invalid"),
        ({"env": {"1BAD": "x"}}, r"'1BAD' is not a variable name"),
        ({"schedules": [{"cron": "0 3 * *"}]}, "must have 5 fields"),
        ({"schedules": [{"cron": "61 3 * * *"}]}, "the minute field '61' is invalid"),
        ({"schedules": [{"cron": "0 3 * * everyday"}]}, "the day-of-week field 'everyday' is invalid"),
        ({"schedules": [{"interval_seconds": 60, "timezone": "Mars/Olympus"}]}, "unknown time zone 'Mars/Olympus'"),
        ({"schedules": [{"cron": "0 3 * * *", "interval_seconds": 60}]}, "exactly one of 'cron' or 'interval_seconds'"),
        ({"schedules": [{}]}, "exactly one of"),
        ({"timeout": 5}, "timeout: Extra inputs are not permitted"),
        ({"schedules": [{"cron": "0 3 * * *", "tz": "UTC"}]}, "schedules.0.tz: Extra inputs are not permitted"),
        ({"interpreter": "original"}, "interpreter 'original' needs 'path'"),
        ({"interpreter": "original", "path": "scripts/x.sh"}, "interpreter 'original' needs 'path'"),
        ({"host": ""}, "host: String should have at least 1 character"),
        ({"retries": 101}, "retries: Input should be less than or equal to 100"),
        ({"timeout_seconds": 0}, "timeout_seconds: Input should be greater than 0"),
    ],
)
def test_script_spec_rejects_bad_input(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        ScriptSpec.parse({"name": "hello", "interpreter": "bash", "host": "web-1"} | fields)


def test_script_spec_accepts_good_input() -> None:
    parsed = ScriptSpec.parse(
        {
            "name": "backup.db_1",
            "interpreter": "original",
            "host": "win-1",
            "path": r"C:\scripts\backup.ps1",
            "env": {"_X1": "y"},
            "schedules": [
                {"cron": "*/15 2-4 L JAN,dec mon-fri"},
                {"cron": "0 0 * * 5#2", "timezone": "America/New_York"},
                {"interval_seconds": 3600},
            ],
        }
    )
    assert parsed.schedules[2] == ScheduleSpec(interval_seconds=3600, timezone="UTC")
    assert parsed.columns()["schedules"][2] == {"interval_seconds": 3600, "timezone": "UTC"}


def test_catalog_defaults_to_an_sqlite_file_under_sms_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_HOME", str(tmp_path))
    monkeypatch.delenv("SMS_DATABASE_URL", raising=False)
    catalog = Catalog()
    catalog.upgrade()
    catalog.dispose()
    assert (tmp_path / "catalog.db").is_file()


def test_upgrade_from_0001_keeps_rows_and_fills_new_columns(tmp_path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path}/old.db")
    catalog.upgrade("0001")
    with catalog.engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO scripts (name, description, interpreter, host, default_args, env, retries, "
            "retry_delay_seconds, schedules, tags, enabled, created_at, updated_at) VALUES "
            "('legacy', '', 'sh', 'h', '[]', '{}', 0, 30, '[]', '[]', 1, '2025-01-01', '2025-01-01')"
        )
        connection.exec_driver_sql(
            "INSERT INTO runs (flow_run_id, script_name, host, trigger, requested_by, output_tail, created_at) "
            "VALUES ('r1', 'legacy', 'h', 'cli', 'a', '', '2025-01-01')"
        )
    catalog.upgrade()
    with catalog.session() as s:
        script = get_script(s, "legacy")
        assert (script.kill_grace_seconds, script.single_instance) == (5, "off")
        assert get_run(s, "r1").notes == ""
