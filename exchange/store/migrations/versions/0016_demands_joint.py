"""data demands and joint reviews: a department's demand for data nobody shares yet with its
provider's answer clock and history, and each source provider's part of a joint review

Revision ID: 0016_demands_joint
Revises: 0012
Create Date: 2026-12-02 04:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_demands_joint"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_demands",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("legal_basis", sa.Text(), nullable=False),
        sa.Column("urgency", sa.String(length=10), nullable=False),
        sa.Column("department_code", sa.String(length=64), nullable=False),
        sa.Column("filed_by", sa.String(length=100), nullable=False),
        sa.Column("filed_at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("state_changed_at", sa.DateTime(), nullable=False),
        sa.Column("provider_code", sa.String(length=64), nullable=True),
        sa.Column("assigned_at", sa.DateTime(), nullable=True),
        sa.Column("answer_due_at", sa.DateTime(), nullable=True),
        sa.Column("answer_provisional", sa.Boolean(), nullable=False),
        sa.Column("reminders_sent", sa.Integer(), nullable=False),
        sa.Column("breached_at", sa.DateTime(), nullable=True),
        sa.Column("answer", sa.String(length=10), nullable=True),
        sa.Column("resource_code", sa.String(length=64), nullable=True),
        sa.Column("publish_by", sa.Date(), nullable=True),
        sa.Column("answer_text", sa.Text(), nullable=True),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("department_code", "state", "provider_code"):
        op.create_index(f"ix_data_demands_{column}", "data_demands", [column])
    op.create_table(
        "data_demand_transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("demand_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=True),
        sa.Column("to_state", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("actor_kind", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["demand_id"], ["data_demands.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_data_demand_transitions_demand_id", "data_demand_transitions", ["demand_id"]
    )
    op.create_table(
        "joint_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("department_code", sa.String(length=64), nullable=False),
        sa.Column("clock_kind", sa.String(length=20), nullable=False),
        sa.Column("decision", sa.String(length=10), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("timed_out", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscription_id", "department_code", name="uq_joint_review"),
    )
    op.create_index("ix_joint_reviews_subscription_id", "joint_reviews", ["subscription_id"])


def downgrade() -> None:
    op.drop_index("ix_joint_reviews_subscription_id", table_name="joint_reviews")
    op.drop_table("joint_reviews")
    op.drop_index("ix_data_demand_transitions_demand_id", table_name="data_demand_transitions")
    op.drop_table("data_demand_transitions")
    for column in ("department_code", "state", "provider_code"):
        op.drop_index(f"ix_data_demands_{column}", table_name="data_demands")
    op.drop_table("data_demands")
