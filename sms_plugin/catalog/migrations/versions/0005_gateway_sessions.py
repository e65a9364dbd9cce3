"""Gateway: server-side browser sessions (the cookie holds only a random id).

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0005"
down_revision = "0004"
branch_labels: str | None = None
depends_on: str | None = None

LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "gateway_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("data", LONG_TEXT, nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gateway_sessions"),
        mysql_charset="utf8mb4",
    )
    op.create_index("ix_gateway_sessions_expires_at", "gateway_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("gateway_sessions")
