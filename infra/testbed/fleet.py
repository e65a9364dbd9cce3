"""A fleet on loopback: a few sshd processes and N host entries pointing at them.

For fleet tests and ``bench/fleet.py``. Every entry is one SMS host (an SSH host block, see
:meth:`Fleet.register`) and the same entry of an Ansible inventory (:meth:`Fleet.write_ansible`).
Entries come in four kinds, each served so that SMS and Ansible see the same thing:

- ``good``: spread round-robin over ``servers`` ordinary sshd processes;
- ``failing``: an sshd whose sessions carry ``FLEET_FAIL=1`` (sshd's SetEnv), so a script such as
  :data:`FLEET_SCRIPT` exits 3 there and 0 elsewhere;
- ``closed``: a loopback port nothing listens on (refused at once);
- ``wrong-key``: an sshd whose pinned key (and Ansible ``known_hosts`` line) is another server's.

Sizing (why these sshd settings): many entries share few servers, so the servers see far more
than a real host would. ``MaxStartups 1000:30:2000``: SMS opens at most ``SMS_SSH_HANDSHAKES``
(32) connections at once, but Ansible with ``-f F`` starts F ``ssh`` clients at once, all
unauthenticated, and sshd's default (10:30:100) drops 30 % of connections past 10.
``MaxSessions 1000``: Ansible's ``ssh`` multiplexes every fork's session to one endpoint over
one ControlMaster connection (ControlPath is per address, port and user), so up to F sessions share a
connection; SMS opens at most 8 channels per connection (4 runs, 2 channels each) whatever the
setting.

Example::

    with Fleet(hosts=1000, servers=4) as fleet:
        await fleet.register()                     # host blocks fleet-0001 ... fleet-1000
        fleet.write_ansible(tmp / "inventory.ini") # + tmp / "known_hosts"
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from infra.testbed.ports import free_port
from infra.testbed.sshd import SshServer

Kind = Literal["good", "failing", "closed", "wrong-key"]
KINDS: tuple[Kind, ...] = ("good", "failing", "closed", "wrong-key")

FLEET_SCRIPT = 'if [ -n "${FLEET_FAIL:-}" ]; then echo "failing on purpose" >&2; exit 3; fi\necho ok\n'
"""A short script that prints ``ok`` on good hosts and fails (exit 3) on ``failing`` ones."""

MAX_STARTUPS = "1000:30:2000"
MAX_SESSIONS = 1000


@dataclass(frozen=True)
class FleetEntry:
    """One host of the fleet: its name, where it points and what it is expected to do."""

    name: str
    kind: Kind
    address: str
    port: int
    server: SshServer | None
    """The sshd that serves it (None for ``closed``)."""
    pinned_key: str
    """The host key SMS pins and Ansible's known_hosts lists for it (another server's for ``wrong-key``)."""


class Fleet:
    """``hosts`` entries: ``mix`` gives how many of each kind but ``good`` (the rest are good)."""

    def __init__(self, hosts: int, *, servers: int = 4, mix: dict[Kind, int] | None = None, prefix: str = "fleet") -> None:
        mix = dict(mix or {})
        if set(mix) - set(KINDS) - {"good"} or sum(mix.values()) > hosts:
            raise ValueError(f"a mix of at most {hosts} hosts of the kinds {KINDS[1:]}, not {mix}")
        self.counts: dict[Kind, int] = {"good": hosts - sum(mix.values()), **mix}
        self.prefix = prefix
        self.servers = [self._sshd() for _ in range(servers)]
        self.failing = self._sshd(set_env={"FLEET_FAIL": "1"}) if mix.get("failing") else None
        self.rekeyed = self._sshd() if mix.get("wrong-key") else None
        self.entries: list[FleetEntry] = []

    @staticmethod
    def _sshd(set_env: dict[str, str] | None = None) -> SshServer:
        return SshServer(max_startups=MAX_STARTUPS, max_sessions=MAX_SESSIONS, set_env=set_env)

    def all_servers(self) -> list[SshServer]:
        return [s for s in (*self.servers, self.failing, self.rekeyed) if s is not None]

    def __enter__(self) -> Fleet:
        with contextlib.ExitStack() as stack:
            for server in self.all_servers():
                stack.enter_context(server)
            self.entries = self._lay_out()
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def _lay_out(self) -> list[FleetEntry]:
        """The entries, kinds interleaved so that every batch of a run meets every kind."""
        good = self.servers[0]
        closed_port = free_port()  # nothing listens there; a port of our own is refused at once
        entries = []
        for number, kind in enumerate(_interleave(self.counts), start=1):
            name = f"{self.prefix}-{number:04d}"
            if kind == "good":
                server = self.servers[(number - 1) % len(self.servers)]
                entries.append(FleetEntry(name, kind, server.host, server.port, server, server.host_public_keys[0]))
            elif kind == "failing":
                assert self.failing is not None
                entries.append(FleetEntry(name, kind, self.failing.host, self.failing.port, self.failing,
                                          self.failing.host_public_keys[0]))
            elif kind == "wrong-key":
                assert self.rekeyed is not None
                entries.append(FleetEntry(name, kind, self.rekeyed.host, self.rekeyed.port, self.rekeyed,
                                          good.host_public_keys[0]))
            else:
                entries.append(FleetEntry(name, kind, good.host, closed_port, None, good.host_public_keys[0]))
        return entries

    def expected(self) -> dict[str, Kind]:
        """Host name → kind."""
        return {entry.name: entry.kind for entry in self.entries}

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def host_block(self, entry: FleetEntry, **fields: object) -> object:
        """The SSH host block of ``entry`` (not saved); ``fields`` override (e.g. labels)."""
        from pydantic import SecretStr

        from sms_plugin.host_kinds.ssh import SSHHost

        key_source = entry.server or self.servers[0]
        values: dict[str, object] = {
            "address": entry.address, "port": entry.port, "username": key_source.username,
            "private_key": SecretStr(key_source.private_key_pem), "host_keys": [entry.pinned_key],
            "connect_timeout": 5.0, "labels": ["fleet", f"kind={entry.kind}"], **fields,
        }
        return SSHHost(**values)

    async def register(self, **fields: object) -> None:
        """Saves every entry as an SSH host block of the Prefect server this process talks to, in
        bulk (``hosts.add_many``: a few requests in all, not about ten per host)."""
        from sms_plugin import hosts

        blocks = {entry.name: self.host_block(entry, **fields) for entry in self.entries}
        if refused := await hosts.add_many(blocks, overwrite=True):  # type: ignore[arg-type]
            raise hosts.refusals(refused)

    def write_ansible(self, inventory: Path) -> Path:
        """Writes the entries as an Ansible INI inventory, and beside it the ``known_hosts`` it
        pins (StrictHostKeyChecking); returns the inventory's path."""
        known_hosts = inventory.with_name("known_hosts")
        lines = {f"[{e.address}]:{e.port} {e.pinned_key}" for e in self.entries}
        known_hosts.write_text("\n".join(sorted(lines)) + "\n")
        rows = ["[fleet]"]
        for entry in self.entries:
            key_file = (entry.server or self.servers[0]).private_key_file
            rows.append(f"{entry.name} ansible_host={entry.address} ansible_port={entry.port} "
                        f"ansible_user={self.servers[0].username} ansible_ssh_private_key_file={key_file}")
        rows += ["", "[fleet:vars]",
                 f"ansible_ssh_common_args='-o StrictHostKeyChecking=yes -o UserKnownHostsFile={known_hosts} "
                 "-o ConnectTimeout=5'", ""]
        inventory.write_text("\n".join(rows))
        return inventory


def _interleave(counts: dict[Kind, int]) -> list[Kind]:
    """The kinds spread evenly: each kind's hosts at regular intervals over the whole list."""
    total = sum(counts.values())
    slots = [((n + 0.5) * total / count, kind) for kind, count in counts.items() for n in range(count)]
    return [kind for _, kind in sorted(slots, key=lambda slot: slot[0])]
