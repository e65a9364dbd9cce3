"""Gateway: access rules, webhooks and their deliveries; audit events get the client address and
the caller's subject.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
OPTIONS = {"mysql_charset": "utf8mb4"}


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("client", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("subject", sa.String(200), nullable=False, server_default=""))
    op.create_table(
        "access_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_kind", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("script_glob", sa.String(200), nullable=True),
        sa.Column("script_tag", sa.String(100), nullable=True),
        sa.Column("host_glob", sa.String(200), nullable=True),
        sa.Column("host_label", sa.String(100), nullable=True),
        sa.Column("description", LONG_TEXT, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_access_rules"),
        **OPTIONS,
    )
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("script", sa.String(100), nullable=False),
        sa.Column("description", LONG_TEXT, nullable=False),
        sa.Column("secret", LONG_TEXT, nullable=False),
        sa.Column("arguments", sa.JSON(), nullable=False),
        sa.Column("max_per_minute", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhooks"),
        **OPTIONS,
    )
    op.create_index("ix_webhooks_script", "webhooks", ["script"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("webhook_id", sa.String(40), nullable=False),
        sa.Column("delivery_id", sa.String(200), nullable=False),
        sa.Column("nonce", sa.String(200), nullable=True),
        sa.Column("received_at", UTC_DATETIME, nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", LONG_TEXT, nullable=False),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        sa.UniqueConstraint("webhook_id", "nonce", name="uq_webhook_deliveries_webhook_id_nonce"),
        **OPTIONS,
    )
    op.create_index("ix_webhook_deliveries_webhook_id", "webhook_deliveries", ["webhook_id"])
    op.create_index("ix_webhook_deliveries_received_at", "webhook_deliveries", ["received_at"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")
    op.drop_table("access_rules")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("subject")
        batch.drop_column("client")
