"""Host services: hosts are Prefect blocks (editable in the Prefect UI too); SMS adds, lists
and pins their SSH host keys.

Trusting a host is two steps, so that a person sees the fingerprint before anything is pinned::

    key = await scan_host_key("web-01")        # reads the key the server shows
    print(key.fingerprint)                     # compare with the server's own
    await pin_host_key("web-01", key.line)     # now SMS connects to it
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from prefect import get_client
from pydantic import SecretStr

from blocks.hosts import HOST_BLOCK_TYPES, HostBlock, SSHHost, load_host
from sms_plugin.errors import Conflict, InvalidInput, NotFound
from sms_plugin.transports.ssh import fetch_host_key, fingerprint, key_line


@dataclass(frozen=True)
class HostInfo:
    name: str
    kind: str
    where: str
    pinned_keys: int


@dataclass(frozen=True)
class ScannedKey:
    line: str
    fingerprint: str


def ssh_host(
    *,
    address: str,
    username: str,
    port: int = 22,
    private_key: str | None = None,
    password: str | None = None,
    host_keys: list[str] | None = None,
) -> SSHHost:
    """An SSH host block from plain values (secrets are wrapped as ``SecretStr``)."""
    return SSHHost(
        address=address,
        port=port,
        username=username,
        private_key=SecretStr(private_key) if private_key else None,
        password=SecretStr(password) if password else None,
        host_keys=host_keys or [],
    )


async def add(name: str, block: HostBlock, *, overwrite: bool = False) -> None:
    """Saves ``block`` as host ``name``; Conflict if the name is taken and ``overwrite`` is off."""
    if not name or not name.replace("-", "").replace("_", "").isalnum() or name != name.lower():
        raise InvalidInput(f"host name {name!r} must be lower-case letters, digits, '-' or '_'")
    if not overwrite:
        try:
            await load_host(name)
        except NotFound:
            pass
        else:
            raise Conflict(f"host {name!r} exists already; pass overwrite to replace it")
    await block.asave(name, overwrite=True)


async def listing() -> list[HostInfo]:
    """All SMS host blocks, by name."""
    hosts: list[HostInfo] = []
    async with get_client() as client:
        for block_type in HOST_BLOCK_TYPES:
            for document in await client.read_block_documents_by_type(
                block_type.get_block_type_slug(), include_secrets=False
            ):
                block = block_type.model_validate(document.data)
                pinned = len(block.host_keys) if isinstance(block, SSHHost) else 0
                hosts.append(HostInfo(document.name or "", block_type.kind, block.describe(), pinned))
    return sorted(hosts, key=lambda host: host.name)


async def _ssh_host(name: str) -> SSHHost:
    host = await load_host(name)
    if not isinstance(host, SSHHost):
        raise InvalidInput(f"host {name!r} is not an SSH host; it has no host key")
    return host


async def scan_host_key(name: str) -> ScannedKey:
    """The key SSH host ``name`` shows now (nothing is pinned yet)."""
    host = await _ssh_host(name)
    key = await asyncio.to_thread(fetch_host_key, host.address, host.port, host.connect_timeout)
    return ScannedKey(key_line(key), fingerprint(key))


async def pin_host_key(name: str, line: str) -> None:
    """Pins ``line`` as the only trusted key of SSH host ``name``."""
    host = await _ssh_host(name)
    host.host_keys = [line]
    await host.asave(name, overwrite=True)
