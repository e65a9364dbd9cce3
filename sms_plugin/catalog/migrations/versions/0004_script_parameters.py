"""Scripts: declared parameters and the environment names a run may set.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("scripts") as batch:
        batch.add_column(sa.Column("parameters", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("allowed_env", sa.JSON(), nullable=True))
    op.execute("UPDATE scripts SET parameters = '[]', allowed_env = '[]'")
    with op.batch_alter_table("scripts") as batch:
        batch.alter_column("parameters", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("allowed_env", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("scripts") as batch:
        batch.drop_column("allowed_env")
        batch.drop_column("parameters")
