"""The shared heartbeat writer of the runs of one process, on a real SQLite catalog."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from sms_plugin import heartbeats
from sms_plugin.catalog import Catalog, get_run, record_run


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Catalog]:
    monkeypatch.setenv("SMS_HEARTBEAT_SECONDS", "0.1")
    catalog = Catalog(f"sqlite:///{tmp_path}/c.db")
    catalog.upgrade()
    with catalog.session() as s:
        for run_id in ("first", "second"):
            record_run(s, run_id, script_name="hello", version_number=1, host="web-1", trigger="cli", requested_by="alice")
    yield catalog
    catalog.dispose()


def beat_of(catalog: Catalog, run_id: str) -> datetime | None:
    with catalog.session() as s:
        return get_run(s, run_id).heartbeat_at


async def stamped_after(catalog: Catalog, run_id: str, earlier: datetime | None, within: float = 10.0) -> bool:
    """True once ``run_id``'s heartbeat is later than ``earlier`` (a busy machine may delay a 0.1 s beat)."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        beat = beat_of(catalog, run_id)
        if beat is not None and (earlier is None or beat > earlier):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_runs_share_one_writer_and_stop_being_stamped_when_they_end(catalog: Catalog) -> None:
    async with heartbeats.heartbeat(catalog, "first"):
        assert beat_of(catalog, "first") is not None  # stamped as soon as the run joins
        async with heartbeats.heartbeat(catalog, "second"):
            assert len(heartbeats._writers) == 1
            before = (beat_of(catalog, "first"), beat_of(catalog, "second"))
            assert await stamped_after(catalog, "first", before[0]) and await stamped_after(catalog, "second", before[1])
            after = beat_of(catalog, "first")
        ended = beat_of(catalog, "second")
        assert await stamped_after(catalog, "first", after)  # still stamped, several beats on
        assert await stamped_after(catalog, "first", beat_of(catalog, "first"))
        assert beat_of(catalog, "second") == ended  # no longer stamped
    assert heartbeats._writers == {}  # no writer left behind


async def test_the_writer_of_a_closed_loop_is_dropped(catalog: Catalog) -> None:
    closed = asyncio.new_event_loop()
    closed.close()  # as when a run's loop ended without leaving its heartbeat block
    heartbeats._writers[(id(catalog), closed)] = heartbeats._Writer(catalog)
    async with heartbeats.heartbeat(catalog, "first"):
        assert [loop for _, loop in heartbeats._writers] == [asyncio.get_running_loop()]
    assert heartbeats._writers == {}
