"""Refused webhook deliveries, counted per webhook, reason and hour (bounded storage).

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "webhook_refusals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("webhook_id", sa.String(40), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("hour", UTC_DATETIME, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_at", UTC_DATETIME, nullable=False),
        sa.Column("last_client", sa.String(64), nullable=False),
        sa.Column("last_detail", sa.String(500), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_refusals"),
        sa.UniqueConstraint("webhook_id", "reason", "hour", name="uq_webhook_refusals_webhook_id_reason_hour"),
        mysql_charset="utf8mb4",
    )
    op.create_index("ix_webhook_refusals_webhook_id", "webhook_refusals", ["webhook_id"])
    op.create_index("ix_webhook_refusals_hour", "webhook_refusals", ["hour"])


def downgrade() -> None:
    op.drop_table("webhook_refusals")
