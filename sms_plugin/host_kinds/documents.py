"""Host blocks as Prefect block documents, read and written in bulk (``hosts.add_many``).

``Block.asave`` costs about four requests per block (the block type and schema looked up and
registered again, then the document created, read back and updated when it exists);
:class:`DocumentWriter` registers each kind once and then writes a document in one request, and
:func:`~sms_plugin.host_kinds.registry.stored_hosts` reads every stored host in one request per kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import BlockDocumentCreate, BlockDocumentUpdate

from sms_plugin.host_kinds.base import HostKind


@dataclass(frozen=True)
class StoredHost:
    """A host as the Prefect server stores it: its block document's id and the block."""

    document_id: UUID
    block: HostKind

    @property
    def kind(self) -> str:
        return self.block.kind


def document_data(block: HostKind) -> dict[str, Any]:
    """The block's fields as a block document stores them: JSON values, secrets revealed."""
    fields = set(type(block).model_fields)
    return block.model_dump(mode="json", by_alias=True, include=fields, context={"include_secrets": True})


class DocumentWriter:
    """Writes host blocks as block documents with one request each, once :meth:`register` has
    registered their kind (its block type and schema, as ``Block.asave`` does on every save)."""

    def __init__(self, client: PrefectClient) -> None:
        self.client = client
        self._ids: dict[type[HostKind], tuple[UUID, UUID]] = {}

    async def register(self, block_type: type[HostKind]) -> None:
        """Registers ``block_type``'s block type and schema and keeps their ids."""
        await block_type.aregister_type_and_schema(client=self.client)
        # Prefect's registration records the ids on the class (what Block.asave reads next).
        type_id, schema_id = getattr(block_type, "_block_type_id", None), getattr(block_type, "_block_schema_id", None)
        if not isinstance(type_id, UUID) or not isinstance(schema_id, UUID):
            raise RuntimeError(f"Prefect registered {block_type.__name__} but recorded no block type or schema id")
        self._ids[block_type] = (type_id, schema_id)

    async def write(self, name: str, block: HostKind, document_id: UUID | None) -> None:
        """Creates the document ``name`` (``document_id`` None) or replaces that document's data.
        ObjectAlreadyExists if the name was taken meanwhile."""
        type_id, schema_id = self._ids[type(block)]
        data = document_data(block)
        if document_id is None:
            await self.client.create_block_document(
                BlockDocumentCreate(name=name, block_type_id=type_id, block_schema_id=schema_id, data=data)
            )
        else:
            await self.client.update_block_document(
                document_id, BlockDocumentUpdate(block_schema_id=schema_id, data=data, merge_existing_data=False)
            )
