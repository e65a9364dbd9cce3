"""The SSH transport (paramiko): SFTP upload, exec channels, process-group kill.

Host keys are pinned: the connection is refused unless the server shows one of the keys given
(``host_keys``, OpenSSH ``type base64`` lines). :func:`fetch_host_key` reads a server's key so that
a person can check its fingerprint and pin it (``sms host trust``).

Example::

    async with await SSHTransport.connect(SSHTarget("10.0.0.5", username="ops",
            private_key=pem, host_keys=["ssh-ed25519 AAAAC3..."])) as ssh:
        process = await ssh.start(Command(argv=["ksh", "/opt/jobs/nightly.ksh"]))
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import posixpath
import socket
from dataclasses import dataclass, field

import paramiko

from sms_plugin.errors import AuthenticationFailed, HostKeyError, HostUnreachable, TransportError
from sms_plugin.transports import posix
from sms_plugin.transports.base import Command, RemoteProcess, Transport

_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)
_KEEPALIVE_SECONDS = 30
_START_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class SSHTarget:
    """Everything needed to reach one SSH server."""

    address: str
    port: int = 22
    username: str = "root"
    private_key: str | None = None
    private_key_passphrase: str | None = None
    password: str | None = None
    host_keys: list[str] = field(default_factory=list)
    connect_timeout: float = 10.0

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


class _RefuseUnknownKeys(paramiko.MissingHostKeyPolicy):
    def __init__(self, target: SSHTarget) -> None:
        self._target = target

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyError(
            f"host key of {self._target.address}:{self._target.port} is not trusted "
            f"({key.get_name()} {fingerprint(key)}); check the fingerprint and pin it with "
            f"`sms host trust <host>`"
        )


def _connect(target: SSHTarget) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    known_name = target.address if target.port == 22 else f"[{target.address}]:{target.port}"
    for line in target.host_keys:
        key = _parse_host_key(line)
        client.get_host_keys().add(known_name, key.get_name(), key)
    client.set_missing_host_key_policy(_RefuseUnknownKeys(target))
    pkey = _load_private_key(target.private_key, target.private_key_passphrase) if target.private_key else None
    try:
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
        )
    except HostKeyError:
        client.close()
        raise
    except paramiko.BadHostKeyException as error:
        client.close()
        raise HostKeyError(
            f"host key of {target.address}:{target.port} has CHANGED: it shows "
            f"{error.key.get_name()} {fingerprint(error.key)}, pinned is {fingerprint(error.expected_key)}; "
            f"refusing to connect (possible man-in-the-middle). If the server was really re-keyed, "
            f"check the new fingerprint and run `sms host trust <host>`"
        ) from None
    except paramiko.AuthenticationException as error:
        client.close()
        raise AuthenticationFailed(f"{target.label} refused the credentials: {error}") from None
    except (socket.timeout, TimeoutError) as error:
        client.close()
        raise HostUnreachable(f"{target.label} did not answer within {target.connect_timeout:g} s ({error})") from None
    except (OSError, paramiko.SSHException, EOFError) as error:
        client.close()
        raise HostUnreachable(f"cannot connect to {target.label}: {error}") from None
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(_KEEPALIVE_SECONDS)
    return client


def fetch_host_key(address: str, port: int = 22, timeout: float = 10.0) -> paramiko.PKey:
    """The host key a server shows, read without logging in (to show its fingerprint before pinning)."""
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as error:
        raise HostUnreachable(f"cannot connect to {address}:{port}: {error}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as error:
        raise HostUnreachable(f"{address}:{port} did not complete an SSH handshake: {error}") from None
    finally:
        transport.close()


class SSHProcess(RemoteProcess):
    """A command on an exec channel, in a process group of its own on the server."""

    def __init__(self, client: paramiko.SSHClient, channel: paramiko.Channel) -> None:
        super().__init__()
        self._client = client
        self._channel = channel
        self._started = asyncio.get_running_loop().create_future()
        self._pump_in_thread("stdout", self._read_stdout)
        self._pump_in_thread("stderr", channel.recv_stderr)
        self._supervise()

    def _read_stdout(self, size: int) -> bytes:
        """Reads stdout; the launcher's first line (the process group id) is taken off first."""
        if self._started.done():
            return self._channel.recv(size)
        head = b""
        while b"\n" not in head and (chunk := self._channel.recv(size)):
            head += chunk
        first, _, rest = head.partition(b"\n")
        pgid = posix.parse_pgid(first.decode(errors="replace"))
        self._started.get_loop().call_soon_threadsafe(self._resolve_started, pgid)
        return (rest if pgid is not None else head) or self._channel.recv(size)

    def _resolve_started(self, pgid: int | None) -> None:
        self.pid = pgid
        if not self._started.done():
            self._started.set_result(pgid)

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
        return await asyncio.to_thread(self._channel.recv_exit_status)

    async def _signal_group(self, signal: str) -> bool:
        if self.pid is None:
            return False
        return await asyncio.to_thread(self._exec_status, posix.signal_group_line(self.pid, signal)) == 0

    def _exec_status(self, line: str) -> int:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise TransportError("the SSH connection is closed; cannot signal the remote process group")
        channel = transport.open_session()
        try:
            channel.exec_command(line)
            return channel.recv_exit_status()
        finally:
            channel.close()

    async def _abandon_output(self) -> None:
        await super()._abandon_output()
        self._channel.close()


