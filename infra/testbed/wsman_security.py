"""Authentication and message encryption of the loopback WinRM test host.

* NTLM (offered as ``NTLM``; a client asking for Negotiate falls back to it) with pyspnego's
  acceptor; users are read from the
  file named by ``NTLM_USER_FILE`` (``DOMAIN:user:password`` lines). NTLM is connection-based:
  one context per TCP connection, as on Windows.
* Basic, only over HTTPS (like a WinRM listener with ``AllowUnencrypted=false``).
* WinRM message encryption over HTTP ([MS-WSMV] 2.2.9.1): a ``multipart/encrypted`` body of
  ``application/HTTP-SPNEGO-session-encrypted`` parts, sealed with the NTLM session keys.
"""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass

import spnego

BOUNDARY = "Encrypted Boundary"
PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"


@dataclass
class Users:
    """user name (lower-case, without domain) → password."""

    passwords: dict[str, str]

    @classmethod
    def from_file(cls, path: str) -> Users:
        passwords = {}
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    _, user, password = line.rstrip("\n").split(":", 2)
                    passwords[user.lower()] = password
        return cls(passwords)

    def basic(self, header_value: str) -> str | None:
        """The user of a valid ``Basic`` credential, else None."""
        try:
            user, _, password = base64.b64decode(header_value).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        user = user.rsplit("\\", 1)[-1].lower()
        return user if self.passwords.get(user) == password and password else None


class NtlmAcceptor:
    """One connection's NTLM exchange; ``context`` seals messages once ``complete``."""

    def __init__(self) -> None:
        self.context = spnego.server(protocol="ntlm")

    def step(self, token: bytes) -> bytes | None:
        """Consumes a client token; raises spnego's errors on bad credentials."""
        return self.context.step(token)

    @property
    def complete(self) -> bool:
        return bool(self.context.complete)


def unwrap(context: spnego.ContextProxy, body: bytes, content_type: str) -> bytes:
    """The SOAP message inside an encrypted body (ValueError if it does not decrypt)."""
    match = re.search(r'boundary="([^"]+)"', content_type)
    if not match or PROTOCOL not in content_type:
        raise ValueError(f"unsupported encrypted content type: {content_type}")
    parts = [part for part in re.split(rb"--\s*" + re.escape(match.group(1).encode()) + rb"(?:--)?\r\n", body) if part]
    if len(parts) < 2:
        raise ValueError("encrypted body has no payload part")
    expected = int(re.search(rb"Length=(\d+)", parts[0]).group(1))  # type: ignore[union-attr]
    payload = parts[1].replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
    header_length = struct.unpack("<i", payload[:4])[0]
    message = context.unwrap_winrm(payload[4 : 4 + header_length], payload[4 + header_length :])
    if len(message) != expected:
        raise ValueError(f"decrypted length {len(message)} != announced {expected}")
    return message


def wrap(context: spnego.ContextProxy, message: bytes) -> tuple[str, bytes]:
    """(content type, body) of ``message`` sealed for the client."""
    header, sealed, padding = context.wrap_winrm(message)
    head = "\r\n".join(
        [
            f"--{BOUNDARY}",
            f"\tContent-Type: {PROTOCOL}",
            f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={len(message) + padding}",
            f"--{BOUNDARY}",
            "\tContent-Type: application/octet-stream",
            "",
        ]
    ).encode()
    body = head + struct.pack("<i", len(header)) + header + sealed + f"--{BOUNDARY}--\r\n".encode()
    return f'multipart/encrypted;protocol="{PROTOCOL}";boundary="{BOUNDARY}"', body
