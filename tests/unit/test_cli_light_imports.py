"""`sms --help`, a verb's --help and `sms script list` on the local catalog import no package they do not
need (speed: bench/cli_startup.py)."""

from __future__ import annotations

import gc
import os

import pytest

from sms_plugin.cli import entry
from tests.cli_imports import HEAVY_FOR_HELP, UNNEEDED_FOR_LOCAL_LISTING, imported_any, sms_imports, sms_modules


@pytest.mark.parametrize("args", [("--help",), ("script", "list", "--help"), ("stop", "--help"), ("host", "--help")])
def test_help_imports_no_heavy_package(args, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "SMS_HOME": str(tmp_path / ".sms")}
    done, imported = sms_imports(*args, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage: sms" in done.stdout
    assert "sms_plugin" in imported  # the probe sees the CLI's own imports
    assert not imported & set(HEAVY_FOR_HELP), sorted(imported & set(HEAVY_FOR_HELP))
    if args == ("--help",):  # the text rendered in advance: not even the CLI's own libraries
        assert not imported & {"typer", "rich", "pydantic"}, sorted(imported & {"typer", "rich", "pydantic"})
        assert done.stdout == entry.HELP.read_text()


def test_the_help_rendered_in_advance_is_the_apps_own():
    assert entry.HELP.read_text() == entry.rendered(), (
        "sms --help changed: regenerate sms_plugin/cli/help.txt with `python -m sms_plugin.cli.entry`")


def test_local_script_list_imports_only_what_it_needs(tmp_path):
    from sms_plugin.catalog import Catalog, ScriptSpec, add_script

    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    catalog = Catalog(url)
    catalog.upgrade()  # current before the command: it checks the revision without Alembic
    with catalog.session() as session:
        add_script(session, ScriptSpec(name="nightly", interpreter="bash", host="web-1", tags=["ops"],
                                       schedules=[{"cron": "0 3 * * *"}]), content="echo hi", author="alice")
    catalog.dispose()
    env = {**os.environ, "HOME": str(tmp_path), "SMS_HOME": str(tmp_path / ".sms"), "SMS_DATABASE_URL": url,
           "SMS_LOCAL": "1", "COLUMNS": "200", "NO_COLOR": "1"}
    done, modules = sms_modules("script", "list", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nightly" in done.stdout and "0 3 * * *" in done.stdout  # the real listing ran
    assert {"sqlalchemy", "sms_plugin.catalog.models"} <= modules  # the probe sees what it did import
    assert not imported_any(modules, UNNEEDED_FOR_LOCAL_LISTING), imported_any(modules, UNNEEDED_FOR_LOCAL_LISTING)


def test_the_command_leaves_its_objects_to_the_operating_system(monkeypatch):
    from sms_plugin.cli import app

    monkeypatch.setattr("sys.argv", ["sms", "script", "list", "--help"])
    try:
        with pytest.raises(SystemExit) as done:
            app.main()
        assert done.value.code == 0
        assert gc.get_freeze_count() > 0  # the exit skips freeing them one by one (bench/cli_startup.py)
    finally:
        gc.unfreeze()
