"""The server-side session store: hashed ids, sealed data, no revival after deletion, purging."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from sms_plugin.catalog import Catalog
from sms_plugin.catalog.models import GatewaySession
from sms_plugin.gateway.sessions import EXPIRES, SessionStore


@pytest.fixture
def catalog(tmp_path) -> Iterator[Catalog]:
    opened = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    opened.upgrade()
    yield opened
    opened.dispose()


async def test_the_catalog_holds_neither_the_cookie_nor_the_data_in_clear(catalog) -> None:
    store = SessionStore(catalog, "secret-1")
    session_id = await store.create({"principal": {"username": "otto", "refresh_token": "rt-42"}})
    with catalog.session() as s:
        row = s.scalars(select(GatewaySession)).one()
    assert session_id not in row.id and "rt-42" not in row.data and "otto" not in row.data
    assert (await store.load(session_id)) == {"principal": {"username": "otto", "refresh_token": "rt-42"}}
    assert await SessionStore(catalog, "another-secret").load(session_id) is None  # another key: nobody
    assert await store.load(session_id + "x") is None


async def test_a_removed_session_is_never_revived(catalog) -> None:
    store = SessionStore(catalog, "secret-1")
    session_id = await store.create({"n": 1})
    await store.remove(session_id)
    assert await store.replace(session_id, {"n": 2}) is False
    assert await store.load(session_id) is None


async def test_expired_sessions_are_unusable_and_purged(catalog) -> None:
    store = SessionStore(catalog, "secret-1")
    old = await store.create({EXPIRES: time.time() - 1})
    assert await store.load(old) is None
    await SessionStore(catalog, "secret-1").create({"fresh": True})  # a new store purges on its first create
    with catalog.session() as s:
        assert len(s.scalars(select(GatewaySession)).all()) == 1
