"""SSH hosts: Linux/Unix servers reached over SSH (paramiko), host key pinned."""

from __future__ import annotations

import asyncio
from typing import Annotated, ClassVar

from pydantic import Field, SecretStr, StringConstraints

from sms_plugin.errors import IncompatibleHost, TransportError
from sms_plugin.host_kinds.base import Account, Address, ConnectSeconds, HostKind
from sms_plugin.host_kinds.checks import HostCheck, probe_posix
from sms_plugin.transports.base import Transport
from sms_plugin.transports.ssh import SSHTarget, SSHTransport, fingerprint, handshake, key_line


HOST_KEY_LINE = r"^[a-z0-9@.-]{1,100} [A-Za-z0-9+/]{4,16384}={0,3}( [^\x00-\x1f\x7f]{0,500})?$"
"""An OpenSSH public key line: type, base64 key, optional comment."""


class SSHHost(HostKind):
    """A Linux/Unix server on which SMS runs scripts over SSH (paramiko). Give a private key and/or a
    password, and pin the server's host key: SMS refuses to connect to a server whose key is unknown
    or has changed (run `sms host trust NAME` to check the fingerprint and pin it).
    """

    _block_type_name = "SMS SSH Host"
    kind: ClassVar[str] = "ssh"

    address: Address = Field(description="Host name or IP address of the server.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    username: Account = Field(description="The account scripts run as.")
    private_key: SecretStr | None = Field(
        default=None, description="Private key (OpenSSH or PEM text: Ed25519, ECDSA or RSA)."
    )
    private_key_passphrase: SecretStr | None = Field(default=None, description="Passphrase of the private key, if any.")
    password: SecretStr | None = Field(default=None, description="Password, when no key is used or as a fallback.")
    host_keys: list[Annotated[str, StringConstraints(pattern=HOST_KEY_LINE)]] = Field(
        default_factory=list, max_length=20,
        description="Pinned host keys as OpenSSH 'type base64' lines (e.g. 'ssh-ed25519 AAAA...').",
    )
    legacy: bool = Field(
        default=False,
        description=(
            "For old servers that only offer SHA-1 key exchange, ssh-rsa, CBC ciphers and hmac-sha1. "
            "Weaker security: use only where needed. Off, SMS refuses those algorithms."
        ),
    )
    connect_timeout: ConnectSeconds = Field(default=10.0, description="Seconds to wait for connect and login.")
    shell: str = Field(
        default="/bin/sh", pattern=r"^/[^\s\x00-\x1f\x7f]{0,254}$",
        description="The POSIX shell SMS starts and stops scripts with (e.g. /usr/xpg4/bin/sh on old Solaris).",
    )

    def target(self) -> SSHTarget:
        return self.transport_target(SSHTarget)

    async def open_transport(self) -> Transport:
        return await SSHTransport.connect(self.target())

    def describe(self) -> str:
        return f"{self.username}@{self.address}:{self.port}"

    def carry_over(self, existing: HostKind) -> None:
        """Host keys pinned earlier (``sms host trust``) are kept when a declaration gives none."""
        if isinstance(existing, SSHHost) and not self.host_keys:
            self.host_keys = list(existing.host_keys)

    async def check(self, result: HostCheck, *, login: bool = True) -> None:
        """The handshake (algorithms, host key against the pinned ones), then, if the key matches
        and ``login``, the login and the POSIX probe."""
        result.legacy = self.legacy
        pinned = [" ".join(line.split()[:2]) for line in self.host_keys]
        try:
            key, agreed = await asyncio.to_thread(
                handshake,
                self.address,
                self.port,
                self.connect_timeout,
                legacy=self.legacy,
                prefer_key_type=pinned[0].split()[0] if pinned else None,
                label=self.describe(),  # the server named as a run's error names it
            )
        except TransportError as error:
            result.reachable = isinstance(error, IncompatibleHost)  # it answered, but no algorithm fits
            result.problems.append(str(error))
            return
        result.reachable = True
        result.server_version = agreed.server_version
        result.kex, result.host_key_type, result.cipher, result.mac = agreed.kex, agreed.host_key_type, agreed.cipher, agreed.mac
        result.legacy_algorithms = agreed.legacy
        result.host_key_fingerprint = f"{key.get_name()} {fingerprint(key)}"
        name = result.name
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
        if self.legacy and result.legacy_algorithms:
            result.notes.append(
                f"legacy algorithms in use ({', '.join(result.legacy_algorithms)}): weaker security; "
                f"upgrade the server's SSH when you can"
            )
        elif self.legacy:
            result.notes.append("marked legacy, but the server agreed on modern algorithms only: it no longer needs legacy")
        if result.host_key == "match" and login:

            def record_algorithms(transport: Transport) -> None:  # what the login itself agreed on
                if isinstance(transport, SSHTransport):
                    agreed = transport.negotiated()
                    result.kex, result.cipher, result.mac = agreed.kex, agreed.cipher, agreed.mac

            await probe_posix(self.open_transport, result, max(self.connect_timeout, 10.0), record_algorithms)

