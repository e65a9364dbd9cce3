"""Webhook signatures, sealed secrets and the payload → arguments mapping. Pure functions.

Two signature schemes (docs/access.md shows how to sign):

- SMS: ``X-SMS-Timestamp: <unix seconds>`` and ``X-SMS-Signature: sha256=<hex>``, the HMAC-SHA256
  of ``<timestamp>.<body>`` with the webhook's secret; the timestamp must be within
  :data:`TOLERANCE_SECONDS` of the gateway's clock.
- GitHub: ``X-Hub-Signature-256: sha256=<hex>``, the HMAC-SHA256 of the body alone (no timestamp,
  so only the replay memory protects it).

The replay key (nonce) of a delivery is its verified signature: the same signed message is
accepted once, whatever delivery id it claims.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from sms_plugin import settings
from sms_plugin.settings import current
from sms_plugin.errors import InvalidInput

TOLERANCE_SECONDS = 300
MAX_BODY_BYTES = 256 * 1024
#: Default allow-list of an argument value: ASCII letters, digits and ``._:/@+=,-`` only (no spaces,
#: quotes, `$`, `;`, `|`, `&`, `<`, `>` or newlines), not starting with `-` (an option) and without `..`.
ARGUMENT_PATTERN = r"(?!-)(?!.*\.\.)[A-Za-z0-9._:/@+=,-]{0,256}"
_ASCII_NUMBER = re.compile(r"[0-9]{1,18}")
SMS_TIMESTAMP, SMS_SIGNATURE, SMS_DELIVERY = "x-sms-timestamp", "x-sms-signature", "x-sms-delivery"
GITHUB_SIGNATURE, GITHUB_DELIVERY = "x-hub-signature-256", "x-github-delivery"


class SignatureError(Exception):
    """The request is not signed by the webhook's secret (the message says how)."""


def hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sms_signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-SMS-Signature`` value for ``body`` sent at ``timestamp``."""
    return "sha256=" + hmac_hex(secret, f"{timestamp}.".encode() + body)


def github_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``."""
    return "sha256=" + hmac_hex(secret, body)


def ascii_number(text: str, digits: int = 18) -> int | None:
    """``text`` as a number if it is 1 to ``digits`` ASCII digits and nothing else, else None
    (``str.isdigit`` and ``int`` also take other scripts' digits, superscripts and fullwidth forms).

    >>> ascii_number("1700000000"), ascii_number("١٧٠٠"), ascii_number("²"), ascii_number("1 ")
    (1700000000, None, None, None)
    """
    return int(text) if len(text) <= digits and _ASCII_NUMBER.fullmatch(text) else None


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> str:
    """Check the request's signature; return the nonce (the signature's hex). Raise SignatureError."""
    if SMS_SIGNATURE in headers:
        stamp = headers.get(SMS_TIMESTAMP, "")
        sent = ascii_number(stamp, digits=12)
        if sent is None:
            raise SignatureError(f"{SMS_TIMESTAMP} must be the sending time in Unix seconds (ASCII digits)")
        skew = abs((time.time() if now is None else now) - sent)
        if skew > TOLERANCE_SECONDS:
            raise SignatureError(f"the timestamp is {skew:.0f} s away from now (tolerance {TOLERANCE_SECONDS} s)")
        expected, given = sms_signature(secret, stamp, body), headers[SMS_SIGNATURE]
    elif GITHUB_SIGNATURE in headers:
        expected, given = github_signature(secret, body), headers[GITHUB_SIGNATURE]
    else:
        raise SignatureError(f"unsigned: send {SMS_TIMESTAMP} and {SMS_SIGNATURE}, or {GITHUB_SIGNATURE}")
    if not hmac.compare_digest(expected.encode(), given.strip().encode()):
        raise SignatureError("the signature does not match the body and the webhook's secret")
    return expected.removeprefix("sha256=")


def delivery_id(headers: Mapping[str, str], fallback: str) -> str:
    """The delivery id the sender gave (``X-SMS-Delivery`` or ``X-GitHub-Delivery``), cut to 200 chars."""
    return (headers.get(SMS_DELIVERY) or headers.get(GITHUB_DELIVERY) or fallback)[:200]


def check_argument_pattern(pattern: str) -> str:
    """``pattern`` if it compiles as a regular expression."""
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"pattern {pattern!r} is not a regular expression: {error}") from None
    return pattern


def map_arguments(payload: Any, arguments: list[dict[str, str]]) -> list[str]:
    """The script arguments that ``arguments`` (``{"field", "pattern"}`` each) take from ``payload``.

    A field is a dotted path into JSON objects; its value must be a string, number or boolean
    that matches its pattern entirely. Anything else is InvalidInput: no other text reaches the script.
    """
    values = []
    for argument in arguments:
        value: Any = payload
        for part in argument["field"].split("."):
            if not isinstance(value, dict) or part not in value:
                raise InvalidInput(f"the payload has no field {argument['field']!r}")
            value = value[part]
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str | int | float):
            raise InvalidInput(f"payload field {argument['field']!r} must be a string, number or boolean")
        text = str(value)
        if re.fullmatch(argument.get("pattern", ARGUMENT_PATTERN), text) is None:
            raise InvalidInput(f"payload field {argument['field']!r} does not match its allowed pattern")
        values.append(text)
    return values


def _fernet() -> Fernet:
    """The key that seals webhook secrets: ``SMS_WEBHOOK_KEY`` (a Fernet key), else the file
    ``$SMS_HOME/webhook.key``, created (mode 0600) on first use."""
    if key := current().console.webhook_key:
        return Fernet(key.get_secret_value().encode())
    path = settings.sms_home() / "webhook.key"
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(Fernet.generate_key())
    return Fernet(path.read_bytes().strip())


def seal(secret: str) -> str:
    """``secret`` encrypted for the catalog."""
    return _fernet().encrypt(secret.encode()).decode()


def unseal(sealed: str) -> str:
    try:
        return _fernet().decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise InvalidInput("the webhook's secret cannot be decrypted with this gateway's key (SMS_WEBHOOK_KEY)") from None
