"""Windows hosts: servers reached over WinRM (PowerShell Remoting's WS-Management), with pypsrp."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr, model_validator

from sms_plugin.errors import AuthenticationFailed, TransportError
from sms_plugin.host_kinds.base import Account, Address, ConnectSeconds, HostKind
from sms_plugin.host_kinds.checks import HostCheck, port_refusal
from sms_plugin.transports.base import Transport
from sms_plugin.transports.psrp import WindowsTransport, WinRMTarget


class WindowsHost(HostKind):
    """A Windows server on which SMS runs PowerShell, .bat and .cmd scripts over WinRM (PowerShell
    Remoting's WS-Management, with pypsrp): NTLM/Negotiate, Kerberos, CredSSP or Basic over HTTPS.

    Over HTTP, NTLM/Negotiate/Kerberos/CredSSP messages are encrypted by default; Basic is only
    allowed over HTTPS. HTTPS certificates are checked (give ``ca_path`` for a private CA).
    See docs/windows.md for what to enable on the server.
    """

    _block_type_name = "SMS Windows Host"
    kind: ClassVar[str] = "windows"

    address: Address = Field(description="Host name or IP address of the server.")
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
    username: Account = Field(
        description="The account scripts run as (DOMAIN\\user or user@domain for domain accounts).",
    )
    password: SecretStr = Field(description="The account's password.")
    encryption: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="WinRM message encryption: auto (on over http, TLS over https), always, or never (http: refused by default servers).",
    )
    operation_timeout: int = Field(
        default=20, ge=1, le=3600,
        description="Seconds a Receive waits for output before the server answers 'timed out' and SMS asks again.",
    )
    connect_timeout: ConnectSeconds = Field(default=10.0, description="Seconds to wait for a connection.")
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
        default=2, ge=1, le=10_000,
        description="How many scripts may run here at once. Each run holds two shells (its WinRS shell or runspace pool, and the utility shell); WinRM 2.0 allows 5 per user (MaxShellsPerUser).",
    )

    @model_validator(mode="after")
    def _basic_only_over_https(self) -> WindowsHost:
        if self.auth == "basic" and self.scheme != "https":
            raise ValueError("Basic authentication sends the password in clear: use it over https only")
        return self

    def target(self) -> WinRMTarget:
        return self.transport_target(WinRMTarget)

    async def open_transport(self) -> Transport:
        return await WindowsTransport.connect(self.target())

    def describe(self) -> str:
        return self.target().label

    async def check(self, result: HostCheck, *, login: bool = True) -> None:
        """Logs in over WinRM, asks cmd.exe for the Windows version and the temp folder; without
        ``login``, only whether the WinRM port accepts a connection."""
        result.needs_posix_sh = False
        if not login:
            target = self.target()
            if problem := await port_refusal(target.address, target.endpoint_port, self.connect_timeout):
                result.problems.append(problem)
            result.reachable = problem is None
            return
        try:
            transport = await self.open_transport()
        except AuthenticationFailed as error:
            result.reachable = True
            result.problems.append(f"login failed: {error}")
            return
        except TransportError as error:
            result.problems.append(str(error))
            return
        result.reachable = result.authenticated = True
        try:
            async with transport:
                result.uname = await transport.windows_version()  # type: ignore[attr-defined]
                result.notes.append(f"scripts are uploaded to {await transport.scratch_dir()}")
        except TransportError as error:
            result.problems.append(f"could not run cmd.exe on the host: {error}")
        result.interpreters = {"cmd": "cmd.exe", "powershell": "powershell.exe (not probed)"}
