"""Fixtures shared by the integration tests: transports and hosts built on the test bed's peers."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from blocks.hosts import SSHHost
from infra.testbed.run_account import ensure_run_account
from sms_plugin.catalog import Catalog

from sms_plugin.transports.base import Transport
from sms_plugin.transports.local import LocalTransport
from sms_plugin.transports.ssh import SSHTarget, SSHTransport


def login_of(server) -> dict[str, object]:
    """How to log in to a test bed sshd as its user ``smstest``, host keys pinned."""
    return {
        "address": server.host,
        "port": server.port,
        "username": server.username,
        "private_key": server.private_key_pem,
        "host_keys": list(server.host_public_keys),
        "connect_timeout": 5,
    }


def target_of(server, **overrides: object) -> SSHTarget:
    """A test bed sshd as a transport target; keywords override."""
    return SSHTarget(**{**login_of(server), **overrides})  # type: ignore[arg-type]


def block_of(server, **overrides: object) -> SSHHost:
    """A test bed sshd as an SSHHost block; keywords override."""
    return SSHHost(**{**login_of(server), **overrides})  # type: ignore[arg-type]


def alive(ssh_server, pattern: str) -> list[str]:
    """The test sshd's processes matching ``pattern`` that are not zombies."""
    return [p for p in ssh_server.processes(pattern) if " Z" not in p]


async def until(check, timeout: float, interval: float = 0.3):
    """Polls ``check`` (a function, possibly async) until it returns something truthy or
    ``timeout`` seconds pass; returns its last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(interval)


def long_line_pieces(messages: list[str], length: int) -> list[str]:
    """The pieces of a line of ``length`` "x" among a run log's output messages, checked: each but
    the last ends with the continuation marker, none is over the limit, together they are the line,
    and the next line is "after"."""
    from sms_plugin.transports.base import CONTINUES, MAX_LINE_CHARS

    texts = "\n".join(messages).split("\n")
    pieces = [text for text in texts if text.startswith("xxxx")]
    assert [piece.endswith(CONTINUES) for piece in pieces] == [True] * (len(pieces) - 1) + [False], pieces
    assert max(len(piece) for piece in pieces) <= MAX_LINE_CHARS
    assert "".join(piece.removesuffix(CONTINUES) for piece in pieces) == "x" * length
    assert texts[texts.index(pieces[-1]) + 1] == "after"
    return pieces


def wait_for_metric(port: int, sample: str, timeout: float) -> None:
    """Polls an exporter's ``/metrics`` on ``port`` until the exact ``sample`` line shows up;
    fails with the last page otherwise."""
    deadline = time.monotonic() + timeout
    while sample not in (metrics := httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text):
        assert time.monotonic() < deadline, metrics
        time.sleep(0.5)


@contextmanager
def mariadb_database(mariadb, prefix: str) -> Iterator[str]:
    """A new database (server default charset) on the test bed's MariaDB; yields its URL, drops it at the end."""
    server_url = make_url(mariadb.url)
    database = f"{prefix}_{secrets.token_hex(4)}"
    server = create_engine(server_url)
    with server.begin() as connection:
        connection.execute(text(f"CREATE DATABASE `{database}`"))
    try:
        yield server_url.set(database=database).render_as_string(hide_password=False)
    finally:
        with server.begin() as connection:
            connection.execute(text(f"DROP DATABASE `{database}`"))
        server.dispose()


@pytest.fixture(scope="session", autouse=True)
def run_account() -> str:
    """The unprivileged account local scripts run as (``LocalHost.run_as``), created if missing."""
    return ensure_run_account().pw_name


@pytest.fixture(scope="module")
def catalog(prefect_server) -> Iterator[Catalog]:
    """The catalog the flow uses here and in the worker: SMS_HOME's SQLite file, migrated."""
    assert "SMS_DATABASE_URL" not in os.environ, "the worker must share this catalog"
    opened = Catalog()
    opened.upgrade()
    yield opened
    opened.dispose()


@pytest.fixture
def ssh_target(ssh_server) -> SSHTarget:
    """The test bed's modern sshd as a target."""
    return target_of(ssh_server)


@pytest.fixture(params=["local", "ssh"])
async def transport(request, tmp_path) -> AsyncIterator[Transport]:
    """Each transport in turn: the worker's own machine, then the test bed's sshd."""
    if request.param == "local":
        opened: Transport = LocalTransport(scratch=tmp_path / "scratch")
    else:
        opened = await SSHTransport.connect(request.getfixturevalue("ssh_target"))
    async with opened:
        yield opened


def pytest_terminal_summary(terminalreporter) -> None:
    """The HA drills' figures (recovery times, outcomes) at the end of the session, since pytest
    captures the drills' own output when they pass."""
    from tests.integration.ha_load import FIGURES  # imports this module: not at its top

    if FIGURES:
        terminalreporter.section("HA drill figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
