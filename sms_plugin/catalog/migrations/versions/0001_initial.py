"""Initial catalog: scripts, script versions, run records, audit events.

Revision ID: 0001
Revises:
Create Date: 2025-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the model types, so later model changes do not rewrite history.
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
OPTIONS = {"mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "scripts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", LONG_TEXT, nullable=False),
        sa.Column("interpreter", sa.String(32), nullable=False),
        sa.Column("host", sa.String(100), nullable=False),
        sa.Column("path", sa.String(1024), nullable=True),
        sa.Column("default_args", sa.JSON(), nullable=False),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("working_dir", sa.String(1024), nullable=True),
        sa.Column("timeout_seconds", sa.Integer(), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("retry_delay_seconds", sa.Integer(), nullable=False),
        sa.Column("schedules", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scripts"),
        sa.UniqueConstraint("name", name="uq_scripts_name"),
        **OPTIONS,
    )
    op.create_table(
        "script_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("script_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("content", LONG_TEXT, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("comment", LONG_TEXT, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_script_versions"),
        sa.ForeignKeyConstraint(
            ["script_id"], ["scripts.id"], name="fk_script_versions_script_id_scripts", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("script_id", "number", name="uq_script_versions_script_id_number"),
        **OPTIONS,
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flow_run_id", sa.String(36), nullable=False),
        sa.Column("script_name", sa.String(100), nullable=False),
        sa.Column("version_number", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(100), nullable=False),
        sa.Column("remote_pid", sa.Integer(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("output_tail", LONG_TEXT, nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("started_at", UTC_DATETIME, nullable=True),
        sa.Column("ended_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.UniqueConstraint("flow_run_id", name="uq_runs_flow_run_id"),
        **OPTIONS,
    )
    op.create_index("ix_runs_script_name", "runs", ["script_name"])
    op.create_index("ix_runs_created_at", "runs", ["created_at"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("object_name", sa.String(200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
        **OPTIONS,
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_object_name", "audit_events", ["object_name"])


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("runs")
    op.drop_table("script_versions")
    op.drop_table("scripts")
