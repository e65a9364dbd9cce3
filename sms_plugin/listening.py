"""The rule for SMS's own HTTP listeners: plain HTTP only on loopback, unless told otherwise."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False for anything else,
    including ``0.0.0.0``, ``::`` and names that would have to be resolved."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def plain_http_refusal(what: str, host: str, *, tls: bool, allowed: bool, allowed_by: str, remedy: str) -> str | None:
    """Why ``what`` must not start, when it would serve plain HTTP on ``host`` beyond loopback and
    the operator did not explicitly allow it (with ``allowed_by``; ``remedy`` says how to fix or
    allow it); else None. Allowed, it starts with a warning that it serves clear text."""
    if tls or is_loopback(host):
        return None
    if allowed:
        from sms_plugin.tls import warn_clear_text

        warn_clear_text(f"{what} on {host}", allowed_by)
        return None
    return f"{what} will not serve plain HTTP on {host} (not a loopback address): {remedy}"
