"""The local host: the worker's own machine, scripts run as an unprivileged account."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from sms_plugin.host_kinds.base import HostKind
from sms_plugin.host_kinds.checks import HostCheck, probe_posix
from sms_plugin.transports.base import Transport
from sms_plugin.transports.local import Account, LocalTransport


class LocalHost(HostKind):
    """The machine of the Prefect worker itself: scripts run as child processes of the worker, as the unprivileged
    account ``run_as`` (default ``sms-run``), with a clean environment (the worker's own variables
    are not passed on) in that account's private folder. Only sms-admin may start or add scripts
    here unless ``admins_only`` is off (docs/access.md).
    """

    _block_type_name = "SMS Local Host"
    kind: ClassVar[str] = "local"
    worker_side_fields: ClassVar[frozenset[str]] = frozenset({"scratch_dir", "run_as", "allow_root"})

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

    async def open_transport(self) -> Transport:
        account = Account.named(self.run_as, allow_root=self.allow_root)
        return LocalTransport(Path(self.scratch_dir) if self.scratch_dir else None, account)

    def describe(self) -> str:
        return f"the worker's own machine, as {self.run_as}"

    async def check(self, result: HostCheck, *, login: bool = True) -> None:
        """The POSIX probe, run as ``run_as``; the login shell is the worker's own. Nothing here logs
        in over a network, so ``login`` changes nothing."""
        result.reachable = True
        await probe_posix(self.open_transport, result, 10.0)
        result.authenticated = True
        result.login_shell = pwd.getpwuid(os.getuid()).pw_shell