class SSHTransport(Transport):
    """One SSH connection; open it with :meth:`connect`."""

    def __init__(self, target: SSHTarget, client: paramiko.SSHClient) -> None:
        self.target = target
        self._client = client
        self._sftp: paramiko.SFTPClient | None = None

    @classmethod
    async def connect(cls, target: SSHTarget) -> SSHTransport:
        """Connects and authenticates, refusing unknown or changed host keys."""
        return cls(target, await asyncio.to_thread(_connect, target))

    def _open_sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self._client.open_sftp()
        return self._sftp

    async def scratch_dir(self) -> str:
        def make() -> str:
            sftp = self._open_sftp()
            path = posixpath.join(sftp.normalize("."), ".sms", "run")
            self._mkdirs(sftp, path)
            return path

        return await asyncio.to_thread(make)

    @staticmethod
    def _mkdirs(sftp: paramiko.SFTPClient, path: str) -> None:
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            folder = "/" + "/".join(parts[:depth])
            try:
                sftp.stat(folder)
            except FileNotFoundError:
                sftp.mkdir(folder, mode=0o700)

    async def upload(self, content: bytes, path: str, mode: int = 0o700) -> None:
        def put() -> None:
            sftp = self._open_sftp()
            self._mkdirs(sftp, posixpath.dirname(path))
            with sftp.open(path, "wb") as file:
                file.set_pipelined(True)
                file.chmod(mode)
                file.write(content)

        try:
            await asyncio.to_thread(put)
        except (OSError, paramiko.SSHException) as error:
            raise TransportError(f"upload of {path} to {self.target.label} failed: {error}") from None

    async def remove(self, path: str) -> None:
        def unlink() -> None:
            try:
                self._open_sftp().remove(path)
            except FileNotFoundError:
                pass

        await asyncio.to_thread(unlink)

    async def start(self, command: Command) -> RemoteProcess:
        def open_channel() -> paramiko.Channel:
            transport = self._client.get_transport()
            if transport is None or not transport.is_active():
                raise TransportError(f"the SSH connection to {self.target.label} is closed")
            channel = transport.open_session()
            channel.exec_command(posix.render(command))
            channel.shutdown_write()
            return channel

        try:
            channel = await asyncio.to_thread(open_channel)
        except paramiko.SSHException as error:
            raise TransportError(f"{self.target.label} refused to run the command: {error}") from None
        process = SSHProcess(self._client, channel)
        await process.started(_START_TIMEOUT_SECONDS)
        return process

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        await asyncio.to_thread(self._client.close)
