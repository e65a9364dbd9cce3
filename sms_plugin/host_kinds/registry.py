"""The one registry of host kinds: kind name → block class, and what each face derives from it.

Every face (CLI, SDK, REST API, ``sms apply``, access rules, the exporter) goes through here
instead of branching on the kind. Per kind:

- ``block``: the Prefect block class (the fields are declared there, once);
- ``request``: the REST input (``POST /api/v1/hosts``): ``name``, ``kind``, ``overwrite`` and the
  block's fields except its worker-side ones, with the block's own types and limits;
- ``view``: the public view: every field that is not a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Collection
from typing import Annotated, Any, Literal, Union

from prefect import get_client
from prefect.client.orchestration import PrefectClient
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError, create_model
from pydantic.fields import FieldInfo

from sms_plugin.errors import InvalidInput, NotFound
from sms_plugin.host_kinds.base import HOST_NAME_PATTERN, HostKind, checked_labels
from sms_plugin.host_kinds.documents import StoredHost
from sms_plugin.host_kinds.local import LocalHost
from sms_plugin.host_kinds.ssh import SSHHost
from sms_plugin.host_kinds.windows import WindowsHost

HostName = Annotated[str, StringConstraints(pattern=HOST_NAME_PATTERN)]


def _is_secret(field: FieldInfo) -> bool:
    annotation = field.annotation
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def _copies(block: type[HostKind], names: list[str]) -> dict[str, Any]:
    """``create_model`` definitions repeating the block's fields ``names`` (types, defaults, limits)."""
    return {name: (block.model_fields[name].annotation, block.model_fields[name]) for name in names}


@dataclass(frozen=True)
class Kind:
    """One kind of host and what each face needs of it."""

    name: str
    block: type[HostKind]
    request: type[BaseModel]
    view: type[BaseModel]

    @property
    def secret_fields(self) -> frozenset[str]:
        return frozenset(name for name, field in self.block.model_fields.items() if _is_secret(field))

    @classmethod
    def of(cls, block: type[HostKind]) -> Kind:
        fields = list(block.model_fields)
        request = create_model(
            f"{block.__name__}Request",
            __config__=ConfigDict(extra="forbid"),
            __doc__=f"A host of kind {block.kind}: the fields of {block.__name__} but its worker-side ones.",
            name=(HostName, ...),
            kind=(Literal[block.kind], ...),  # type: ignore[valid-type]
            overwrite=(bool, False),
            **_copies(block, [name for name in fields if name not in block.worker_side_fields]),
        )
        public = [name for name in fields if not _is_secret(block.model_fields[name])]
        view = create_model(f"{block.__name__}View", **_copies(block, public))
        return cls(block.kind, block, request, view)


KINDS: dict[str, Kind] = {kind.name: kind for kind in map(Kind.of, (SSHHost, LocalHost, WindowsHost))}

HostRequest = Annotated[
    Union[tuple(kind.request for kind in KINDS.values())],  # type: ignore[valid-type]  # noqa: UP007
    Field(discriminator="kind"),
]
"""The body of ``POST /api/v1/hosts``: one of the kinds' request models, chosen by ``kind``."""


def kind_named(name: str) -> Kind:
    """The kind called ``name``; InvalidInput naming the known kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise InvalidInput(f"unknown host kind {name!r}; known kinds: {', '.join(KINDS)}") from None


def kind_of(block: HostKind) -> Kind:
    return KINDS[block.kind]


def invalid_input(error: ValidationError) -> InvalidInput:
    """A pydantic error as one readable line (``field: message; ...``)."""
    return InvalidInput("; ".join(f"{'.'.join(map(str, e['loc'])) or 'host'}: {e['msg']}" for e in error.errors()))


def build(kind: str, fields: dict[str, Any]) -> HostKind:
    """A host block of ``kind`` from plain values (secrets as str are wrapped by the block)."""
    block_type = kind_named(kind).block
    if isinstance(labels := fields.get("labels"), list) and all(isinstance(label, str) for label in labels):
        checked_labels(labels)  # the readable refusal, before pydantic's
    try:
        return block_type.model_validate(fields)
    except ValidationError as error:
        raise invalid_input(error) from None


def from_request(request: BaseModel) -> HostKind:
    """The block a validated REST request describes."""
    return build(request.kind, request.model_dump(exclude={"name", "kind", "overwrite"}))  # type: ignore[attr-defined]


def request_fields(block: HostKind) -> dict[str, Any]:
    """The block's fields for ``POST /api/v1/hosts`` as JSON values, secrets revealed (they go to the
    gateway over HTTPS). InvalidInput if a worker-side field is set: only the worker's side may set it."""
    kind = kind_of(block)
    changed = sorted(
        field for field in block.worker_side_fields
        if getattr(block, field) != type(block).model_fields[field].get_default(call_default_factory=True)
    )
    if changed:
        raise InvalidInput(f"{', '.join(changed)} can only be set where the worker runs (sms --local, the SDK, the Prefect UI)")
    body = block.model_dump(mode="json", include=set(kind.request.model_fields) & set(type(block).model_fields))
    for secret in kind.secret_fields:
        value = getattr(block, secret)
        body[secret] = value.get_secret_value() if value is not None else None
    return body


def public_view(block: HostKind) -> dict[str, Any]:
    """The block's settings without its secrets, as JSON values."""
    view = kind_of(block).view
    return view.model_validate(block.model_dump(include=set(view.model_fields))).model_dump(mode="json")


async def load_host(name: str) -> HostKind:
    """The host block called ``name``, whatever its kind; NotFound if there is none."""
    for kind in KINDS.values():
        try:
            return await kind.block.aload(name)
        except ValueError:
            continue
    raise NotFound(f"no host named {name!r}; add it with `sms host add` or in the Prefect UI (Blocks)")


async def stored_hosts(client: PrefectClient, *, include_secrets: bool = False) -> dict[str, StoredHost]:
    """Every stored host of every kind, by name: one request per kind (the server answers a block
    type's documents whole, unpaged)."""
    found: dict[str, StoredHost] = {}
    for kind in KINDS.values():
        documents = await client.read_block_documents_by_type(kind.block.get_block_type_slug(), include_secrets=include_secrets)
        for document in documents:
            if document.name:
                found[document.name] = StoredHost(document.id, kind.block.model_validate(document.data))
    return found


async def load_hosts(names: Collection[str]) -> dict[str, HostKind]:
    """The host blocks called ``names`` that exist, by name, read in one request per kind (a fleet
    run's hosts: not one request each)."""
    async with get_client() as client:
        stored = await stored_hosts(client, include_secrets=True)
    return {name: stored[name].block for name in names if name in stored}
