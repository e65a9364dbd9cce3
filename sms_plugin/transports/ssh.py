"""The SSH transport (paramiko): scripts sent on the launch channel, exec channels, process-group kill.

Host keys are pinned: the connection is refused unless the server shows one of the keys given
(``host_keys``, OpenSSH ``type base64`` lines). :func:`fetch_host_key` reads a server's key so that
a person can check its fingerprint and pin it (``sms host trust``).

Algorithms: a host is *modern* by default and never negotiates SHA-1 key exchange, ``ssh-rsa``
signatures, CBC/3DES ciphers or SHA-1/MD5 MACs (:data:`MODERN_DISABLED_ALGORITHMS`). A host marked
``legacy`` may fall back to them, for old servers that offer nothing else; modern algorithms are
still preferred when the server has them.

Example::

    async with await SSHTransport.connect(SSHTarget("10.0.0.5", username="ops",
            private_key=pem, host_keys=["ssh-ed25519 AAAAC3..."])) as ssh:
        process = await ssh.launch(INTERPRETERS["ksh"].plan("/opt/jobs/nightly.ksh", []))

Errors: every paramiko, socket and EOF error is mapped once, by :func:`ssh_errors`.

Many hosts at once: at most ``SMS_SSH_HANDSHAKES`` connections of one process are being opened at
a time (:data:`HANDSHAKES`); a host's connect timeout starts when its turn comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import base64
import hashlib
import io
import posixpath
import select
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass, field
from typing import Any, TypeVar

import paramiko

from sms_plugin.errors import (
    AuthenticationFailed,
    ErrorMap,
    HostKeyError,
    HostUnreachable,
    IncompatibleHost,
    TransportError,
)
from sms_plugin.settings import current
from sms_plugin.transports import posix, unreachable
from sms_plugin.transports.base import (
    READ_BYTES,
    LineSplitter,
    Plan,
    RemoteProcess,
    SecretsMasked,
    Stream,
    Transport,
    in_thread,
)
from sms_plugin.transports.recovery import GroupProcess, RunRecovery, Signal

T = TypeVar("T")
_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)
_KEEPALIVE_SECONDS = 15
DEAD_LINK_SECONDS = 30
"""A connection whose sent data (a command, a keepalive) the server has not acknowledged for this
long is dropped by the kernel (``TCP_USER_TIMEOUT``, Linux): a host cut off the network is noticed
within the keepalive interval plus this, instead of after TCP's ~15 minutes of retries."""
_START_TIMEOUT_SECONDS = 30.0
_EXIT_POLL_SECONDS = 0.25
"""How often a script's reading thread looks for its exit status while output streams are open."""
_STOP_POLL_SECONDS = 0.1
"""How often a stopped run is checked for between TERM and KILL."""
CONTROL_TIMEOUT_SECONDS = 15.0
"""How long a short command (a kill, a probe, a state file read) or a new channel may wait for the
server: a stop on a connection that stopped answering fails after this instead of hanging. Then
the connection must answer a keepalive within the same time, or it is closed (:meth:`_Shared.answers`)."""
_REFUSED_PAUSE_SECONDS = 0.05
"""The first wait before a channel the server refused is asked for again (doubled each time, at most 1 s)."""

# What modern hosts never negotiate, taken from paramiko 4.0's Transport._preferred_* lists
# (tests/unit/test_ssh_algorithms.py checks that nothing weak is left in those lists).
#: SHA-1 key exchanges.
LEGACY_KEX = ("diffie-hellman-group-exchange-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group1-sha1")
#: Host key signature algorithms: ``ssh-rsa`` is RSA with SHA-1 (RSA keys still work as rsa-sha2-256/512).
LEGACY_HOST_KEYS = ("ssh-rsa",)
#: User key signature algorithms (same as host keys).
LEGACY_PUBKEYS = ("ssh-rsa",)
#: CBC mode ciphers, 3DES included.
LEGACY_CIPHERS = ("aes128-cbc", "aes192-cbc", "aes256-cbc", "3des-cbc")
#: SHA-1 and MD5 MACs.
LEGACY_MACS = ("hmac-sha1", "hmac-sha1-96", "hmac-md5", "hmac-md5-96")
#: paramiko ``disabled_algorithms`` of every host not marked legacy.
MODERN_DISABLED_ALGORITHMS: dict[str, list[str]] = {
    "kex": list(LEGACY_KEX),
    "keys": list(LEGACY_HOST_KEYS),
    "pubkeys": list(LEGACY_PUBKEYS),
    "ciphers": list(LEGACY_CIPHERS),
    "macs": list(LEGACY_MACS),
}
LEGACY_ALGORITHMS = frozenset(LEGACY_KEX + LEGACY_HOST_KEYS + LEGACY_PUBKEYS + LEGACY_CIPHERS + LEGACY_MACS)


