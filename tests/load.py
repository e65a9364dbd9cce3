"""How big the suite's load tests are: small enough for CI by default, the full load with
``SMS_FULL_LOAD=1`` (docs/testing.md#full-load). A scaled test keeps every assertion; only counts change."""

from __future__ import annotations

import os

FULL_LOAD = os.environ.get("SMS_FULL_LOAD") == "1"


def scaled(ci: int, full: int) -> int:
    """``full`` when ``SMS_FULL_LOAD=1``, else ``ci``."""
    return full if FULL_LOAD else ci
