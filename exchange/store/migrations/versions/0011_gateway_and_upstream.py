"""gateway and upstream applications: authorization codes, API usage, the gateway's spool
offsets, and the upstream applications the city forwards to national and provincial
platforms; it also joins the feature branches (0007, 0008, 0010) into one head

Revision ID: 0011
Revises: 0007, 0008, 0010
Create Date: 2026-12-01 16:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = ("0007", "0008", "0010")
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(length=100), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.Column("replaced_by", sa.Integer(), nullable=True),
        sa.Column("grace_until", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("prefix"),
    )
    op.create_index("ix_api_codes_subscription_id", "api_codes", ["subscription_id"])
    op.create_table(
        "api_usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("code_id", sa.Integer(), nullable=True),
        sa.Column("subscription_id", sa.Integer(), nullable=True),
        sa.Column("department_code", sa.String(length=64), nullable=True),
        sa.Column("resource_code", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("call_id"),
    )
    for column in ("at", "code_id", "subscription_id", "department_code", "resource_code"):
        op.create_index(f"ix_api_usage_{column}", "api_usage", [column])
    op.create_table(
        "gateway_spool",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "upstream_applications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=20), nullable=False),
        sa.Column("platform", sa.String(length=200), nullable=False),
        sa.Column("upstream_code", sa.String(length=100), nullable=False),
        sa.Column("resource_name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("department_code", sa.String(length=64), nullable=False),
        sa.Column("applicant", sa.String(length=100), nullable=False),
        sa.Column("form", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("state_changed_at", sa.DateTime(), nullable=False),
        sa.Column("forward_due_at", sa.DateTime(), nullable=False),
        sa.Column("forward_provisional", sa.Boolean(), nullable=False),
        sa.Column("forwarded_at", sa.DateTime(), nullable=True),
        sa.Column("forward_breached_at", sa.DateTime(), nullable=True),
        sa.Column("approval_ref", sa.String(length=200), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("resource_code", sa.String(length=64), nullable=True),
        sa.Column("subscription_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_upstream_applications_upstream_code", "upstream_applications", ["upstream_code"]
    )
    op.create_index(
        "ix_upstream_applications_department_code", "upstream_applications", ["department_code"]
    )
    op.create_table(
        "upstream_transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=30), nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=True),
        sa.Column("to_state", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["upstream_applications.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_upstream_transitions_application_id", "upstream_transitions", ["application_id"]
    )


def downgrade() -> None:
    op.drop_table("upstream_transitions")
    op.drop_table("upstream_applications")
    op.drop_table("gateway_spool")
    op.drop_table("api_usage")
    op.drop_table("api_codes")
