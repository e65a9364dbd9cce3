"""A private PostgreSQL server on a loopback port, from Debian's ``postgresql`` package (Prefect's
server can keep its database there instead of SQLite, which several workers need)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil

from infra.testbed.ports import free_port
from infra.testbed.process import Peer, PeerError, find_binary, run

#: PostgreSQL refuses to run as root; as root the server runs as this account (Debian creates it).
SERVICE_USER = "postgres"


def _pg_binary(name: str) -> str:
    """A PostgreSQL server program: on PATH, else the newest /usr/lib/postgresql/<v>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise PeerError(f"{name} not found (Debian package postgresql)")
    return candidates[-1]


class PostgreSQL(Peer):
    """PostgreSQL with a fresh cluster (trust authentication on loopback) and its socket in a
    private folder; ``url`` is the database ``postgres`` for Prefect's asyncpg driver.

    Example::

        with PostgreSQL() as db:
            PrefectServer(database_url=db.prefect_url)
    """

    name = "postgresql"

    def __init__(self, *, port: int = 0, timeout: float = 60.0) -> None:
        """``port`` 0 picks a free loopback port at start."""
        super().__init__(timeout=timeout)
        self.port = port

    @property
    def prefect_url(self) -> str:
        """The ``PREFECT_SERVER_DATABASE_CONNECTION_URL`` of the database."""
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/postgres"

    def _as_user(self, argv: list[str]) -> list[str]:
        if os.getuid() != 0:
            return argv
        return [find_binary("runuser"), "-u", SERVICE_USER, "--", *argv]

    def _start(self) -> None:
        assert self.tmp is not None
        data, sockets = self.tmp / "data", self.tmp / "socket"
        for folder in (data, sockets):
            folder.mkdir()
        if os.getuid() == 0:
            account = pwd.getpwnam(SERVICE_USER)
            os.chmod(self.tmp, 0o711)  # the service account passes through, reads nothing
            for folder in (data, sockets):
                os.chown(folder, account.pw_uid, account.pw_gid)
        run(self._as_user([_pg_binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]))
        self.port = self.port or free_port()
        self.resume()

    def resume(self) -> None:
        """Start the server (again, after ``halt()``) on the same port and data."""
        assert self.tmp is not None
        argv = [
            _pg_binary("postgres"),
            "-D", str(self.tmp / "data"),
            "-k", str(self.tmp / "socket"),
            "-h", self.host,
            "-p", str(self.port),
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=300",
        ]
        self.spawn(self._as_user(argv), self._ready)

    def _ready(self) -> bool:
        run([_pg_binary("pg_isready"), "-q", "-h", self.host, "-p", str(self.port)])
        return True
