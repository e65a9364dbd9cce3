"""Who is calling: the identity the gateway derives from a verified Keycloak token."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    `roles` holds realm roles plus client roles of the gateway client; `groups` holds group
    names without the leading '/'.
    """

    subject: str
    username: str
    roles: frozenset[str]
    groups: frozenset[str]