@dataclass(frozen=True, repr=False)
class SSHTarget(SecretsMasked):
    """Everything needed to reach one SSH server."""

    SECRETS = frozenset({"private_key", "private_key_passphrase", "password"})

    address: str
    port: int = 22
    username: str = "root"
    private_key: str | None = None
    private_key_passphrase: str | None = None
    password: str | None = None
    host_keys: list[str] = field(default_factory=list)
    legacy: bool = False
    """Allow the weak algorithms of old servers (SHA-1 kex, ssh-rsa, CBC, hmac-sha1)."""
    connect_timeout: float = 10.0
    shell: str = "/bin/sh"
    """The POSIX shell that starts and stops scripts (e.g. /usr/xpg4/bin/sh on old Solaris)."""

    @property
    def label(self) -> str:
        return f"{self.username}@{self.address}:{self.port}"


def fingerprint(key: paramiko.PKey) -> str:
    """The OpenSSH SHA256 fingerprint, e.g. ``SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s``."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def key_line(key: paramiko.PKey) -> str:
    """The key as an OpenSSH ``type base64`` line, the form ``host_keys`` takes."""
    return f"{key.get_name()} {key.get_base64()}"


def _parse_host_key(line: str) -> paramiko.PKey:
    try:
        key_type, data = line.split()[:2]
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(data))
    except Exception as error:
        raise HostKeyError(f"pinned host key {line[:40]!r}... is not an OpenSSH public key line") from error


def _load_private_key(pem: str, passphrase: str | None) -> paramiko.PKey:
    for key_class in _KEY_CLASSES:
        try:
            return key_class.from_private_key(io.StringIO(pem), password=passphrase)
        except paramiko.PasswordRequiredException:
            raise AuthenticationFailed("the private key is encrypted: give its passphrase") from None
        except (paramiko.SSHException, ValueError):
            continue
    raise AuthenticationFailed("the private key is not an Ed25519, ECDSA or RSA key in PEM/OpenSSH form")


@dataclass(frozen=True)
class Negotiated:
    """What client and server agreed on in the SSH handshake."""

    server_version: str
    kex: str
    host_key_type: str
    cipher: str
    mac: str

    @property
    def legacy(self) -> list[str]:
        """The agreed algorithms that only legacy hosts may use."""
        return [a for a in (self.kex, self.host_key_type, self.cipher, self.mac) if a in LEGACY_ALGORITHMS]

    def __str__(self) -> str:
        return f"kex {self.kex}, host key {self.host_key_type}, cipher {self.cipher}, mac {self.mac}"


class _ProfiledTransport(paramiko.Transport):
    """paramiko's Transport held to SMS's algorithm profile (modern or legacy)."""

    _KEX_NAMES = {kex_class: name for name, kex_class in paramiko.Transport._kex_info.items()}

    def __init__(self, sock: Any, *, legacy: bool, **kwargs: Any) -> None:
        kwargs["disabled_algorithms"] = {} if legacy else MODERN_DISABLED_ALGORITHMS
        super().__init__(sock, **kwargs)
        self.legacy = legacy
        self.kex_name = ""

    @property
    def preferred_keys(self) -> tuple[str, ...]:
        keys: tuple[str, ...] = super().preferred_keys
        # SSHClient moves the type of a pinned key to the front; for an RSA key that is "ssh-rsa",
        # which modern hosts disable: put its SHA-2 forms first instead, so the pinned key is shown.
        if not self.legacy and self._preferred_keys[:1] == ("ssh-rsa",):
            rsa = tuple(key for key in keys if key.startswith("rsa-sha2-"))
            keys = rsa + tuple(key for key in keys if key not in rsa)
        return keys

    @property
    def preferred_pubkeys(self) -> tuple[str, ...]:
        pubkeys: tuple[str, ...] = super().preferred_pubkeys
        # Old servers accept RSA user keys only as ssh-rsa, and many do not say so (no or wrong
        # server-sig-algs): legacy hosts sign with ssh-rsa first.
        if self.legacy and "ssh-rsa" in pubkeys:
            pubkeys = ("ssh-rsa", *(p for p in pubkeys if p != "ssh-rsa"))
        return pubkeys

    def _parse_kex_init(self, m: paramiko.Message) -> None:
        super()._parse_kex_init(m)  # type: ignore[misc]
        self.kex_name = self._KEX_NAMES.get(type(self.kex_engine), "")

    def negotiated(self) -> Negotiated:
        return Negotiated(
            server_version=self.remote_version,
            kex=self.kex_name,
            host_key_type=self.host_key_type or "",
            cipher=self.local_cipher,
            mac=self.local_mac or "",
        )


def _transport_factory(legacy: bool) -> Any:
    def make(sock: Any, **kwargs: Any) -> _ProfiledTransport:
        return _ProfiledTransport(sock, legacy=legacy, **kwargs)

    return make


def _handshake(
    address: str, port: int, timeout: float, legacy: bool, prefer_key_type: str | None = None, label: str | None = None
) -> _ProfiledTransport:
    """A transport that completed key exchange (no login); the caller closes it. ``label`` names
    the server in errors (default ``address:port``)."""
    errors = ssh_errors(label or f"{address}:{port}", (address, port, timeout, legacy), connecting=True)
    with errors.boundary("connecting"):
        sock = socket.create_connection((address, port), timeout=timeout)
    transport = _ProfiledTransport(sock, legacy=legacy)
    if prefer_key_type:  # as SSHClient does for a pinned key, so the server shows that key
        options = transport.get_security_options()
        options.key_types = [prefer_key_type, *(k for k in options.key_types if k != prefer_key_type)]
    try:
        with errors.boundary("the SSH handshake"):
            transport.banner_timeout = timeout
            transport.start_client(timeout=timeout)
            if not transport.initial_kex_done:  # start_client gives up at the timeout without a word;
                raise paramiko.SSHException("No existing session")  # what SSHClient raises then
    except TransportError:
        transport.close()
        raise
    return transport


def _incompatible_message(label: str, error: Exception, address: str, port: int, timeout: float, legacy: bool) -> str:
    """Why the handshake found no common algorithm, and what to do about it."""
    message = f"{label}: {error}"
    if legacy:
        return f"{message}; the server shares no algorithm with SMS, even with the legacy profile"
    try:
        probe = _handshake(address, port, timeout, legacy=True)
    except TransportError:
        return f"{message}; the server shares no algorithm with SMS, not even legacy ones"
    with probe:
        agreed = probe.negotiated()
    return (
        f"{message}: the server only offers legacy algorithms ({agreed}), which SMS refuses for "
        f"modern hosts. Upgrade the server, or mark the host legacy (`legacy: true`, "
        f"`sms host add --legacy`) and accept the weaker security"
    )


Server = tuple[str, int, float, bool]
"""(address, port, connect timeout, legacy): what an algorithm mismatch needs to probe the server."""


def ssh_errors(where: str, server: Server, *, connecting: bool = False) -> ErrorMap:
    """The SSH transport's one error table: paramiko, socket and EOF errors as SMS errors.

    ``where`` names the server in messages (``user@address:port``). While ``connecting``, a
    network error or a timeout means the host is unreachable (HostUnreachable); afterwards it is
    a failure of the operation ``what`` (TransportError).
    """
    address, port, timeout, legacy = server
    lost = HostUnreachable if connecting else TransportError

    def changed_key(error: paramiko.BadHostKeyException, what: str) -> HostKeyError:
        return HostKeyError(
            f"host key of {address}:{port} has CHANGED: it shows {error.key.get_name()} {fingerprint(error.key)}, "
            f"pinned is {fingerprint(error.expected_key)}; refusing to connect (possible man-in-the-middle). "
            f"If the server was really re-keyed, check the new fingerprint and run `sms host trust <host>`"
        )

    def timed_out(error: TimeoutError, what: str) -> TransportError:
        if connecting:
            return HostUnreachable(unreachable.no_answer(where, timeout, str(error) or "timed out"))
        return TransportError(f"{what} on {where} failed: the server did not answer in time")

    def failed(error: BaseException, what: str) -> TransportError:
        reason = str(error) or "connection closed"
        if connecting and (cause := _network_cause(error)) is not None:
            return HostUnreachable(unreachable.network_error(where, port, cause))
        if connecting and ("protocol banner" in reason or reason == "No existing session"):
            return HostUnreachable(
                f"cannot connect to {where}: it took the connection but did not answer as an SSH server within "
                f"{timeout:g} s (another service on that port, or an sshd at its MaxStartups limit): {reason}"
            )
        return lost(f"cannot connect to {where}: {reason}" if connecting else f"{what} on {where} failed: {reason}")

    return ErrorMap(
        (paramiko.BadHostKeyException, changed_key),
        (paramiko.AuthenticationException, lambda error, what: AuthenticationFailed(f"{where} refused the credentials: {error}")),
        (paramiko.IncompatiblePeer, lambda error, what: IncompatibleHost(_incompatible_message(where, error, *server))),
        (TimeoutError, timed_out),
        ((OSError, EOFError, paramiko.SSHException), failed),
    )


def _network_cause(error: BaseException) -> OSError | None:
    """The operating system's error behind a failed connection, if there is one: paramiko wraps the
    error of each address it tried (errno None, "Unable to connect..."); a refusal when all refused."""
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError):
        causes = [e for e in error.errors.values() if isinstance(e, OSError)]
        refusals = [e for e in causes if isinstance(e, ConnectionRefusedError)]
        return refusals[0] if causes and len(refusals) == len(causes) else next(iter(causes), None)
    return error if isinstance(error, OSError) and error.errno is not None else None


class HandshakeSlots:
    """The bound on SSH connections being opened at once (TCP connect, key exchange, login), shared
    by every event loop and thread of the process.

    Hundreds of handshakes at once would share the CPU until all of them time out, and overrun
    servers' MaxStartups; with slots they finish one after another at full speed. A host's connect
    timeout starts when it has its slot: waiting for one never fails a healthy host. A host that
    does not answer holds its slot for its connect timeout at most.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._semaphore = threading.BoundedSemaphore(size)
        self._count = threading.Lock()
        self.busy = 0
        self.peak = 0
        """The most slots ever held at once (for tests and benchmarks)."""

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Holds one slot for the block (blocking: call it in a thread of its own)."""
        with self._semaphore:
            with self._count:
                self.busy += 1
                self.peak = max(self.peak, self.busy)
            try:
                yield
            finally:
                with self._count:
                    self.busy -= 1


HANDSHAKES = HandshakeSlots(current().ssh.handshakes)
"""The process's handshake slots (``SMS_SSH_HANDSHAKES``, read when the transport is first imported)."""


