"""Host blocks: where scripts run. They appear in the Prefect UI's block catalog.

Each block turns its stored configuration into an open transport::

    host = await load_host("web-01")
    async with await host.open_transport() as transport:
        ...

Secrets (key, passphrase, password) are ``SecretStr``: Prefect stores them encrypted and shows
them masked; SMS never logs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, StringConstraints, model_validator

from sms_plugin.errors import NotFound
from sms_plugin.transports.base import Transport
from sms_plugin.transports.local import Account, LocalTransport
from sms_plugin.transports.psrp import WindowsTransport, WinRMTarget
from sms_plugin.transports.ssh import SSHTarget, SSHTransport


LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}(=[A-Za-z0-9._-]{1,63})?$"
Labels = Annotated[
    list[Annotated[str, StringConstraints(pattern=LABEL_PATTERN)]],
    Field(
        default_factory=list,
        description=(
            "Labels such as 'prod-eu' or 'role=web' that access rules and selectors pick hosts by "
            "(letters, digits, '.', '_', '-'; at most one '=' between a key and a value)."
        ),
    ),
]


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


class SSHHost(Block):
    """A Linux/Unix server reached over SSH. Its host key must be pinned: SMS refuses to connect
    to a server whose key is unknown or has changed (run `sms host trust NAME` to check the
    fingerprint and pin it).
    """

    _block_type_name = "SMS SSH Host"
    _block_type_slug = "sms-ssh-host"
    _description = (
        "A Linux/Unix server on which SMS runs scripts over SSH (paramiko). Give a private key "
        "and/or a password, and pin the server's host key: unknown or changed keys are refused."
    )
    kind: ClassVar[str] = "ssh"

    address: str = Field(description="Host name or IP address of the server.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    username: str = Field(description="The account scripts run as.")
    private_key: SecretStr | None = Field(
        default=None, description="Private key (OpenSSH or PEM text: Ed25519, ECDSA or RSA)."
    )
    private_key_passphrase: SecretStr | None = Field(default=None, description="Passphrase of the private key, if any.")
    password: SecretStr | None = Field(default=None, description="Password, when no key is used or as a fallback.")
    host_keys: list[str] = Field(
        default_factory=list,
        description="Pinned host keys as OpenSSH 'type base64' lines (e.g. 'ssh-ed25519 AAAA...').",
    )
    legacy: bool = Field(
        default=False,
        description=(
            "For old servers that only offer SHA-1 key exchange, ssh-rsa, CBC ciphers and hmac-sha1. "
            "Weaker security: use only where needed. Off, SMS refuses those algorithms."
        ),
    )
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for connect and login.")
    shell: str = Field(
        default="/bin/sh",
        description="The POSIX shell SMS starts and stops scripts with (e.g. /usr/xpg4/bin/sh on old Solaris).",
    )
    max_parallel_sessions: int = Field(
        default=10, ge=1, description="How many scripts may run on this server at once."
    )
    labels: Labels

    def target(self) -> SSHTarget:
        return SSHTarget(
            address=self.address,
            port=self.port,
            username=self.username,
            private_key=_reveal(self.private_key),
            private_key_passphrase=_reveal(self.private_key_passphrase),
            password=_reveal(self.password),
            host_keys=list(self.host_keys),
            legacy=self.legacy,
            connect_timeout=self.connect_timeout,
            shell=self.shell,
        )

    async def open_transport(self) -> Transport:
        return await SSHTransport.connect(self.target())

    def describe(self) -> str:
        return f"{self.username}@{self.address}:{self.port}"


class LocalHost(Block):
    """The worker's own machine: scripts run as child processes of the worker, as the unprivileged
    account ``run_as`` (default ``sms-run``), with a clean environment (the worker's own variables
    are not passed on) in that account's private folder. Only sms-admin may start or add scripts
    here unless ``admins_only`` is off (docs/access.md).
    """

    _block_type_name = "SMS Local Host"
    _block_type_slug = "sms-local-host"
    _description = (
        "The machine of the Prefect worker itself: SMS runs scripts there as local processes of an "
        "unprivileged account (run_as)."
    )
    kind: ClassVar[str] = "local"

    scratch_dir: str | None = Field(
        default=None, description="Folder for uploaded scripts (default: ~/.sms/run of the run_as account)."
    )
    run_as: str = Field(
        default="sms-run",
        pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
        description=(
            "The account scripts run as. An unprivileged account cannot read the worker's environment or "
            "files; the worker must run as root to switch to it (or run as this account itself)."
        ),
    )
    allow_root: bool = Field(
        default=False, description="Allow run_as to be root: scripts then control the worker's machine and its secrets."
    )
    admins_only: bool = Field(
        default=True,
        description="Only sms-admin may start or add scripts here. Off: roles and access rules decide, as for other hosts.",
    )
    max_parallel_sessions: int = Field(default=10, ge=1, description="How many scripts may run here at once.")
    labels: Labels

    async def open_transport(self) -> Transport:
        account = Account.named(self.run_as, allow_root=self.allow_root)
        return LocalTransport(Path(self.scratch_dir) if self.scratch_dir else None, account)

    def describe(self) -> str:
        return f"the worker's own machine, as {self.run_as}"


class WindowsHost(Block):
    """A Windows server reached over WinRM (PowerShell Remoting's WS-Management), with pypsrp.

    Over HTTP, NTLM/Negotiate/Kerberos/CredSSP messages are encrypted by default; Basic is only
    allowed over HTTPS. HTTPS certificates are checked (give ``ca_path`` for a private CA).
    See docs/windows.md for what to enable on the server.
    """

    _block_type_name = "SMS Windows Host"
    _block_type_slug = "sms-windows-host"
    _description = (
        "A Windows server on which SMS runs PowerShell, .bat and .cmd scripts over WinRM (pypsrp): "
        "NTLM/Negotiate, Kerberos, CredSSP or Basic over HTTPS; message encryption over HTTP."
    )
    kind: ClassVar[str] = "windows"

    address: str = Field(description="Host name or IP address of the server.")
    port: int | None = Field(default=None, ge=1, le=65535, description="WinRM port (default 5985 http, 5986 https).")
    scheme: Literal["http", "https"] = Field(default="http", description="http (with message encryption) or https.")
    cert_validation: bool = Field(
        default=True, description="Check the HTTPS certificate. Turn off only for a test server."
    )
    ca_path: str | None = Field(
        default=None, description="PEM file of the CA that signed the server's certificate (on the worker)."
    )
    auth: Literal["negotiate", "ntlm", "kerberos", "basic", "credssp"] = Field(
        default="negotiate",
        description="negotiate (Kerberos, else NTLM), ntlm, kerberos, basic (https only) or credssp.",
    )
    username: str = Field(description="The account scripts run as (DOMAIN\\user or user@domain for domain accounts).")
    password: SecretStr = Field(description="The account's password.")
    encryption: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="WinRM message encryption: auto (on over http, TLS over https), always, or never (http: refused by default servers).",
    )
    operation_timeout: int = Field(
        default=20, ge=1, le=3600,
        description="Seconds a Receive waits for output before the server answers 'timed out' and SMS asks again.",
    )
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for a connection.")
    commands_per_shell: int = Field(
        default=15, ge=2,
        description="Commands SMS starts in one WinRS shell before it opens a new one (MaxProcessesPerShell; 15 on 2008 R2).",
    )
    idle_timeout: int = Field(
        default=900, ge=60,
        description="Seconds after which the server deletes a run's shell (and ends its processes) if SMS stopped asking for output.",
    )
    powershell_version: Literal["2.0", "3.0", "4.0", "5.1"] = Field(
        default="2.0",
        description="The oldest PowerShell on the server. SMS itself only sends PowerShell 2.0 syntax; this documents the host.",
    )
    max_parallel_sessions: int = Field(
        default=2, ge=1,
        description="How many scripts may run here at once. Each run holds two shells (its WinRS shell or runspace pool, and the utility shell); WinRM 2.0 allows 5 per user (MaxShellsPerUser).",
    )

    @model_validator(mode="after")
    def _basic_only_over_https(self) -> WindowsHost:
        if self.auth == "basic" and self.scheme != "https":
            raise ValueError("Basic authentication sends the password in clear: use it over https only")
        return self

    def target(self) -> WinRMTarget:
        return WinRMTarget(
            address=self.address,
            port=self.port,
            scheme=self.scheme,
            username=self.username,
            password=self.password.get_secret_value(),
            auth=self.auth,
            cert_validation=self.cert_validation,
            ca_path=self.ca_path,
            encryption=self.encryption,
            operation_timeout=self.operation_timeout,
            connect_timeout=self.connect_timeout,
            commands_per_shell=self.commands_per_shell,
            idle_timeout=self.idle_timeout,
        )

    async def open_transport(self) -> Transport:
        return await WindowsTransport.connect(self.target())

    def describe(self) -> str:
        return self.target().label


HostBlock = SSHHost | LocalHost | WindowsHost
HOST_BLOCK_TYPES: tuple[type[SSHHost] | type[LocalHost] | type[WindowsHost], ...] = (SSHHost, LocalHost, WindowsHost)


async def load_host(name: str) -> HostBlock:
    """The host block called ``name``, whatever its type; NotFound if there is none."""
    for block_type in HOST_BLOCK_TYPES:
        try:
            return await block_type.aload(name)  # type: ignore[return-value]
        except ValueError:
            continue
    raise NotFound(f"no host named {name!r}; add it with `sms host add` or in the Prefect UI (Blocks)")
