"""quality: quarantine index, run statistics, tickets, error reports and their fix deliveries

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-24 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quality_quarantine",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("resource_code", sa.String(length=64), nullable=False),
        sa.Column("row_key", sa.String(length=500), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("released_run_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("quality_quarantine", schema=None) as batch_op:
        batch_op.create_index("ix_quality_quarantine_run_id", ["run_id"], unique=False)
        batch_op.create_index(
            "ix_quality_quarantine_key", ["resource_code", "row_key"], unique=False
        )

    op.create_table(
        "quality_run_stats",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("resource_code", sa.String(length=64), nullable=False),
        sa.Column("extracted", sa.Integer(), nullable=False),
        sa.Column("valid", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("by_rule", sa.JSON(), nullable=False),
        sa.Column("by_dimension", sa.JSON(), nullable=False),
        sa.Column("newest_cursor", sa.String(length=1000), nullable=True),
        sa.Column("stale", sa.Text(), nullable=True),
        sa.Column("held", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("run_id"),
    )
    with op.batch_alter_table("quality_run_stats", schema=None) as batch_op:
        batch_op.create_index("ix_quality_run_stats_resource_code", ["resource_code"], unique=False)

    op.create_table(
        "quality_tickets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_code", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("due_provisional", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("runs", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("sample_keys", sa.JSON(), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("resolution", sa.String(length=20), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("answered_by", sa.String(length=100), nullable=True),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("quality_tickets", schema=None) as batch_op:
        batch_op.create_index("ix_quality_tickets_resource_code", ["resource_code"], unique=False)

    op.create_table(
        "quality_error_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_code", sa.String(length=64), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=True),
        sa.Column("reporter", sa.String(length=100), nullable=False),
        sa.Column("row_keys", sa.JSON(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("discovered_on", sa.Date(), nullable=True),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("reported_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("due_provisional", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("resolution", sa.String(length=20), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("quality_error_reports", schema=None) as batch_op:
        batch_op.create_index(
            "ix_quality_error_reports_resource_code", ["resource_code"], unique=False
        )

    op.create_table(
        "quality_error_report_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"]),
        sa.ForeignKeyConstraint(["report_id"], ["quality_error_reports.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("report_id", "delivery_id", name="uq_report_delivery"),
    )
    with op.batch_alter_table("quality_error_report_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_quality_error_report_deliveries_report_id", ["report_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("quality_error_report_deliveries")
    op.drop_table("quality_error_reports")
    op.drop_table("quality_tickets")
    op.drop_table("quality_run_stats")
    op.drop_table("quality_quarantine")
