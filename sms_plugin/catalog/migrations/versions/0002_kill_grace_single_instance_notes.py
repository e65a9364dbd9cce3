"""Scripts: kill grace period and single-instance mode; run records: notes (what the reaper did)
and the flow's last heartbeat.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("scripts") as batch:
        batch.add_column(sa.Column("kill_grace_seconds", sa.Integer(), nullable=False, server_default="5"))
        batch.add_column(sa.Column("single_instance", sa.String(16), nullable=False, server_default="off"))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("notes", LONG_TEXT, nullable=True))
        batch.add_column(sa.Column("heartbeat_at", UTC_DATETIME, nullable=True))
    op.execute("UPDATE runs SET notes = '' WHERE notes IS NULL")
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("notes", existing_type=LONG_TEXT, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("notes")
    with op.batch_alter_table("scripts") as batch:
        batch.drop_column("single_instance")
        batch.drop_column("kill_grace_seconds")
