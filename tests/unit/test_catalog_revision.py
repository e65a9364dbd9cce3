"""The catalog's shortcut past Alembic: the newest migration by name is Alembic's single head, and
an upgrade of a current catalog does not load Alembic (a fresh one is migrated as before)."""

from __future__ import annotations

import subprocess
import sys

from alembic.config import Config
from alembic.script import ScriptDirectory

from sms_plugin.catalog import Catalog
from sms_plugin.catalog.database import MIGRATIONS, newest_revision

_UPGRADE = (
    "import sys; from sms_plugin.catalog import Catalog; c = Catalog(sys.argv[1]); c.upgrade(); "
    "print(c.revision(), 'alembic' in sys.modules)"
)


def test_newest_migration_by_name_is_alembics_only_head():
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [newest_revision()]


def test_a_current_catalog_is_recognised_without_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    fresh = Catalog(url)
    assert fresh.revision() is None
    first = subprocess.run([sys.executable, "-c", _UPGRADE, url], capture_output=True, text=True, timeout=120)
    assert first.stdout.split() == [newest_revision(), "True"], first.stderr  # migrated by Alembic
    again = subprocess.run([sys.executable, "-c", _UPGRADE, url], capture_output=True, text=True, timeout=120)
    assert again.stdout.split() == [newest_revision(), "False"], again.stderr  # current: Alembic not loaded
    assert fresh.revision() == newest_revision()
    fresh.dispose()
