"""A network namespace of the test bed's own, reached from this machine over a veth pair, whose
traffic can be dropped (``cut()``) and let through again (``restore()``): a host cut off the
network, for fault drills.

The pair sits on a private /30 of 198.18.0.0/15 (RFC 2544's benchmarking range, unlikely to be in
use), chosen free of the addresses this machine has. Names carry this process's id, so parallel
sessions do not clash and a session's leftovers are removed by the next one once its process is
gone. Needs root (``ip netns``).

``cut()`` adds a blackhole route to this machine's end inside the namespace: the namespace answers
nothing any more (no reset, no ICMP error) while its links stay up, which is what a peer behind a
failed network sees: established connections hang, new ones time out.

Example (``SshServer(own_network=True)`` does this for its sshd)::

    netns = NetNamespace().create()
    run(netns.wrap(["/usr/sbin/sshd", ...]))   # listening on netns.address
    netns.cut(); ...; netns.restore()
    netns.delete()
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
from typing import Self

from infra.testbed.process import PeerError, find_binary, is_alive, run

PREFIX = "smsnet"
"""Start of the namespace names this module makes: ``smsnet<pid>-<n>``."""
RANGE = ipaddress.ip_network("198.18.0.0/15")
_NAME = re.compile(rf"^{PREFIX}(\d+)-(\d+)$")
_serial = itertools.count()


def _ip(*args: str, check: bool = True) -> str:
    return run(["ip", *args], check=check)


def _taken_addresses() -> set[ipaddress.IPv4Address]:
    """IPv4 addresses on this machine's interfaces (other sessions' pairs among them)."""
    found = set()
    for line in _ip("-o", "-4", "addr", "show").splitlines():
        fields = line.split()
        if "inet" in fields:
            found.add(ipaddress.ip_interface(fields[fields.index("inet") + 1]).ip)
    return found


def _free_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /30 of :data:`RANGE` none of whose addresses is in use, tried from ``seed`` on."""
    subnets = list(RANGE.subnets(new_prefix=30))
    taken = _taken_addresses()
    for offset in range(len(subnets)):
        subnet = subnets[(seed + offset) % len(subnets)]
        if not taken & set(subnet):
            return subnet
    raise PeerError(f"no free /30 left in {RANGE} for a test network namespace")


def remove_leftovers() -> list[str]:
    """Deletes the namespaces of this module whose process is gone (a crashed session); returns
    their names. Deleting a namespace deletes its veth pair."""
    removed = []
    for line in _ip("netns", "list").splitlines():
        match = _NAME.match(line.split()[0]) if line.strip() else None
        if match and not is_alive(int(match.group(1))):
            _ip("netns", "delete", match.group(0), check=False)
            removed.append(match.group(0))
    return removed


class NetNamespace:
    """One namespace, its veth pair and /30: this machine's end is :attr:`gateway`, the
    namespace's :attr:`address` (what a peer inside listens on)."""

    def __init__(self) -> None:
        serial = next(_serial)
        pid = os.getpid()
        self.name = f"{PREFIX}{pid}-{serial}"
        self.outer = f"smsv{pid}o{serial}"[:15]
        """The pair's end on this machine (interface names have at most 15 characters)."""
        self.inner = f"smsv{pid}i{serial}"[:15]
        self.gateway = ""
        self.address = ""
        self._made = False

    def create(self) -> Self:
        """Makes the namespace, the pair and the addresses; :class:`PeerError` if it cannot (not
        root, no ``ip``, no veth support)."""
        if os.geteuid() != 0:
            raise PeerError("a test network namespace needs root (ip netns add)")
        remove_leftovers()
        subnet = _free_subnet(os.getpid() * 8 + int(self.name.rsplit("-", 1)[1]))
        gateway, address = list(subnet.hosts())
        try:
            _ip("netns", "add", self.name)
            self._made = True
            _ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner, "netns", self.name)
            _ip("addr", "add", f"{gateway}/30", "dev", self.outer)
            _ip("link", "set", self.outer, "up")
            _ip("-n", self.name, "addr", "add", f"{address}/30", "dev", self.inner)
            _ip("-n", self.name, "link", "set", self.inner, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except PeerError:
            self.delete()
            raise
        self.gateway, self.address = str(gateway), str(address)
        return self

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return [find_binary("ip"), "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        """Drops every packet the namespace sends to this machine, silently."""
        _ip("-n", self.name, "route", "add", "blackhole", f"{self.gateway}/32")

    def restore(self) -> None:
        """Lets the namespace's packets through again."""
        _ip("-n", self.name, "route", "del", "blackhole", f"{self.gateway}/32")

    def delete(self) -> None:
        """Removes the namespace and its pair (only what this object made). Safe to call twice."""
        if self._made:
            _ip("link", "delete", self.outer, check=False)
            _ip("netns", "delete", self.name, check=False)
            self._made = False
