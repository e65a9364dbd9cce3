"""Host services: hosts are Prefect blocks of the kinds in ``sms_plugin.host_kinds`` (editable in
the Prefect UI too); SMS adds, lists and checks them, and pins SSH host keys.

Trusting an SSH host is two steps, so that a person sees the fingerprint before anything is pinned::

    key = await scan_host_key("web-01")        # reads the key the server shows
    print(key.fingerprint)                     # compare with the server's own
    await pin_host_key("web-01", key.line)     # now SMS connects to it

A face that cannot keep the scanned key between the two steps (a web page) confirms the fingerprint
instead: ``await trust_host_key("web-01", "SHA256:...")`` pins the key only if the server still shows
exactly that one (Conflict otherwise: the key changed since it was shown).

:func:`check` says whether a host is usable and why not (each kind checks itself: reachable,
logged in, host key, the SSH algorithms agreed, the login shell and the interpreters found there).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from prefect import get_client
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from sms_plugin.errors import Conflict, InvalidInput, NotFound, ServiceError, SMSError
from sms_plugin.host_listings import HostInfo
from sms_plugin.host_kinds import (
    HOST_NAME_PATTERN,
    KINDS,
    HostCheck,
    HostKind,
    SSHHost,
    DocumentWriter,
    checked_labels,
    document_data,
    load_host,
    stored_hosts,
)
from sms_plugin.limits import PREFECT_ERRORS, ensure_host_limit, ensure_host_limits
from sms_plugin.transports.ssh import fetch_host_key, fingerprint, key_line

__all__ = [
    "SAVES_AT_ONCE", "HostCheck", "HostInfo", "ScannedKey", "add", "add_many", "check", "checked_labels", "checked_name", "listing",
    "pin_host_key", "refusals", "scan_host_key", "set_labels", "trust_host_key",
]


SAVES_AT_ONCE = 16
"""Host block documents :func:`add_many` writes at once (a bound on the Prefect server's load)."""
SAVE_TRIES = 3
"""How often :func:`add_many` writes a host whose creation the server answered 409 but whose
document it then did not find (seen on a loaded Prefect server with PostgreSQL)."""


@dataclass(frozen=True)
class ScannedKey:
    line: str
    fingerprint: str

    @property
    def key_type(self) -> str:
        """The key's algorithm, e.g. ``ssh-ed25519``."""
        return self.line.split()[0]


def checked_name(name: str) -> str:
    """``name`` if it is a valid host name: a Prefect block document name (no '_')."""
    if not re.match(HOST_NAME_PATTERN, name):
        raise InvalidInput(f"host name {name!r} must be 1-100 lower-case letters, digits or '-'")
    return name


def _refusal(name: str, block: HostKind, existing_kind: str | None, overwrite: bool) -> Conflict | None:
    """Why ``block`` may not be saved as host ``name`` when a host of ``existing_kind`` is stored
    under that name (None: no host is), or None if it may."""
    if existing_kind is not None and not overwrite:
        return Conflict(f"host {name!r} exists already; pass overwrite to replace it")
    if existing_kind is not None and existing_kind != block.kind:
        return Conflict(
            f"host {name!r} is a {existing_kind} host; a host keeps its kind: remove it in the Prefect UI "
            f"(Blocks) to add a {block.kind} host of that name"
        )
    return None


async def add(name: str, block: HostKind, *, overwrite: bool = False) -> None:
    """Saves ``block`` as host ``name``; Conflict if the name is taken and ``overwrite`` is off, or
    taken by a host of another kind (each kind is its own block type: both would be kept).
    Many hosts at once: :func:`add_many` (a few requests in all, not about ten per host)."""
    checked_name(name)
    try:
        existing = await load_host(name)
    except NotFound:
        existing = None
    if refusal := _refusal(name, block, existing.kind if existing else None, overwrite):
        raise refusal
    await block.asave(name, overwrite=True)
    await ensure_host_limit(name, block.max_parallel_sessions)  # the `host:<name>` concurrency limit


async def add_many(blocks: Mapping[str, HostKind], *, overwrite: bool = False) -> dict[str, SMSError]:
    """:func:`add` for many hosts (name → block), with the same refusals, in a few requests: the
    stored hosts read once (:func:`~sms_plugin.host_kinds.stored_hosts`), each kind's block type
    and schema registered once, the block documents written :data:`SAVES_AT_ONCE` at a time, then
    the ``host:<name>`` limits made sure of in one paged read. Returns why each refused host was
    not saved (host name → the error :func:`add` would raise); every other host is saved."""
    refused: dict[str, SMSError] = {}
    for name in blocks:
        try:
            checked_name(name)
        except InvalidInput as error:
            refused[name] = error
    with PREFECT_ERRORS.boundary(f"saving {len(blocks)} hosts"):
        async with get_client() as client:
            stored = await stored_hosts(client)
            for name, block in blocks.items():
                existing = stored.get(name)
                if name not in refused and (refusal := _refusal(name, block, existing and existing.kind, overwrite)):
                    refused[name] = refusal
            wanted = {name: block for name, block in blocks.items() if name not in refused}
            writer = DocumentWriter(client)
            for kind in {block.kind for block in wanted.values()}:
                await writer.register(KINDS[kind].block)
            turns = asyncio.Semaphore(SAVES_AT_ONCE)

            async def save(name: str, block: HostKind) -> None:
                async with turns:
                    existing = stored.get(name)
                    document_id = existing.document_id if existing else None
                    for _ in range(SAVE_TRIES):
                        try:
                            await writer.write(name, block, document_id)
                            return
                        except ObjectAlreadyExists:  # written meanwhile, by someone else or our own retried create
                            try:
                                current = await client.read_block_document_by_name(name, block.get_block_type_slug())
                            except ObjectNotFound:  # a loaded Prefect server may answer 409, then not find it
                                continue
                            if not (overwrite or current.data == document_data(block)):
                                refused[name] = Conflict(f"host {name!r} was added meanwhile by someone else; add it again")
                                return
                            document_id = current.id  # ours, or ours to replace
                    refused[name] = ServiceError(f"host {name!r}: the Prefect server refused to save it {SAVE_TRIES} times; add it again")

            await asyncio.gather(*(save(name, block) for name, block in wanted.items()))
    await ensure_host_limits({name: block.max_parallel_sessions for name, block in wanted.items() if name not in refused})
    return {name: refused[name] for name in blocks if name in refused}


def refusals(refused: Mapping[str, SMSError]) -> SMSError:
    """One error naming every host :func:`add_many` refused and why, of the first of Conflict,
    ServiceError and InvalidInput among them; the other hosts were saved."""
    lines = "\n  ".join(f"{name}: {error}" for name, error in refused.items())
    error_type = next(kind for kind in (Conflict, ServiceError, InvalidInput)
                      if kind is InvalidInput or any(isinstance(error, kind) for error in refused.values()))
    return error_type(f"{len(refused)} host(s) were not saved (the others were):\n  {lines}")


async def listing() -> list[HostInfo]:
    """All SMS hosts of every kind, by name."""
    hosts: list[HostInfo] = []
    async with get_client() as client:
        for kind in KINDS.values():
            for document in await client.read_block_documents_by_type(
                kind.block.get_block_type_slug(), include_secrets=False
            ):
                hosts.append(HostInfo.of(document.name or "", kind.block.model_validate(document.data)))
    return sorted(hosts, key=lambda host: host.name)


async def _ssh_host(name: str) -> SSHHost:
    host = await load_host(name)
    if not isinstance(host, SSHHost):
        raise InvalidInput(f"host {name!r} is a {host.kind} host, not an SSH host; it has no host key")
    return host


async def scan_host_key(name: str) -> ScannedKey:
    """The key SSH host ``name`` shows now (nothing is pinned yet)."""
    host = await _ssh_host(name)
    key = await asyncio.to_thread(fetch_host_key, host.address, host.port, host.connect_timeout, legacy=host.legacy)
    return ScannedKey(key_line(key), fingerprint(key))


async def pin_host_key(name: str, line: str) -> None:
    """Pins ``line`` as the only trusted key of SSH host ``name``."""
    host = await _ssh_host(name)
    host.host_keys = [line]
    await host.asave(name, overwrite=True)


async def trust_host_key(name: str, confirmed: str) -> ScannedKey:
    """Pins the key SSH host ``name`` shows now if its fingerprint is ``confirmed`` (what a person
    compared with the server's own); Conflict, and nothing pinned, if the server shows another key."""
    key = await scan_host_key(name)
    if key.fingerprint != confirmed:
        raise Conflict(
            f"host {name} now shows the key {key.key_type} {key.fingerprint}, not the confirmed {confirmed}: "
            f"the key changed since it was shown (or another fingerprint was confirmed); nothing was pinned. "
            f"Compare the new fingerprint with the server's own before trusting it."
        )
    await pin_host_key(name, key.line)
    return key


async def set_labels(name: str, labels: list[str]) -> HostInfo:
    """Gives host ``name`` (any kind) exactly ``labels`` (duplicates dropped, order kept)."""
    host = await load_host(name)
    host.labels = list(dict.fromkeys(checked_labels(labels)))
    await host.asave(name, overwrite=True)
    return HostInfo.of(name, host)


async def check(name: str, *, login: bool = True) -> HostCheck:
    """Checks host ``name`` and reports what it finds; a host problem is reported, never raised.
    ``login=False`` stops before presenting credentials (the exporter's probe).

    NotFound if there is no host of that name.
    """
    host = await load_host(name)
    began = time.monotonic()
    result = HostCheck(name, host.kind, host.describe(), login=login)
    await host.check(result, login=login)
    result.seconds = time.monotonic() - began
    return result
