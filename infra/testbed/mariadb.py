"""A private MariaDB server on a loopback port, from Debian's ``mariadb-server`` package."""

from __future__ import annotations

import os
import pwd
import ssl
from pathlib import Path

import pymysql

from infra.testbed.ports import free_port
from infra.testbed.process import Peer, find_binary, run


class MariaDB(Peer):
    """MariaDB with a fresh data folder, root without password, and an empty database.

    Example::

        with MariaDB() as db:
            engine = sqlalchemy.create_engine(db.url)
    """

    name = "mariadb"
    user = "root"

    def __init__(
        self, database: str = "sms_test", *, port: int = 0, timeout: float = 30.0,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        """``port`` 0 picks a free loopback port at start; ``tls`` (CA, certificate, key): serve
        TLS and refuse clients without it (``require_secure_transport``)."""
        super().__init__(timeout=timeout)
        self.database = database
        self.port = port
        self.tls = tls

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the test database."""
        return f"mysql+pymysql://{self.user}@{self.host}:{self.port}/{self.database}"

    def _start(self) -> None:
        assert self.tmp is not None
        install_db = find_binary("mariadb-install-db")
        mariadbd = find_binary("mariadbd")
        os_user = pwd.getpwuid(os.getuid()).pw_name  # as root, mariadbd insists on --user=root
        datadir = self.tmp / "data"
        run(
            [
                install_db,
                "--no-defaults",
                f"--datadir={datadir}",
                "--auth-root-authentication-method=normal",
                f"--user={os_user}",
                "--skip-test-db",
            ]
        )
        self.port = self.port or free_port()
        argv = [
            mariadbd,
            "--no-defaults",
            f"--datadir={datadir}",
            f"--socket={self.tmp / 'mariadb.sock'}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--user={os_user}",
            "--skip-name-resolve",
            f"--pid-file={self.tmp / 'mariadb.pid'}",
            "--innodb-buffer-pool-size=64M",
        ]
        if self.tls:
            ca, cert, key = self.tls
            argv += [f"--ssl-ca={ca}", f"--ssl-cert={cert}", f"--ssl-key={key}", "--require-secure-transport=ON"]
        # No --log-error: the error log goes to stderr, i.e. to self.log_path.
        self.spawn(argv, self._create_database)

    def _create_database(self) -> bool:
        trust = ssl.create_default_context(cafile=str(self.tls[0])) if self.tls else None
        connection = pymysql.connect(
            host=self.host, port=self.port, user=self.user, connect_timeout=2, ssl=trust
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{self.database}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
        finally:
            connection.close()
        return True
