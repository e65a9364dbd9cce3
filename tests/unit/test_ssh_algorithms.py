"""The modern profile disables every weak algorithm paramiko offers, and nothing else."""

from __future__ import annotations

import paramiko

from sms_plugin.transports.ssh import MODERN_DISABLED_ALGORITHMS

WEAK_MARKERS = ("sha1", "md5", "-cbc", "3des")


def _weak(name: str) -> bool:
    return any(marker in name for marker in WEAK_MARKERS) or name == "ssh-rsa"


def test_every_weak_algorithm_of_paramiko_is_disabled_for_modern_hosts():
    for kind in ("kex", "keys", "pubkeys", "ciphers", "macs"):
        offered = getattr(paramiko.Transport, f"_preferred_{kind}")
        weak = {name for name in offered if _weak(name)}
        assert weak == set(MODERN_DISABLED_ALGORITHMS[kind]), kind


def test_modern_hosts_keep_sha2_rsa_and_current_algorithms():
    for kind in ("kex", "keys", "pubkeys", "ciphers", "macs"):
        left = [n for n in getattr(paramiko.Transport, f"_preferred_{kind}") if n not in MODERN_DISABLED_ALGORITHMS[kind]]
        assert left, kind
    assert {"rsa-sha2-256", "rsa-sha2-512"} <= set(paramiko.Transport._preferred_pubkeys) - set(MODERN_DISABLED_ALGORITHMS["pubkeys"])