def handshake(
    address: str,
    port: int = 22,
    timeout: float = 10.0,
    *,
    legacy: bool = False,
    prefer_key_type: str | None = None,
    label: str | None = None,
) -> tuple[paramiko.PKey, Negotiated]:
    """The host key a server shows and the algorithms agreed, read without logging in (in a slot of
    :data:`HANDSHAKES`).

    ``prefer_key_type`` (e.g. the type of a pinned key) asks the server for that kind of key;
    ``label`` names the server in errors, as :attr:`SSHTarget.label` does for a run.
    """
    with HANDSHAKES.slot(), _handshake(address, port, timeout, legacy, prefer_key_type, label) as transport:
        return transport.get_remote_server_key(), transport.negotiated()


class _RefuseUnknownKeys(paramiko.MissingHostKeyPolicy):
    def __init__(self, target: SSHTarget) -> None:
        self._target = target

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyError(
            f"host key of {self._target.address}:{self._target.port} is not trusted "
            f"({key.get_name()} {fingerprint(key)}); check the fingerprint and pin it with "
            f"`sms host trust <host>`"
        )


def _server(target: SSHTarget) -> Server:
    return (target.address, target.port, target.connect_timeout, target.legacy)


def _connect(target: SSHTarget) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    known_name = target.address if target.port == 22 else f"[{target.address}]:{target.port}"
    for line in target.host_keys:
        key = _parse_host_key(line)
        client.get_host_keys().add(known_name, key.get_name(), key)
    client.set_missing_host_key_policy(_RefuseUnknownKeys(target))
    pkey = _load_private_key(target.private_key, target.private_key_passphrase) if target.private_key else None
    try:
        with ssh_errors(target.label, _server(target), connecting=True).boundary("connecting"):
            client.connect(
                target.address,
                port=target.port,
                username=target.username,
                pkey=pkey,
                password=target.password,
                timeout=target.connect_timeout,
                banner_timeout=target.connect_timeout,
                auth_timeout=target.connect_timeout,
                allow_agent=False,
                look_for_keys=False,
                transport_factory=_transport_factory(target.legacy),
            )
    except TransportError:
        client.close()
        raise
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(_KEEPALIVE_SECONDS)
    _limit_unacknowledged(transport.sock)
    return client


