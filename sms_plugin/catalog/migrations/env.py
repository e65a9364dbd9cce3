"""Alembic environment of the catalog; run it through ``Catalog.upgrade()``, which passes the connection."""

from __future__ import annotations

from alembic import context

from sms_plugin.catalog.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the catalog's migrations need a connection: run them with Catalog(url).upgrade()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
