"""Horizontal scale: two ``sms`` workers on one work pool of a Prefect server on PostgreSQL share
100 runs, and each run executes exactly once (its script appends its run id to a marker file)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from infra.testbed.prefect_server import PrefectServer
from infra.testbed.prefect_worker import PrefectWorker
from sms_plugin.catalog import Catalog, get_run
from tests.conftest import _started
from tests.integration.test_sms_worker import FINAL, _env, _host, _script, _sms_pool, _start_many, _until_final

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres_prefect(postgresql) -> Iterator[PrefectServer]:
    """A second Prefect server, on PostgreSQL, that this module's test talks to."""
    server = _started(PrefectServer(database_url=postgresql.prefect_url))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", server.api_url)
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server
    server.stop()


async def test_two_workers_share_100_runs_each_exactly_once(postgres_prefect, ssh_server, monkeypatch, tmp_path):
    pool = f"sms-pair-{uuid.uuid4().hex[:6]}"
    await _sms_pool(pool)
    monkeypatch.setenv("SMS_WORK_POOL", pool)
    catalog = Catalog()
    catalog.upgrade()
    marker = Path(f"/tmp/sms-exactly-once-{uuid.uuid4().hex}")
    # Each worker takes at most 60 runs at once, so neither can take all 100 alone.
    workers = [
        _started(PrefectWorker(postgres_prefect.api_url, pool=pool, worker_type="sms", limit=60, extra_env=_env()))
        for _ in range(2)
    ]
    try:
        host = await _host(ssh_server, 120)
        name = await _script(catalog, host, f'echo "$SMS_RUN_ID" >> {marker}\nsleep 3\n')
        ids = await _start_many(catalog, name, 100)
        final = await _until_final(ids, 240)
    finally:
        for worker in workers:
            worker.stop()
    try:
        written = marker.read_text().split()
    finally:
        marker.unlink(missing_ok=True)
        catalog.dispose()

    assert [final[i].state.type.value for i in ids] == ["COMPLETED"] * 100
    assert sorted(written) == sorted(ids), "every run's script ran exactly once"
    with catalog.session() as session:
        assert all(get_run(session, i).exit_code == 0 for i in ids)
    infrastructure = {final[i].infrastructure_pid for i in ids}
    assert len(infrastructure) == 2, infrastructure  # both workers took part
