"""Host services: hosts are Prefect blocks (editable in the Prefect UI too); SMS adds, lists
and pins their SSH host keys.

Trusting a host is two steps, so that a person sees the fingerprint before anything is pinned::

    key = await scan_host_key("web-01")        # reads the key the server shows
    print(key.fingerprint)                     # compare with the server's own
    await pin_host_key("web-01", key.line)     # now SMS connects to it

:func:`check` says whether a host is usable and why not: reachable, logged in, host key, the SSH
algorithms agreed, the login shell and the interpreters found there.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import time
from dataclasses import dataclass, field

from prefect import get_client
from pydantic import SecretStr

from blocks.hosts import HOST_BLOCK_TYPES, LABEL_PATTERN, HostBlock, LocalHost, SSHHost, WindowsHost, load_host
from sms_plugin.errors import (
    AuthenticationFailed,
    Conflict,
    HostKeyError,
    IncompatibleHost,
    InvalidInput,
    NotFound,
    TransportError,
)
from sms_plugin.limits import ensure_host_limit
from sms_plugin.transports.base import Plan, RemoteProcess, Transport
from sms_plugin.transports.ssh import SSHTransport, fetch_host_key, fingerprint, handshake, key_line


@dataclass(frozen=True)
class HostInfo:
    name: str
    kind: str
    where: str
    pinned_keys: int
    legacy: bool = False
    labels: tuple[str, ...] = ()
    admins_only: bool = False
    """Only sms-admin may start or add scripts here (a local host, docs/access.md)."""


@dataclass(frozen=True)
class ScannedKey:
    line: str
    fingerprint: str


def checked_labels(labels: list[str]) -> list[str]:
    """``labels`` if each is 1-63 letters, digits, '.', '_' or '-' (starting with a letter or digit),
    optionally followed by ``=`` and a value of 1-63 of those (``role=web``)."""
    bad = [label for label in labels if not re.match(LABEL_PATTERN, label)]
    if bad:
        raise InvalidInput(
            f"invalid host label(s) {bad}: use 1-63 letters, digits, '.', '_' or '-', or KEY=VALUE of those"
        )
    return labels


HOST_NAME = re.compile(r"[a-z0-9-]{1,100}")
"""Host names are Prefect block document names: lower-case letters, digits and '-' (no '_')."""


def checked_name(name: str) -> str:
    """``name`` if it is a valid host name (:data:`HOST_NAME`)."""
    if not HOST_NAME.fullmatch(name):
        raise InvalidInput(f"host name {name!r} must be 1-100 lower-case letters, digits or '-'")
    return name


def ssh_host(
    *,
    address: str,
    username: str,
    port: int = 22,
    private_key: str | None = None,
    password: str | None = None,
    host_keys: list[str] | None = None,
    legacy: bool = False,
    labels: list[str] | None = None,
) -> SSHHost:
    """An SSH host block from plain values (secrets are wrapped as ``SecretStr``)."""
    return SSHHost(
        address=address,
        port=port,
        username=username,
        private_key=SecretStr(private_key) if private_key else None,
        password=SecretStr(password) if password else None,
        host_keys=host_keys or [],
        legacy=legacy,
        labels=checked_labels(labels or []),
    )


async def add(name: str, block: HostBlock, *, overwrite: bool = False) -> None:
    """Saves ``block`` as host ``name``; Conflict if the name is taken and ``overwrite`` is off."""
    checked_name(name)
    if not overwrite:
        try:
            await load_host(name)
        except NotFound:
            pass
        else:
            raise Conflict(f"host {name!r} exists already; pass overwrite to replace it")
    await block.asave(name, overwrite=True)
    await ensure_host_limit(name, block.max_parallel_sessions)  # the `host:<name>` concurrency limit


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
                legacy = isinstance(block, SSHHost) and block.legacy
                admins_only = isinstance(block, LocalHost) and block.admins_only
                hosts.append(
                    HostInfo(
                        document.name or "", block_type.kind, block.describe(), pinned, legacy, tuple(block.labels),
                        admins_only,
                    )
                )
    return sorted(hosts, key=lambda host: host.name)


async def _ssh_host(name: str) -> SSHHost:
    host = await load_host(name)
    if not isinstance(host, SSHHost):
        raise InvalidInput(f"host {name!r} is not an SSH host; it has no host key")
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


INTERPRETERS = ("sh", "ksh", "bash", "python3")
_PROBE = (
    'echo "shell=${SHELL:-}"\n'
    f"for name in {' '.join(INTERPRETERS)}; do\n"
    '  if found=`command -v "$name" 2>/dev/null`; then echo "found=$name=$found"; else echo "found=$name="; fi\n'
    "done\n"
    'echo "uname=`uname -sr 2>/dev/null`"\n'
)
_NOT_POSIX_SHELLS = {"csh", "tcsh"}


@dataclass
class HostCheck:
    """What :func:`check` found on a host. ``host_key``: match, unknown, changed or not checked."""

    name: str
    kind: str
    where: str
    legacy: bool = False
    reachable: bool = False
    authenticated: bool = False
    host_key: str = "not checked"
    host_key_fingerprint: str | None = None
    server_version: str | None = None
    kex: str | None = None
    host_key_type: str | None = None
    cipher: str | None = None
    mac: str | None = None
    legacy_algorithms: list[str] = field(default_factory=list)
    login_shell: str | None = None
    interpreters: dict[str, str | None] = field(default_factory=dict)
    """Interpreter name → its path on the host (``command -v``), None where it is missing."""
    uname: str | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def usable(self) -> bool:
        """SMS can run scripts there: reachable, logged in, key trusted, a POSIX ``sh`` found."""
        return (
            self.reachable
            and self.authenticated
            and self.host_key in ("match", "not checked")
            and (self.kind == "windows" or bool(self.interpreters.get("sh")))
            and not self.problems
        )


async def check(name: str) -> HostCheck:
    """Checks host ``name`` and reports what it finds; a host problem is reported, never raised.

    NotFound if there is no host of that name.
    """
    host = await load_host(name)
    began = time.monotonic()
    if isinstance(host, SSHHost):
        result = await _check_ssh(name, host)
    elif isinstance(host, WindowsHost):
        result = await _check_windows(name, host)
    else:
        result = HostCheck(name, host.kind, host.describe(), reachable=True, authenticated=True)
        await _probe_host(host, result)
        result.login_shell = pwd.getpwuid(os.getuid()).pw_shell
    result.seconds = time.monotonic() - began
    return result


async def _check_windows(name: str, host: WindowsHost) -> HostCheck:
    """Logs in over WinRM, asks cmd.exe for the Windows version and the temp folder."""
    result = HostCheck(name, host.kind, host.describe())
    try:
        transport = await host.open_transport()
    except AuthenticationFailed as error:
        result.reachable = True
        result.problems.append(f"login failed: {error}")
        return result
    except TransportError as error:
        result.problems.append(str(error))
        return result
    result.reachable = result.authenticated = True
    try:
        async with transport:
            result.uname = await transport.windows_version()  # type: ignore[attr-defined]
            result.notes.append(f"scripts are uploaded to {await transport.scratch_dir()}")
    except TransportError as error:
        result.problems.append(f"could not run cmd.exe on the host: {error}")
    result.interpreters = {"cmd": "cmd.exe", "powershell": "powershell.exe (not probed)"}
    return result


async def _check_ssh(name: str, host: SSHHost) -> HostCheck:
    result = HostCheck(name, host.kind, host.describe(), legacy=host.legacy)
    pinned = [" ".join(line.split()[:2]) for line in host.host_keys]
    try:
        key, agreed = await asyncio.to_thread(
            handshake,
            host.address,
            host.port,
            host.connect_timeout,
            legacy=host.legacy,
            prefer_key_type=pinned[0].split()[0] if pinned else None,
        )
    except TransportError as error:
        result.reachable = isinstance(error, IncompatibleHost)  # it answered, but no algorithm fits
        result.problems.append(str(error))
        return result
    result.reachable = True
    result.server_version = agreed.server_version
    result.kex, result.host_key_type, result.cipher, result.mac = agreed.kex, agreed.host_key_type, agreed.cipher, agreed.mac
    result.legacy_algorithms = agreed.legacy
    result.host_key_fingerprint = f"{key.get_name()} {fingerprint(key)}"
    if key_line(key) in pinned:
        result.host_key = "match"
    elif not pinned:
        result.host_key = "unknown"
        result.problems.append(
            f"the host key is not trusted yet ({result.host_key_fingerprint}); compare the fingerprint with "
            f"the server's own and pin it with `sms host trust {name}`. Login was not tried."
        )
    else:
        result.host_key = "changed"
        result.problems.append(
            f"the host key has CHANGED: the server shows {result.host_key_fingerprint}, which is not the pinned "
            f"key (possible man-in-the-middle). Login was not tried. If the server was really re-keyed, check "
            f"the new fingerprint and run `sms host trust {name}`."
        )
    if host.legacy and result.legacy_algorithms:
        result.notes.append(
            f"legacy algorithms in use ({', '.join(result.legacy_algorithms)}): weaker security; "
            f"upgrade the server's SSH when you can"
        )
    elif host.legacy:
        result.notes.append("marked legacy, but the server agreed on modern algorithms only: it no longer needs legacy")
    if result.host_key == "match":
        await _probe_host(host, result)
    return result


async def _probe_host(host: HostBlock, result: HostCheck) -> None:
    """Logs in (SSH hosts), then asks for the login shell, the interpreters and ``uname -sr``."""
    try:
        transport: Transport = await host.open_transport()
    except AuthenticationFailed as error:
        result.problems.append(f"login failed: {error}")
        return
    except HostKeyError as error:  # re-keyed between the handshake and the login
        result.host_key = "changed"
        result.problems.append(str(error))
        return
    except TransportError as error:
        result.problems.append(str(error))
        return
    result.authenticated = True
    try:
        async with transport:
            if isinstance(transport, SSHTransport):
                agreed = transport.negotiated()
                result.kex, result.cipher, result.mac = agreed.kex, agreed.cipher, agreed.mac
            timeout = max(getattr(host, "connect_timeout", 10.0), 10.0)
            process = await asyncio.wait_for(transport.launch(Plan(program=("/bin/sh", "-c", _PROBE))), timeout)
            lines = await asyncio.wait_for(_collect(process), timeout)
    except (TransportError, TimeoutError, OSError) as error:
        result.problems.append(f"could not run /bin/sh on the host: {error or 'no answer'}")
        return
    for text in lines:
        key, _, value = text.partition("=")
        if key == "shell":
            result.login_shell = value or None
        elif key == "found":
            interpreter, _, path = value.partition("=")
            result.interpreters[interpreter] = path or None
        elif key == "uname":
            result.uname = value or None
    missing = [name for name in INTERPRETERS if not result.interpreters.get(name)]
    if "sh" in missing:
        result.problems.append("no `sh` found in the account's PATH: SMS cannot start scripts there")
    if missing:
        result.notes.append(f"not found: {', '.join(missing)} (scripts for those interpreters cannot run here)")
    shell_name = (result.login_shell or "").rsplit("/", 1)[-1]
    if shell_name in _NOT_POSIX_SHELLS:
        result.problems.append(
            f"the login shell {result.login_shell} is not POSIX-compatible; give the account sh, ksh, bash or dash"
        )


async def _collect(process: RemoteProcess) -> list[str]:
    lines = [line.text async for line in process.lines() if line.stream == "stdout"]
    await process.wait()
    return lines
