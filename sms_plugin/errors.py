"""The errors SMS reports to people. Each message is one clear sentence that says what to do.

Faces (CLI, SDK, gateway) turn these into a one-line message, an exception or a 4xx response.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class SMSError(Exception):
    """Base of every error SMS reports on purpose."""


class InvalidInput(SMSError):
    """The request itself is wrong (bad name, unknown interpreter, malformed schedule...)."""


class RefusedSetting(SMSError):
    """A well-formed setting SMS will not take: an unknown host, a schedule that cannot fire or fires
    more often than the minimum interval, an unknown time zone. Faces answer 400 (the REST API) or
    one line (the CLI), naming the value."""


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


class ServiceError(SMSError):
    """A service SMS relies on (the Prefect API) failed or could not be reached."""


class Unavailable(ServiceError):
    """A monitoring back end (Prometheus, Elasticsearch) is down, slow or not configured: try later."""


Translate = Callable[[Any, str], SMSError]
"""Makes the SMS error for a foreign exception and a description of what was being done."""


class ErrorMap:
    """The one place where a boundary (a transport, the host limits) turns the exceptions of the
    libraries below it into SMS errors: rules of (exception types, translation), first match wins.

    An SMSError passes unchanged; an exception no rule names is not caught (a bug, not a failure
    of the peer).

    >>> rules = ErrorMap((OSError, lambda error, what: TransportError(f"{what} failed: {error}")))
    >>> with rules.boundary("upload"):
    ...     raise ConnectionResetError("reset by peer")
    Traceback (most recent call last):
    sms_plugin.errors.TransportError: upload failed: reset by peer
    """

    def __init__(self, *rules: tuple[type[BaseException] | tuple[type[BaseException], ...], Translate]) -> None:
        self.rules = rules

    @property
    def caught(self) -> tuple[type[BaseException], ...]:
        """Every exception type a rule names (for best-effort calls that ignore them all)."""
        return tuple(t for types, _ in self.rules for t in (types if isinstance(types, tuple) else (types,)))

    def translate(self, error: BaseException, what: str) -> SMSError | None:
        """The SMS error for ``error``, or None if no rule names it."""
        if isinstance(error, SMSError):
            return error
        for types, translate in self.rules:
            if isinstance(error, types):
                return translate(error, what)
        return None

    @contextmanager
    def boundary(self, what: str) -> Iterator[None]:
        """Runs the block; what it raises leaves as an SMS error (``what``: e.g. "upload of x.sh")."""
        try:
            yield
        except Exception as error:
            mapped = self.translate(error, what)
            if mapped is None or mapped is error:
                raise
            raise mapped from error
