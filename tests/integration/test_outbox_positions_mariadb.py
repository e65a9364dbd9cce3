"""The publisher reads the outbox of a MariaDB whose ids step by more than one, as on a Galera
cluster (``wsrep_auto_increment_control`` sets ``auto_increment_increment`` to the cluster's size):
consecutive events are not holes to wait for, a missing one still is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import delete, event, select

from sms_plugin.catalog import Catalog, ScriptSpec, add_script
from sms_plugin.catalog import outbox
from sms_plugin.catalog.models import OutboxEvent
from sms_plugin.events.publisher import Publisher, PublisherSettings
from tests.integration.conftest import mariadb_database

pytestmark = pytest.mark.integration

STEP = 3
"""A three-node Galera cluster's step."""


@pytest.fixture
def stepping_catalog(mariadb: Any) -> Iterator[Catalog]:
    """A catalog on its own database whose every connection steps ids by ``STEP``."""
    with mariadb_database(mariadb, "sms_step") as url:
        catalog = Catalog(url)
        event.listen(catalog.engine, "connect", lambda connection, _record: _step(connection))
        try:
            catalog.upgrade()
            yield catalog
        finally:
            catalog.dispose()


def _step(connection: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SET SESSION auto_increment_increment = {STEP}")


def publisher_of(catalog: Catalog) -> Publisher:
    """A publisher that is never run: only its reading of the outbox is tested here."""
    return Publisher(catalog, PublisherSettings("127.0.0.1:9", 100, 5.0, None))


def positions(catalog: Catalog) -> list[int]:
    with catalog.session() as s:
        return list(s.scalars(select(OutboxEvent.position).order_by(OutboxEvent.position)))


def test_events_stepped_like_galera_are_read_in_one_go_and_a_missing_one_stops_the_read(stepping_catalog):
    for index in range(5):
        with stepping_catalog.session() as s:
            add_script(s, ScriptSpec(name=f"step-{index}", interpreter="bash", host="h"), content="true",
                       author="ada")
    written = positions(stepping_catalog)
    with stepping_catalog.session() as s:
        assert outbox.position_step(s) == STEP
    assert len(written) >= 5 and all(b - a == STEP for a, b in zip(written, written[1:])), written

    read = publisher_of(stepping_catalog)._next_rows(0)
    assert [row.position for row in read] == written  # no wait: none of the steps is a hole

    with stepping_catalog.session() as s:  # a transaction that has not committed yet
        s.execute(delete(OutboxEvent).where(OutboxEvent.position == written[2]))
    read = publisher_of(stepping_catalog)._next_rows(0)
    assert [row.position for row in read] == written[:2]
    assert publisher_of(stepping_catalog)._next_rows(written[1]) == []  # waits for it (GAP_SECONDS)