def _limit_unacknowledged(sock: object) -> None:
    """Sets :data:`DEAD_LINK_SECONDS` as the socket's ``TCP_USER_TIMEOUT`` where the system has it."""
    if isinstance(sock, socket.socket) and hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(DEAD_LINK_SECONDS * 1000))


def fetch_host_key(address: str, port: int = 22, timeout: float = 10.0, *, legacy: bool = False) -> paramiko.PKey:
    """The host key a server shows, read without logging in (to show its fingerprint before pinning).

    The host's algorithm profile applies: a legacy-only server shows its ``ssh-rsa`` key only
    with ``legacy``.
    """
    return handshake(address, port, timeout, legacy=legacy)[0]


class SSHProcess(GroupProcess):
    """A command on an exec channel, in a process group of its own on the server.

    One thread per script reads both streams as data arrives (it waits on the channel's
    ``fileno``) and takes the exit status, looking for it at least every :data:`_EXIT_POLL_SECONDS`
    while output streams are still open (a child may hold them after the script exited).
    """

    def __init__(self, transport: SSHTransport, channel: paramiko.Channel, run_id: str | None, done: posix.DoneMark) -> None:
        super().__init__(transport, run_id)
        self._channel = channel
        self._done = done
        """The launcher's last bytes on stdout, taken off; seen when it found nothing of the run left."""
        loop = asyncio.get_running_loop()
        self._started: asyncio.Future[int | None] = loop.create_future()
        self._exit: asyncio.Future[int] = loop.create_future()
        self._head: bytes | None = b""
        """stdout until the launcher's first line (the process group id) was taken off; then None."""
        threading.Thread(target=self._pump, args=(loop,), name="sms-ssh-script", daemon=True).start()
        self._supervise()

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        channel = self._channel
        reads: dict[Stream, Callable[[int], bytes]] = {"stdout": self._read_stdout, "stderr": channel.recv_stderr}
        splitters = {stream: LineSplitter() for stream in reads}
        status: int | None = None
        try:
            channel.setblocking(False)
            ready = channel.fileno()
            while reads:
                select.select([ready], [], [], _EXIT_POLL_SECONDS)
                for stream, read in list(reads.items()):
                    with contextlib.suppress(TimeoutError):  # nothing on this stream yet
                        if chunk := read(READ_BYTES):
                            self._from_thread(loop, stream, splitters[stream].feed(chunk))
                        else:
                            del reads[stream]
                            self._from_thread(loop, stream, splitters[stream].flush())
                            self._from_thread(loop, stream, None)
                if status is None and channel.exit_status_ready():
                    status = self._settle(loop, self._exit, channel.recv_exit_status())
            if status is None:
                self._settle(loop, self._exit, channel.recv_exit_status())
        except (OSError, EOFError, ValueError):
            pass  # the connection broke (or was closed): the streams end, wait() reports it
        finally:
            for stream in reads:
                self._from_thread(loop, stream, None)
            self._settle(loop, self._started, None)
            self._settle(loop, self._exit, -1)

    def _read_stdout(self, size: int) -> bytes:
        """Reads stdout; the launcher's first line (the process group id) and its done mark
        (:class:`~sms_plugin.transports.posix.DoneMark`) are taken off."""
        chunk = self._channel.recv(size)
        data = chunk
        if self._head is not None:
            head = self._head + chunk
            if chunk and b"\n" not in head:
                self._head = head
                raise TimeoutError  # the first line is not whole yet
            self._head = None
            first, _, rest = head.partition(b"\n")
            pgid = posix.parse_pgid(first.decode(errors="replace"))
            self._settle(self._started.get_loop(), self._started, pgid)
            data = rest if pgid is not None else head
        data = self._done.take(data, ended=not chunk)
        if chunk and not data:
            raise TimeoutError  # nothing for the script's output yet (b"" would end the stream)
        return data

    def _settle(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[T], value: T) -> T:
        """Gives ``future`` its ``value`` from the reading thread, unless it has one already."""
        def settle() -> None:
            if future is self._started and value is not None:
                self.pid = value  # type: ignore[assignment]
            if not future.done():
                future.set_result(value)

        with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody waits any more
            loop.call_soon_threadsafe(settle)
        return value

    async def started(self, timeout: float) -> None:
        """Waits for the launcher to report the process group id."""
        try:
            pgid = await asyncio.wait_for(asyncio.shield(self._started), timeout)
        except TimeoutError:
            raise TransportError(f"the script did not start within {timeout:g} s") from None
        if pgid is None:
            code = await self.wait()
            errors = " / ".join([line.text async for line in self.lines() if line.stream == "stderr"][-3:])
            raise TransportError(f"the script could not be started (exit code {code}): {errors or 'no message'}")

    async def _main_exit(self) -> int:
        status = await asyncio.shield(self._exit)
        if status == -1:  # the channel closed without an exit status: the connection died
            transport: SSHTransport = self.transport  # type: ignore[assignment]
            raise TransportError(
                f"the SSH connection to {transport.target.label} was lost while the script ran (process group {self.pid})"
            )
        return status

    @property
    def left_nothing(self) -> bool:
        """Whether the launcher found nothing of the run left when the script ended (and removed
        the state file and the upload folder): then no end-of-run check is needed."""
        return self._done.seen

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Nothing to do once the launcher found nothing of the run left; else :meth:`GroupProcess.stop`."""
        if self.left_nothing:
            self.transport.tidied(self.run_id)  # type: ignore[attr-defined]
            return
        await super().stop(grace_seconds)

    async def _abandon_output(self) -> None:
        await super()._abandon_output()
        self._channel.close()


RUNS_PER_CONNECTION = 4
"""Runs sharing one connection: each may hold two channels at once (the script, plus an upload or
a kill), so 4 runs use at most 8 of OpenSSH's default MaxSessions of 10, leaving room for channels
the server has not finished closing."""


def _pool_key(target: SSHTarget) -> tuple[object, ...]:
    return tuple(tuple(value) if isinstance(value, list) else value for value in astuple(target))


class _Opening:
    """A connection opened in a thread for a lease that may be cancelled meanwhile: nothing is opened
    after the cancel, and what was opened is closed, never left behind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.abandoned = False
        self._client: paramiko.SSHClient | None = None

    def deliver(self, client: paramiko.SSHClient) -> None:
        with self._lock:
            if not self.abandoned:
                self._client = client
                return
        client.close()

    def abandon(self) -> None:
        with self._lock:
            self.abandoned = True
            client, self._client = self._client, None
        if client is not None:
            client.close()


