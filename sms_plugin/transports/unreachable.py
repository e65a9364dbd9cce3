"""One wording for a host that cannot be reached, whoever finds out: a run (the SSH transport),
`sms host check`, the exporter's probe of a Windows host. Each says what happened and what usually
causes it, the same way in the run's state, the check and the CLI (docs/hosts.md)."""

from __future__ import annotations


def refused(where: str, port: int) -> str:
    """Nothing accepted the TCP connection."""
    return f"cannot connect to {where}: the connection was refused (nothing listens on port {port}, or a firewall rejects it)"


def no_answer(where: str, timeout: float, detail: str = "timed out") -> str:
    """The TCP connection was not answered in time."""
    return (f"cannot connect to {where}: it did not answer within {timeout:g} s ({detail}; "
            "the host is down, or a firewall drops the connection)")


def network_error(where: str, port: int, error: OSError) -> str:
    """Another network failure while connecting (no route, unknown name...): its own words, no errno."""
    if isinstance(error, ConnectionRefusedError):
        return refused(where, port)
    return f"cannot connect to {where}: {error.strerror or error}"
