"""The errors SMS reports to people. Each message is one clear sentence that says what to do.

Faces (CLI, SDK, gateway) turn these into a one-line message, an exception or a 4xx response.
"""

from __future__ import annotations


class SMSError(Exception):
    """Base of every error SMS reports on purpose."""


class InvalidInput(SMSError):
    """The request itself is wrong (bad name, unknown interpreter, malformed schedule...)."""


class NotFound(SMSError):
    """A script, version, host or run that does not exist."""


class Conflict(SMSError):
    """The thing exists already, or the request clashes with the current state."""


class TransportError(SMSError):
    """Talking to the target host failed."""


class HostUnreachable(TransportError):
    """No connection could be made (refused, timed out, name not resolved)."""


class AuthenticationFailed(TransportError):
    """The host refused our credentials."""


class HostKeyError(TransportError):
    """The host's key is unknown or differs from the pinned one; the connection was refused."""


class IncompatibleHost(HostUnreachable):
    """The server answered, but offers no SSH algorithm the host's profile accepts (e.g. a
    legacy-only server for a host not marked legacy)."""
