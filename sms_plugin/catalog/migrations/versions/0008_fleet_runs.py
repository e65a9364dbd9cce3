"""Fleet runs: a script may target a host selector (``scripts.targets``, ``scripts.host`` becomes
optional), and one row per host execution of a run (``host_executions``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("scripts") as batch:
        batch.add_column(sa.Column("targets", sa.Text(), nullable=True))
        batch.alter_column("host", existing_type=sa.String(100), nullable=True)
    op.create_table(
        "host_executions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("host", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("remote_pid", sa.Integer(), nullable=True),
        sa.Column("started_at", UTC_DATETIME, nullable=True),
        sa.Column("ended_at", UTC_DATETIME, nullable=True),
        sa.Column("output_tail", LONG_TEXT, nullable=False),
        sa.Column("message", LONG_TEXT, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_host_executions"),
        sa.UniqueConstraint("run_id", "host", name="uq_host_executions_run_id_host"),
        mysql_charset="utf8mb4",
    )
    op.create_index("ix_host_executions_run_id", "host_executions", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_host_executions_run_id", table_name="host_executions")
    op.drop_table("host_executions")
    targeted = op.get_bind().execute(sa.text("SELECT name FROM scripts WHERE host IS NULL")).scalars().all()
    if targeted:
        raise RuntimeError(f"scripts {', '.join(targeted)} target host selectors: give each a host before downgrading")
    with op.batch_alter_table("scripts") as batch:
        batch.alter_column("host", existing_type=sa.String(100), nullable=False)
        batch.drop_column("targets")
