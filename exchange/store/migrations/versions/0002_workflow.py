"""subscription workflow: application form, states, SLA clocks, outbox, users and tokens

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 12:00:00

Subscriptions that existed before the workflow were added by a platform engineer already
approved ("active"): they become ``implementation`` (the engine moves them on to sign-off at
their next successful delivery). The (node, schema, table) uniqueness moves from a constraint to
the application check, so that a rejected or withdrawn request does not hold its target forever.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

FORM_COLUMNS: list[tuple[str, Any]] = [
    ("share", sa.String(length=20)),
    ("requested_fields", sa.JSON()),
    ("department_code", sa.String(length=64)),
    ("department_name", sa.String(length=200)),
    ("purpose", sa.Text()),
    ("legal_basis", sa.Text()),
    ("contact_name", sa.String(length=100)),
    ("contact_phone", sa.String(length=40)),
    ("contact_email", sa.String(length=200)),
    ("system_name", sa.String(length=200)),
    ("system_ip", sa.String(length=45)),
    ("deploy_location", sa.String(length=200)),
    ("technical_notes", sa.Text()),
    ("usage_days", sa.Integer()),
    ("urgency_reason", sa.Text()),
    ("applicant", sa.String(length=100)),
    ("applied_at", sa.DateTime()),
    ("approved_at", sa.DateTime()),
    ("closed_at", sa.DateTime()),
    ("state_changed_at", sa.DateTime()),
    ("decision_reason", sa.Text()),
    ("suspended_from", sa.String(length=20)),
]


def upgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_constraint("uq_target", type_="unique")
        for name, type_ in FORM_COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
        batch_op.add_column(
            sa.Column("urgency", sa.String(length=10), nullable=False, server_default="normal")
        )
        batch_op.create_index(
            batch_op.f("ix_subscriptions_department_code"), ["department_code"], unique=False
        )
    subs = sa.table("subscriptions", sa.column("status", sa.String))
    op.execute(subs.update().where(subs.c.status == "active").values(status="implementation"))

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("department", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"], unique=False)
    op.create_table(
        "subscription_transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=30), nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=True),
        sa.Column("to_state", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("actor_kind", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_subscription_transitions_subscription_id",
        "subscription_transitions",
        ["subscription_id"],
        unique=False,
    )
    op.create_table(
        "sla_clocks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("party_kind", sa.String(length=20), nullable=False),
        sa.Column("party", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("working_days", sa.Integer(), nullable=True),
        sa.Column("provisional", sa.Boolean(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=True),
        sa.Column("breached_at", sa.DateTime(), nullable=True),
        sa.Column("reminders_sent", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscription_id", "kind", name="uq_clock_kind"),
    )
    op.create_index("ix_sla_clocks_subscription_id", "sla_clocks", ["subscription_id"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    op.create_index("ix_notifications_status", "notifications", ["status"])
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("matches_description", sa.Integer(), nullable=False),
        sa.Column("data_quality", sa.Integer(), nullable=False),
        sa.Column("timeliness", sa.Integer(), nullable=False),
        sa.Column("implementation_service", sa.Integer(), nullable=False),
        sa.Column("review_efficiency", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("by", sa.String(length=100), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscription_id"),
    )
    op.create_table(
        "effectiveness_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("by", sa.String(length=100), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_effectiveness_reports_subscription_id", "effectiveness_reports", ["subscription_id"]
    )
    op.create_table(
        "department_suspensions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("department_code", sa.String(length=64), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("lifted_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscription_id"),
    )
    op.create_index(
        "ix_department_suspensions_department_code",
        "department_suspensions",
        ["department_code"],
    )


def downgrade() -> None:
    for table in (
        "department_suspensions",
        "effectiveness_reports",
        "evaluations",
        "notifications",
        "sla_clocks",
        "subscription_transitions",
        "api_tokens",
        "users",
    ):
        op.drop_table(table)
    subs = sa.table("subscriptions", sa.column("status", sa.String))
    op.execute(subs.update().where(subs.c.status == "implementation").values(status="active"))
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscriptions_department_code"))
        batch_op.drop_column("urgency")
        for name, _ in reversed(FORM_COLUMNS):
            batch_op.drop_column(name)
        batch_op.create_unique_constraint(
            "uq_target", ["subscriber_node", "target_schema", "target_table"]
        )