@dataclass(eq=False)
class _Shared:
    client: paramiko.SSHClient
    leases: int = 0
    scratch: str | None = None
    """The connection's scratch folder, asked for once (every run on it uses the same)."""
    _probing: threading.Lock = field(default_factory=threading.Lock, repr=False)
    """paramiko waits for the answer of one global request at a time on a connection."""

    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def answers(self, timeout: float) -> bool:
        """Whether the server answers a keepalive request within ``timeout``. sshd answers it from
        its connection's main loop, however slow the commands on the connection's channels are:
        a connection that does not is silent (e.g. its host was cut off the network)."""
        with self._probing:
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                return False
            answered = threading.Event()

            def ask() -> None:
                with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                    transport.global_request("keepalive@openssh.com", wait=True)
                    if transport.is_active():  # paramiko also returns when the connection closed
                        answered.set()

            threading.Thread(target=ask, name="sms-ssh-probe", daemon=True).start()
            return answered.wait(timeout)


class ConnectionPool:
    """SSH connections shared by the runs of one process, per target.

    A run leases a connection with room left (at most ``runs_per_connection`` runs each); a dead
    connection is replaced by a new one for the next lease; one idle connection per target is
    kept for the next run, further idle ones are closed. Keepalives run every 30 s.

    Targets that are equal (same address, port, account, credentials, pinned keys, options) share
    connections, so many host blocks naming one server cost one connection per four runs. New
    connections are opened in a thread of their own, in a slot of ``handshakes``.
    """

    def __init__(self, runs_per_connection: int = RUNS_PER_CONNECTION, handshakes: HandshakeSlots | None = None) -> None:
        self.runs_per_connection = runs_per_connection
        self.handshakes = handshakes or HANDSHAKES
        self._connections: dict[tuple[object, ...], list[_Shared]] = {}
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[object, ...], asyncio.Lock]]
        self._locks = weakref.WeakKeyDictionary()  # an asyncio.Lock belongs to one event loop
        self.opened = 0
        """How many connections this pool has opened (for tests and benchmarks)."""

    async def lease(self, target: SSHTarget) -> _Shared:
        key = _pool_key(target)
        locks = self._locks.setdefault(asyncio.get_running_loop(), {})
        async with locks.setdefault(key, asyncio.Lock()):
            shared = self._connections.setdefault(key, [])
            for dead in [c for c in shared if not c.alive()]:
                shared.remove(dead)
                dead.client.close()
            free = next((c for c in shared if c.leases < self.runs_per_connection), None)
            if free is None:
                opening = _Opening()
                try:
                    free = _Shared(await in_thread(lambda: self._open(target, opening)))
                except asyncio.CancelledError:
                    opening.abandon()  # a fleet run stopped while its hosts waited for a slot
                    raise
                shared.append(free)
                self.opened += 1
            free.leases += 1
            return free

    def _open(self, target: SSHTarget, opening: _Opening) -> paramiko.SSHClient:
        with self.handshakes.slot():
            if opening.abandoned:
                raise TransportError(f"the connection to {target.label} was no longer wanted")
            client = _connect(target)
        opening.deliver(client)
        return client

    def close_idle(self) -> None:
        """Closes every connection no run holds (when a process is done with its hosts)."""
        for shared in self._connections.values():
            for idle in [c for c in shared if c.leases == 0]:
                shared.remove(idle)
                idle.client.close()

    def release(self, target: SSHTarget, lease: _Shared) -> None:
        lease.leases -= 1
        shared = self._connections.get(_pool_key(target), [])
        idle = [c for c in shared if c.leases == 0]
        for surplus in idle[1:] if lease.alive() else idle:
            shared.remove(surplus)
            surplus.client.close()


