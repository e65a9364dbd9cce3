"""The host-kind contract: every kind of host SMS runs scripts on is a Prefect block of this shape.

A kind declares its own connection fields once, on its block; the transport's target, the REST
and SDK inputs and the public view are all derived from them (``sms_plugin.host_kinds.registry``).
What every kind shares is declared here: the labels access rules select hosts by, the admin-only
switch, the parallel-session limit, and the three things SMS asks of a host: describe yourself,
open a transport, check yourself.
"""

from __future__ import annotations

import dataclasses
import re
from abc import ABC, abstractmethod
from typing import Annotated, Any, ClassVar, TypeVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, StringConstraints

from sms_plugin.errors import InvalidInput
from sms_plugin.host_kinds.checks import HostCheck
from sms_plugin.transports.base import Transport

LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}(=[A-Za-z0-9._-]{1,63})?$"
HOST_NAME_PATTERN = r"^[a-z0-9-]{1,100}$"
"""Host names are Prefect block document names: lower-case letters, digits and '-' (no '_')."""
Address = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:%\[\]-]{1,255}$")]
"""A host name, an IPv4 or an IPv6 address: nothing a resolver, a URL or a log line would misread."""
Account = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,100}$")]
"""An account name: printable (``DOMAIN\\user``, ``user@domain`` and spaces allowed), 1-100 characters."""
ConnectSeconds = Annotated[float, Field(gt=0, le=300)]
Labels = Annotated[
    list[Annotated[str, StringConstraints(pattern=LABEL_PATTERN)]],
    Field(
        default_factory=list,
        description=(
            "Labels such as 'prod-eu' or 'role=web' that access rules and selectors pick hosts by "
            "(letters, digits, '.', '_', '-'; at most one '=' between a key and a value)."
        ),
    ),
]
Target = TypeVar("Target")


def checked_labels(labels: list[str]) -> list[str]:
    """``labels`` if each is 1-63 letters, digits, '.', '_' or '-' (starting with a letter or digit),
    optionally followed by ``=`` and a value of 1-63 of those (``role=web``)."""
    bad = [label for label in labels if not re.match(LABEL_PATTERN, label)]
    if bad:
        raise InvalidInput(
            f"invalid host label(s) {bad}: use 1-63 letters, digits, '.', '_' or '-', or KEY=VALUE of those"
        )
    return labels


class HostKind(Block, ABC):
    """A host SMS runs scripts on. Subclasses set ``kind`` and ``_block_type_name`` (``SMS <Kind> Host``:
    Prefect derives the block type's slug, ``sms-<kind>-host``, from it) and implement
    :meth:`describe`, :meth:`open_transport` and :meth:`check`."""

    kind: ClassVar[str]
    worker_side_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields only a face on the worker's side may set (SDK, ``sms --local``, ``sms apply``, the
    Prefect UI), never the REST API: they decide which local account runs scripts."""

    labels: Labels
    admins_only: bool = Field(
        default=False,
        description="Only sms-admin may start or add scripts here; off, roles and access rules decide.",
    )
    max_parallel_sessions: int = Field(
        default=10, ge=1, le=10_000, description="How many scripts may run on this host at once."
    )

    @abstractmethod
    def describe(self) -> str:
        """Where scripts run, for people, without secrets (e.g. ``ops@10.0.0.5:22``)."""

    @abstractmethod
    async def open_transport(self) -> Transport:
        """A connected transport to the host (the caller closes it)."""

    @abstractmethod
    async def check(self, result: HostCheck, *, login: bool = True) -> None:
        """Fills ``result`` with what the host shows: reachable, logged in, interpreters, problems.
        A host problem is recorded in ``result.problems``, never raised. ``login=False``: only what
        can be learnt without presenting credentials (no failed login on the host, ever)."""

    def carry_over(self, existing: HostKind) -> None:
        """Keeps what a declaration (``sms apply``) leaves unset but SMS learned since; nothing by default."""

    def transport_target(self, target_type: type[Target]) -> Target:
        """``target_type`` (a transport's dataclass) filled from the fields of the same names,
        secrets revealed: the target declares what it needs, the block holds it once."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(target_type):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            values[field.name] = list(value) if isinstance(value, list) else value
        return target_type(**values)
