"""A private OpenSSH server on a loopback port, logging in as the non-root user ``smstest``.

``SshServer(own_network=True)`` runs it inside a network namespace of its own
(:class:`~infra.testbed.netns.NetNamespace`, made at start and removed at stop), listening on the
namespace's address: a host that ``server.network.cut()`` cuts off the network.

``SshServer(legacy=True)`` is the same server restricted to the algorithms of old servers only
(SHA-1 key exchange, ``ssh-rsa`` host and user keys, CBC ciphers, ``hmac-sha1``).
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import socket
from pathlib import Path

from infra.testbed.netns import NetNamespace
from infra.testbed.ports import free_port
from infra.testbed.process import Peer, PeerError, find_binary, process_tree, run

TEST_USER = "smstest"
#: The test user's password, made once per machine and kept readable by root only.
PASSWORD_FILE = Path("/var/lib/sms-testbed/smstest.password")


def _ensure_test_user() -> str:
    """Create ``smstest`` if missing, give it the machine's test password, return the password.

    The password is the same for every session on this machine, so concurrent sessions do not
    lock each other out; it is random and never committed.
    """
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        run(["useradd", "-m", "-s", "/bin/bash", TEST_USER])
    PASSWORD_FILE.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not PASSWORD_FILE.exists():
        fd = os.open(PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(18))
    password = PASSWORD_FILE.read_text().strip()
    # A set password also unlocks the fresh account, which `UsePAM no` would refuse otherwise.
    run(["chpasswd"], input=f"{TEST_USER}:{password}\n")
    return password


def _keygen(path: Path, key_type: str) -> None:
    extra = ["-b", "2048"] if key_type == "rsa" else []
    run(["ssh-keygen", "-q", "-t", key_type, *extra, "-N", "", "-C", "", "-f", str(path)])


#: sshd_config lines of the legacy server: nothing but what a ~2010 OpenSSH would offer.
LEGACY_ALGORITHMS = [
    "KexAlgorithms diffie-hellman-group14-sha1",
    "HostKeyAlgorithms ssh-rsa",
    "PubkeyAcceptedAlgorithms ssh-rsa",
    "Ciphers aes128-cbc,3des-cbc",
    "MACs hmac-sha1",
]


def _public_key_line(path: Path) -> str:
    """'<type> <base64>' of a .pub file, without the comment."""
    key_type, blob = path.read_text().split()[:2]
    return f"{key_type} {blob}"


def _ssh_connection_port(pid: int) -> int | None:
    """The server port in the SSH_CONNECTION variable of a process, if it has one."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(b"SSH_CONNECTION="):
            fields = entry.split(b"=", 1)[1].split()
            return int(fields[3]) if len(fields) == 4 else None
    return None