POOL = ConnectionPool()


class SSHTransport(Transport, RunRecovery):
    """A lease on a pooled SSH connection; open it with :meth:`connect`, ``close`` gives it back."""

    def __init__(self, target: SSHTarget, lease: _Shared, pool: ConnectionPool) -> None:
        self.target = target
        self._lease = lease
        self._pool = pool
        self._client = lease.client
        self._released = False
        self.errors = ssh_errors(target.label, _server(target))
        self._uploads: dict[str, str] = {}
        """The folder of each run's sent script, by run id: the end-of-run check removes it."""
        self._removed: set[str] = set()
        """Upload folders the end-of-run check removed (:meth:`remove` has nothing left to do)."""

    @classmethod
    async def connect(cls, target: SSHTarget, pool: ConnectionPool = POOL) -> SSHTransport:
        """Connects, or reuses a pooled connection; unknown or changed host keys are refused."""
        return cls(target, await pool.lease(target), pool)

    def negotiated(self) -> Negotiated:
        """The algorithms agreed with the server for this connection."""
        transport = self._client.get_transport()
        if not isinstance(transport, _ProfiledTransport):
            raise TransportError(f"the SSH connection to {self.target.label} is closed")
        return transport.negotiated()

    async def _io(self, what: str, call: Callable[[], T]) -> T:
        """Runs blocking paramiko ``call`` in a thread; its errors leave as SMS errors."""
        with self.errors.boundary(what):
            return await asyncio.to_thread(call)

    async def scratch_dir(self) -> str:
        """``<login folder>/.sms/run``, asked for once per connection; made (mode 0700) when a
        script is sent or uploaded to it."""
        if self._lease.scratch is None:
            status, output = await self._io("finding the login folder", lambda: self._exec_status("pwd"))
            home = output.removesuffix("\n")
            if status != 0 or not home.startswith("/"):
                raise TransportError(f"cannot find the login folder on {self.target.label}: `pwd` said {home!r}")
            self._lease.scratch = posixpath.join(home, ".sms", "run")
        return self._lease.scratch

    async def upload(self, content: bytes, path: str, mode: int = 0o700) -> None:
        """Writes ``content`` to ``path`` through ``cat`` on one exec channel (no SFTP)."""
        line = posix.receive_line(path, mode)
        status, _ = await self._io(f"upload of {path}", lambda: self._exec_status(line, stdin=content))
        if status != 0:
            raise TransportError(f"upload of {path} on {self.target.label} failed (exit code {status})")

    async def remove(self, path: str) -> None:
        """Removes ``path`` with ``rm -rf`` on one exec channel (not an SFTP session)."""
        if path in self._removed:  # the end-of-run check removed it already
            return
        line = posix.remove_folder_line(path)
        status, _ = await self._io(f"removing {path}", lambda: self._exec_status(line))
        if status != 0:
            raise TransportError(f"removing {path} on {self.target.label} failed (exit code {status})")

    async def launch(self, plan: Plan) -> RemoteProcess:
        return await self._start(plan, None, None)

    async def launch_script(self, content: bytes, plan: Plan) -> RemoteProcess:
        """Sends the script on the launch channel's stdin, which the shell writes to ``plan.script``
        before it starts the plan: one channel instead of an upload and a launch. The script's
        stdin is at its end, as when it is uploaded. When the script is in the run's own upload
        folder (:meth:`uploads_of` the run id, as :func:`~sms_plugin.execution.execute` puts it), the
        end-of-run check removes that folder."""
        assert plan.script is not None, "a plan that runs an uploaded script names it"
        folder = posixpath.dirname(plan.script)
        owned = bool(plan.run_id) and posixpath.basename(folder) == plan.run_id
        if owned:
            self._uploads[plan.run_id] = folder
        return await self._start(plan, plan.script, folder if owned else None, content)

    async def _start(self, plan: Plan, sent: str | None, folder: str | None, script: bytes = b"") -> RemoteProcess:
        """Starts ``plan`` on a channel of its own, its variables (secret parameters among them) and
        the ``script`` written to ``sent`` on the channel's stdin: a command line is shown by ``ps``
        to every user of the host, stdin is not. The launcher removes ``folder`` at the end when
        nothing of the run is left (then the process's own end-of-run check has nothing to do)."""
        nonce = uuid.uuid4().hex
        line = posix.render(plan, self.target.shell, sent=sent, folder=folder, nonce=nonce)
        stdin = posix.stdin_of(plan, script)

        def open_channel() -> paramiko.Channel:
            channel = self._open_session()
            channel.exec_command(line)
            with contextlib.suppress(OSError):  # the line ended before it read it all: started() says why
                channel.sendall(stdin)
            channel.shutdown_write()
            return channel

        channel = await self._io("starting the script", open_channel)
        process = SSHProcess(self, channel, plan.run_id, posix.DoneMark(nonce))
        await process.started(_START_TIMEOUT_SECONDS)
        return process

    def tidied(self, run_id: str | None) -> None:
        """Notes that the launcher of ``run_id`` removed its upload folder (:meth:`remove` has
        nothing left to do)."""
        if run_id and (folder := self._uploads.pop(run_id, None)):
            self._removed.add(folder)

    def _open_session(self) -> paramiko.Channel:
        """A new channel on the leased connection. A channel the server refuses (its MaxSessions,
        counting channels it has not finished closing) is asked for again, after a pause, until
        CONTROL_TIMEOUT_SECONDS have passed. TransportError if the connection died, the refusals
        lasted, or the server did not open the channel in time but still answers; TimeoutError if
        it does not answer either (the connection is closed: :meth:`_drop_if_silent`)."""
        timeout = CONTROL_TIMEOUT_SECONDS
        deadline = time.monotonic() + timeout
        pause = _REFUSED_PAUSE_SECONDS
        while True:
            transport = self._client.get_transport()
            if transport is None or not transport.is_active():
                raise TransportError(f"the SSH connection to {self.target.label} is closed")
            try:
                return transport.open_session(timeout=max(deadline - time.monotonic(), 0.0))
            except paramiko.SSHException as error:
                # A refusal is a ChannelException, or a bare SSHException when several arrive at
                # once (paramiko keeps one refusal per connection for the threads that wait).
                if not transport.is_active():
                    raise
                if time.monotonic() >= deadline and not isinstance(error, paramiko.ChannelException):
                    self._drop_if_silent(f"{self.target.label} did not open a channel within {timeout:g} s")
                    raise TimeoutError("no answer to a channel request") from None
                if time.monotonic() + pause >= deadline:
                    raise TransportError(
                        f"{self.target.label} refused new channels for {timeout:g} s (too many on one connection: "
                        f"its MaxSessions): {error}"
                    ) from None
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _exec_status(self, line: str, stdin: bytes = b"") -> tuple[int, str]:
        """Runs a short shell line on its own channel, ``stdin`` as its input; returns (exit
        status, stdout). Each step waits at most CONTROL_TIMEOUT_SECONDS for the server; a
        server that does not answer in time has its connection dropped (:meth:`_drop`)."""
        channel = self._open_session()
        try:
            channel.settimeout(CONTROL_TIMEOUT_SECONDS)
            channel.exec_command(f"exec {posix.quote(self.target.shell)} -c {posix.quote(line)}")
            channel.sendall(stdin)
            channel.shutdown_write()
            output = channel.makefile("rb").read().decode(errors="replace")
            return channel.recv_exit_status(), output
        except TimeoutError:
            self._drop_if_silent(f"a command on {self.target.label} did not finish within {CONTROL_TIMEOUT_SECONDS:g} s")
            raise
        finally:
            channel.close()

    def _drop_if_silent(self, what: str) -> None:
        """After a wait that timed out: if the connection does not answer a keepalive either
        (e.g. its host was cut off the network), closes it: the scripts running through it see it
        lost (their runs reap them from a new connection) and the pool opens a new one for the
        next run, instead of waiting on this one for TCP's own timeout. If it answers, it is
        kept for the runs on it (a busy host is slow, not gone): TransportError saying ``what``."""
        if self._lease.answers(CONTROL_TIMEOUT_SECONDS):
            raise TransportError(f"{what} (the connection still answers: kept for its other runs)")
        self._client.close()

    async def signal_run(self, pgid: int | None, run_id: str | None, signal: Signal) -> bool:
        line = posix.signal_run_line(pgid, run_id, signal)
        status, _ = await self._io(f"signalling run {run_id or pgid}", lambda: self._exec_status(line))
        return status == 0

    async def end_run(self, pgid: int | None, run_id: str | None, grace_seconds: float = 5.0) -> bool:
        """:meth:`RunRecovery.end_run` in few round trips: the check that finds nothing of the run
        left also tidies up (its state file, and the folder :meth:`launch_script` sent its script
        to), one that finds something sends TERM at once; a poll that finds it gone tidies up too.
        A run whose script has ended costs one round trip (none when its launcher found nothing
        left: :meth:`SSHProcess.stop`), a stopped one usually two."""
        if not run_id:
            return await super().end_run(pgid, run_id, grace_seconds)
        term = posix.signal_run_line(pgid, run_id, "TERM")
        if await self._gone_or(pgid, run_id, then=f"( {term} ); exit 0"):
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        while loop.time() < deadline:
            await asyncio.sleep(_STOP_POLL_SECONDS)
            if await self._gone_or(pgid, run_id):
                return True
        await self.signal_run(pgid, run_id, "KILL")
        await self.forget_run(run_id)
        return True

    async def _gone_or(self, pgid: int | None, run_id: str, then: str = "") -> bool:
        """True if nothing of the run is left: then its state file and sent script are removed;
        else runs the shell line ``then`` (if any) and returns False."""
        probe = posix.signal_run_line(pgid, run_id, "0")
        folder = self._uploads.get(run_id)
        tidy = posix.remove_state_line(run_id, *([folder] if folder else []))
        line = f"( {probe} ) || {{ {tidy}; exit 1; }}" + (f"; {then}" if then else "")
        status, _ = await self._io(f"checking run {run_id}", lambda: self._exec_status(line))
        if status == 1 and folder:
            self._removed.add(folder)
        return status == 1

    async def recorded_group(self, run_id: str) -> int | None:
        line = posix.read_state_line(run_id)
        _, output = await self._io(f"reading the state of run {run_id}", lambda: self._exec_status(line))
        fields = output.split()
        return int(fields[1]) if len(fields) >= 2 and fields[1].isdigit() else None

    async def forget_run(self, run_id: str) -> None:
        line = posix.remove_state_line(run_id)
        await self._io(f"removing the state of run {run_id}", lambda: self._exec_status(line))

    async def close(self) -> None:
        """Gives the connection back to the pool (processes started through it are not touched)."""
        if not self._released:
            self._released = True
            self._pool.release(self.target, self._lease)
