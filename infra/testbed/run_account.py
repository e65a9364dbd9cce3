"""The unprivileged account local scripts run as (``LocalHost.run_as``, default ``sms-run``)."""

from __future__ import annotations

import os
import pwd

from infra.testbed.process import PeerError, run

RUN_ACCOUNT = "sms-run"


def ensure_run_account(name: str = RUN_ACCOUNT) -> pwd.struct_passwd:
    """Create the system account ``name`` (home ``/var/lib/<name>``, no login shell) if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        if os.geteuid() != 0:
            raise PeerError(f"the account {name!r} is missing and only root can create it") from None
        run(["useradd", "--system", "--create-home", "--home-dir", f"/var/lib/{name}", "--shell", "/usr/sbin/nologin", name])
        return pwd.getpwnam(name)