class SshServer(Peer):
    """sshd with its own host keys (ed25519 and RSA) and a client key (ed25519) for ``smstest``.

    With ``legacy=True`` it offers only :data:`LEGACY_ALGORITHMS`, has an RSA host key only, the
    client key (``private_key_pem``) is RSA, and it serves no SFTP subsystem (SMS needs none).

    Example::

        with SshServer() as ssh:
            client.connect(ssh.host, ssh.port, ssh.username, pkey=...)
    """

    name = "sshd"
    username = TEST_USER

    def __init__(
        self,
        *,
        port: int = 0,
        timeout: float = 15.0,
        legacy: bool = False,
        max_startups: str = "100:30:200",
        max_sessions: int = 10,
        set_env: dict[str, str] | None = None,
        own_network: bool = False,
    ) -> None:
        """``port`` 0 picks a free loopback port at start; ``max_startups`` is sshd's MaxStartups
        (concurrent unauthenticated connections; benchmarks with 1,000 runs raise it);
        ``max_sessions`` its MaxSessions (channels per connection); ``set_env``: variables sshd
        sets in every session (its SetEnv), e.g. to make one server's scripts behave differently;
        ``own_network``: run in a network namespace of its own (:attr:`network`)."""
        super().__init__(timeout=timeout)
        self.own_network = own_network
        self.network: NetNamespace | None = None
        """The namespace sshd runs in (with ``own_network``, once started)."""
        self.port = port
        self.max_startups = max_startups
        self.max_sessions = max_sessions
        self.set_env = dict(set_env or {})
        self.legacy = legacy
        if legacy:
            self.name = "sshd-legacy"
        self.password = ""
        self.private_key_pem = ""
        self.private_key_file: Path | None = None
        """The client key as a file (for the ``ssh`` client), in the server's private folder."""
        self.host_public_keys: list[str] = []
        self._served = False

    def _start(self) -> None:
        assert self.tmp is not None
        find_binary("/usr/sbin/sshd")
        find_binary("ssh-keygen")  # fail early, before touching the user
        if os.geteuid() != 0:
            raise PeerError("the sshd test bed must run as root (it logs in as user smstest)")
        if self.own_network:
            self.network = NetNamespace().create()
            self.host = self.network.address
        self.password = _ensure_test_user()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

        # smstest must reach authorized_keys (sshd reads it as the user); private keys stay 0600.
        self.tmp.chmod(0o755)
        host_key_types = ("rsa",) if self.legacy else ("ed25519", "rsa")
        for key_type in host_key_types:
            _keygen(self.tmp / f"ssh_host_{key_type}_key", key_type)
        self.host_public_keys = [_public_key_line(self.tmp / f"ssh_host_{t}_key.pub") for t in host_key_types]
        client_type = "rsa" if self.legacy else "ed25519"
        client_key = self.tmp / f"client_{client_type}"
        _keygen(client_key, client_type)
        self.private_key_pem = client_key.read_text()
        self.private_key_file = client_key
        keys_dir = self.tmp / "authorized_keys"
        keys_dir.mkdir(mode=0o755)
        authorized = keys_dir / self.username
        authorized.write_text(_public_key_line(client_key.with_suffix(".pub")) + "\n")
        authorized.chmod(0o644)

        self.port = self.port or free_port()
        config = self.tmp / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    *(f"HostKey {self.tmp / f'ssh_host_{t}_key'}" for t in host_key_types),
                    f"PidFile {self.tmp / 'sshd.pid'}",
                    f"AuthorizedKeysFile {keys_dir}/%u",
                    f"AllowUsers {self.username}",
                    "PermitRootLogin no",
                    "PasswordAuthentication yes",
                    "PubkeyAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    f"MaxSessions {self.max_sessions}",
                    *([f"SetEnv {' '.join(f'{k}={v}' for k, v in self.set_env.items())}"] if self.set_env else []),
                    f"MaxStartups {self.max_startups}",
                    *([] if self.legacy else ["Subsystem sftp internal-sftp"]),  # SMS needs no SFTP
                    "LogLevel VERBOSE",
                    *(LEGACY_ALGORITHMS if self.legacy else []),
                    "",
                ]
            )
        )
        self.resume()

    def resume(self) -> None:
        """Start sshd (again, after ``halt()``) on the same port, keys and configuration."""
        assert self.tmp is not None
        argv = [find_binary("/usr/sbin/sshd"), "-D", "-e", "-f", str(self.tmp / "sshd_config")]
        self.spawn(self.network.wrap(argv) if self.network else argv, self._banner)
        self._served = True

    def _banner(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=2) as sock:
            return sock.recv(64).startswith(b"SSH-2.0")

    def processes(self, pattern: str) -> list[str]:
        """Lines of ``ps -u smstest -o pid,pgid,args`` that contain ``pattern``."""
        output = run(["ps", "-u", self.username, "-o", "pid,pgid,args"], check=False)
        return [line.strip() for line in output.splitlines()[1:] if pattern in line]

    def served(self, pattern: str) -> list[str]:
        """Like :meth:`processes`, only those started through this sshd (their SSH_CONNECTION
        names its port), zombies left out."""
        return [
            line for line in self.processes(pattern)
            if " Z" not in line and _ssh_connection_port(int(line.split()[0])) == self.port
        ]

    def crash(self) -> None:
        """SIGKILL sshd and its connection processes, as a crash would: the scripts started
        through it live on. ``resume()`` starts sshd again."""
        assert self.process is not None and self.pid is not None, "start() first"
        for pid in process_tree(self.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        self.process.stop(grace=0)  # reaps the listener; its group has no other members
        self.process = None

    def _after_stop(self) -> None:
        """Kill the scripts that outlived their connections to this sshd; remove its namespace."""
        try:
            self._kill_outliving_scripts()
        finally:
            if self.network is not None:
                self.network.delete()
                self.network = None

    def _kill_outliving_scripts(self) -> None:
        if not self._served:
            return  # never ready: nobody logged in through this sshd
        self._served = False
        # The sshd and its connection processes are gone with its process tree; what is left are
        # scripts that outlived their connection: they carry SSH_CONNECTION with our port. Anything
        # else (another test bed's sshd sessions, which have no such variable) is not ours.
        output = run(["ps", "-u", self.username, "-o", "pid="], check=False)
        for pid in (int(word) for word in output.split()):
            if _ssh_connection_port(pid) != self.port:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
