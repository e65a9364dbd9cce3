"""The catalog's shared behaviour against a real MariaDB (the ``mariadb`` fixture of ``tests/conftest.py``).

The module works in its own database, created with the server's default charset so that the tables'
own utf8mb4 setting is what gets tested; every test starts from empty tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sms_plugin.catalog import Catalog
from sms_plugin.catalog.models import Base
from tests.integration.conftest import mariadb_database
from tests.unit.test_catalog import CatalogBehaviour

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mariadb_catalog(mariadb: Any) -> Iterator[Catalog]:
    with mariadb_database(mariadb, "sms_cat") as url:
        catalog = Catalog(url)
        try:
            catalog.upgrade()
            yield catalog
        finally:
            catalog.dispose()


@pytest.fixture
def catalog(mariadb_catalog: Catalog) -> Iterator[Catalog]:
    yield mariadb_catalog
    with mariadb_catalog.session() as s:
        for table in reversed(Base.metadata.sorted_tables):
            s.execute(table.delete())


class TestCatalogOnMariaDB(CatalogBehaviour):
    """The shared behaviour on MariaDB."""
