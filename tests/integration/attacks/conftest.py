"""Fixtures of the proxy attack tests: clients per user on the gateway of ``gateway_bed``, a
client on its Prefect directly (with the auth string, to check that nothing happened), raw HTTP
requests (so no client library rewrites the path), and a run-script deployment."""

from __future__ import annotations

import base64
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest

#: What "nothing happened" is checked on: the count of each kind of Prefect object.
COUNTED = ("variables", "deployments", "flow_runs", "automations", "block_documents", "work_pools", "flows")


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def raw_request(base_url: str, method: str, target: bytes, headers: dict[str, str] | None = None,
                body: bytes = b"", declared_length: int | None = None) -> Reply:
    """One HTTP/1.1 request with the request target sent byte for byte (no normalization).
    ``declared_length`` larger than ``body``: announce it, send only ``body`` and wait for the
    answer (a server that answers has not waited for the rest)."""
    where = urlsplit(base_url)
    lines = [method.encode() + b" " + target + b" HTTP/1.1", f"Host: {where.netloc}".encode(), b"Connection: close"]
    lines += [f"{k}: {v}".encode() for k, v in (headers or {}).items()]
    if body or declared_length or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {declared_length or len(body)}".encode())
    data = b""
    with socket.create_connection((where.hostname, where.port), timeout=60) as conn:
        try:
            conn.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        except OSError:  # the server answered and closed before reading everything
            pass
        try:
            while chunk := conn.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines if ":" in line]
    if any(k.lower() == "transfer-encoding" and "chunked" in v for k, v in parsed):
        rest = _unchunk(rest)
    return Reply(int(status_line.split()[1]), parsed, rest)  # type: ignore[arg-type]


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


class Bed:
    """The gateway (``client(user)``, ``raw(...)``) and its Prefect (``prefect``, direct)."""

    def __init__(self, gateway_bed, keycloak) -> None:
        self.url = gateway_bed.url
        self.keycloak = keycloak
        auth = base64.b64encode(gateway_bed.auth_string.encode()).decode()
        self.prefect = httpx.Client(base_url=gateway_bed.prefect.api_url, headers={"Authorization": f"Basic {auth}"},
                                    timeout=30)
        self._clients: dict[str, httpx.Client] = {}
        self._tokens: dict[str, str] = {}

    def token(self, user: str) -> str:
        if user not in self._tokens:
            self._tokens[user] = self.keycloak.token(user)
        return self._tokens[user]

    def bearer(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def client(self, user: str) -> httpx.Client:
        if user not in self._clients:
            self._clients[user] = httpx.Client(base_url=self.url, headers=self.bearer(user), timeout=60)
        return self._clients[user]

    def raw(self, user: str | None, method: str, target: bytes, json_body: bytes = b"",
            declared_length: int | None = None, **headers: str) -> Reply:
        sent = {**(self.bearer(user) if user else {}), **headers}
        if json_body:
            sent.setdefault("Content-Type", "application/json")
        return raw_request(self.url, method, target, sent, json_body, declared_length)

    def counts(self) -> dict[str, int]:
        """How many of each kind of object Prefect has, asked directly."""
        counted = {kind: self.prefect.post(f"/{kind}/count", json={}) for kind in COUNTED}
        return {kind: reply.raise_for_status().json() for kind, reply in counted.items()}

    def close(self) -> None:
        self.prefect.close()
        for client in self._clients.values():
            client.close()


@pytest.fixture(scope="module")
def bed(gateway_bed, keycloak) -> Iterator[Bed]:
    opened = Bed(gateway_bed, keycloak)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def deployment(bed: Bed) -> dict:
    """A run-script deployment of ``pay-report`` on host ``eu-1`` whose parameter schema declares
    ``script``, ``host`` and ``args``, in a work pool no worker serves (its runs never execute)."""
    flow = bed.prefect.post("/flows/", json={"name": "run-script"}).raise_for_status().json()
    created = bed.prefect.post("/deployments/", json={
        "name": f"pay-report-{uuid.uuid4().hex[:6]}", "flow_id": flow["id"],
        "parameters": {"script": "pay-report"}, "tags": ["payments", "host:eu-1", "sms"],
        "parameter_openapi_schema": {"type": "object", "properties": {
            "script": {"type": "string"}, "host": {"type": "string"}, "args": {"type": "array"}}},
        "work_pool_name": None,
    }).raise_for_status().json()
    return created
