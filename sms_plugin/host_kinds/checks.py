"""What ``sms host check`` reports, and the POSIX probe SSH and local hosts share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sms_plugin.errors import AuthenticationFailed, HostKeyError, TransportError
from sms_plugin.transports import unreachable
from sms_plugin.transports.base import Plan, RemoteProcess, Transport


@dataclass
class HostCheck:
    """What a host's check found. ``host_key``: match, unknown, changed or not checked."""

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
    needs_posix_sh: bool = True
    """The kind starts scripts through a POSIX ``sh`` (not Windows)."""
    login: bool = True
    """False: the check stopped before logging in (the exporter's default probe), so
    ``authenticated`` and ``interpreters`` say nothing."""

    @property
    def usable(self) -> bool:
        """SMS can run scripts there: reachable, logged in, key trusted, a POSIX ``sh`` found where needed."""
        return (
            self.reachable
            and self.authenticated
            and self.host_key in ("match", "not checked")
            and (not self.needs_posix_sh or bool(self.interpreters.get("sh")))
            and not self.problems
        )

    @property
    def up(self) -> bool:
        """What the exporter reports: :attr:`usable`; for a check without login, reachable with a
        trusted (or no) host key and no problem found."""
        if self.login:
            return self.usable
        return self.reachable and self.host_key in ("match", "not checked") and not self.problems


INTERPRETERS = ("sh", "ksh", "bash", "python3")
_PROBE = (
    'echo "shell=${SHELL:-}"\n'
    f"for name in {' '.join(INTERPRETERS)}; do\n"
    '  if found=`command -v "$name" 2>/dev/null`; then echo "found=$name=$found"; else echo "found=$name="; fi\n'
    "done\n"
    'echo "uname=`uname -sr 2>/dev/null`"\n'
)
_NOT_POSIX_SHELLS = {"csh", "tcsh"}


async def probe_posix(
    open_transport: Callable[[], Awaitable[Transport]],
    result: HostCheck,
    timeout: float,
    on_login: Callable[[Transport], None] = lambda transport: None,
) -> None:
    """Logs in, then asks for the login shell, the interpreters and ``uname -sr``."""
    try:
        transport = await open_transport()
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
            on_login(transport)
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


async def port_refusal(address: str, port: int, timeout: float) -> str | None:
    """None if ``address:port`` accepts a TCP connection within ``timeout`` seconds, else why not.
    Nothing is sent: the host sees a connection opened and closed, no login."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except TimeoutError:
        return unreachable.no_answer(f"{address}:{port}", timeout)
    except OSError as error:
        return unreachable.network_error(f"{address}:{port}", port, error)
    writer.close()
    return None
