"""The hosts of a fleet run as the faces hand them to the flow (docs/fleet.md).

A face resolves a selector to names (:func:`resolve`), judges every name, and passes the names:
what is judged is what runs. A list of names from a caller (the Prefect API through the gateway)
is checked with :func:`check_names`: a JSON list of 1-5,000 distinct strings, each exactly the name
of a known host; nothing is normalised (no case folding, no trimming, no globs), so a look-alike
or a pattern is refused, never widened.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import Any

from sms_plugin.catalog import Catalog
from sms_plugin.errors import InvalidInput
from sms_plugin.parameters import MAX_FLEET_HOSTS as MAX_HOSTS
from sms_plugin.selection import selected_hosts


async def resolve(catalog: Catalog, selector: str) -> list[str]:
    """The names of the hosts ``selector`` picks now, sorted; InvalidInput when it picks none or
    more than :data:`MAX_HOSTS` (SelectorError for a malformed selector)."""
    names = sorted(host.name for host in await selected_hosts(catalog, selector))
    if not names:
        raise InvalidInput(f"the selector {selector!r} picks no host: there is nothing to run")
    return check_names(names, names)


def check_names(value: Any, known: Collection[str]) -> list[str]:
    """``value`` as a list of host names; InvalidInput naming what is wrong otherwise."""
    if not isinstance(value, list):
        raise InvalidInput(
            f"'hosts' must be a list of host names, not {type(value).__name__} "
            "(a selector is resolved by the SMS REST API, CLI or SDK, not here)"
        )
    if not value:
        raise InvalidInput("'hosts' names no host: there is nothing to run")
    if len(value) > MAX_HOSTS:
        raise InvalidInput(f"'hosts' names {len(value)} hosts; a fleet run takes at most {MAX_HOSTS}")
    not_text = [item for item in value if not isinstance(item, str)]
    if not_text:
        raise InvalidInput(f"'hosts' must hold host names (strings), not {not_text[0]!r}")
    twice = sorted(name for name, count in Counter(value).items() if count > 1)
    if twice:
        raise InvalidInput(f"'hosts' names a host more than once: {_listed(twice)}")
    unknown = [name for name in value if name not in known]
    if unknown:
        raise InvalidInput(f"'hosts' names {len(unknown)} unknown host(s): {_listed(unknown)} (give exact host names)")
    return list(value)


def _listed(names: list[str], most: int = 10) -> str:
    """``a, b, c`` (each repr'd, so that spaces and look-alikes show), shortened after ``most``."""
    shown = ", ".join(repr(name) for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")

