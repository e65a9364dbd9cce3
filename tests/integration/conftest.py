"""Fixtures shared by the integration tests: transports and hosts built on the test bed's peers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sms_plugin.transports.base import Transport
from sms_plugin.transports.local import LocalTransport
from sms_plugin.transports.ssh import SSHTarget, SSHTransport


def target_of(server, **overrides: object) -> SSHTarget:
    """A test bed sshd as a target for its user ``smstest``, host keys pinned."""
    values: dict[str, object] = {
        "address": server.host,
        "port": server.port,
        "username": server.username,
        "private_key": server.private_key_pem,
        "host_keys": list(server.host_public_keys),
        "connect_timeout": 5,
    }
    return SSHTarget(**{**values, **overrides})  # type: ignore[arg-type]


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
