"""The one spelling of a proxied path the gateway accepts: what it judges is what it forwards.

A path is taken from the raw bytes of the request target (``scope["raw_path"]``) and accepted
only when decoding and re-encoding it gives the same bytes, so Prefect's router, which routes on
the decoded path, sees the path the gateway judged. Refused (:class:`BadPath`, a 400):

- bytes outside the URI path alphabet (raw spaces, quotes, backslashes, non-ASCII, ...);
- percent escapes that are not needed or not in upper case (``%41``, ``%3f``), that are not
  valid UTF-8 (overlong forms such as ``%C0%AF``), or that decode to a separator or a character
  with a meaning in URLs (``%2F``, ``%5C``, ``%3F``, ``%23``, ``%25`` — so no double encoding);
- control and invisible format characters (encoded or not), whitespace at either end of a segment;
- dot segments (``.``, ``..``) and empty segments (``//``); a single trailing ``/`` is allowed.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote, unquote_to_bytes

#: Characters a path keeps unescaped (RFC 3986 ``pchar`` without ``%``, plus ``/``).
_SAFE = "/!$&'()*+,;=:@-._~"
_ALPHABET = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + _SAFE.encode() + b"%"
)
#: Decoded characters no segment may hold: separators and URL syntax.
_FORBIDDEN = frozenset("/\\?#%")
#: Unicode categories refused anywhere: controls, formats (bidi, zero width), surrogates,
#: private use, unassigned, line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class BadPath(ValueError):
    """A path the gateway will not forward; the message says why."""


def canonical_path(raw: bytes) -> str:
    """The decoded path of ``raw`` (the request target's path bytes, without the query), if
    ``raw`` is its one canonical spelling; :class:`BadPath` otherwise."""
    if not raw.startswith(b"/"):
        raise BadPath("the path must start with '/'")
    if not set(raw) <= _ALPHABET:
        raise BadPath("the path holds characters that must be percent-encoded")
    try:
        decoded = unquote_to_bytes(raw).decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadPath("the path's percent escapes are not valid UTF-8") from None
    if quote(decoded, safe=_SAFE).encode("ascii") != raw:
        raise BadPath("the path is not in canonical form (needless, lower-case or encoded-separator escapes)")
    segments = decoded.split("/")[1:]
    for index, segment in enumerate(segments):
        _check_segment(segment, last=index == len(segments) - 1)
    return decoded


def _check_segment(segment: str, *, last: bool) -> None:
    if segment in (".", ".."):
        raise BadPath("dot segments are not allowed in the path")
    if not segment:
        if last:
            return
        raise BadPath("empty segments ('//') are not allowed in the path")
    if _FORBIDDEN & set(segment):
        raise BadPath("the path holds an encoded separator or URL syntax (/ \\ ? # %)")
    if any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in segment):
        raise BadPath("the path holds control or invisible characters")
    if segment != segment.strip():
        raise BadPath("a path segment starts or ends with whitespace")
