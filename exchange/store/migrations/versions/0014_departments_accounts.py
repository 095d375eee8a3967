"""departments and account applications: the departments table (loaded from the catalog),
account applications with their history and clocks, and users' argon2id password hashes

Revision ID: 0014_departments_accounts
Revises: 0012
Create Date: 2026-12-02 04:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_departments_accounts"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "departments",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("level", sa.String(length=30), nullable=False),
        sa.Column("supervisor", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("code"),
    )
    op.create_index("ix_departments_supervisor", "departments", ["supervisor"])
    op.create_table(
        "account_applications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_type", sa.String(length=10), nullable=False),
        sa.Column("application_type", sa.String(length=10), nullable=False),
        sa.Column("department_code", sa.String(length=64), nullable=False),
        sa.Column("acting_department", sa.String(length=64), nullable=True),
        sa.Column("supervisor", sa.String(length=64), nullable=True),
        sa.Column("responsible_person", sa.String(length=100), nullable=False),
        sa.Column("position", sa.String(length=100), nullable=False),
        sa.Column("phone", sa.String(length=40), nullable=False),
        sa.Column("email", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("existing_login", sa.String(length=100), nullable=True),
        sa.Column("node", sa.String(length=63), nullable=True),
        sa.Column("applicant", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("state_changed_at", sa.DateTime(), nullable=False),
        sa.Column("login", sa.String(length=100), nullable=True),
        sa.Column("reach", sa.Text(), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_account_applications_department_code", "account_applications", ["department_code"]
    )
    op.create_index("ix_account_applications_supervisor", "account_applications", ["supervisor"])
    op.create_index("ix_account_applications_state", "account_applications", ["state"])
    op.create_table(
        "account_transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=30), nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=True),
        sa.Column("to_state", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("actor_department", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["account_applications.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_account_transitions_application_id", "account_transitions", ["application_id"]
    )
    op.create_table(
        "account_clocks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("party_kind", sa.String(length=20), nullable=False),
        sa.Column("party", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("working_days", sa.Integer(), nullable=False),
        sa.Column("provisional", sa.Boolean(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=True),
        sa.Column("breached_at", sa.DateTime(), nullable=True),
        sa.Column("reminders_sent", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["account_applications.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("application_id", "kind", name="uq_account_clock_kind"),
    )
    op.create_index("ix_account_clocks_application_id", "account_clocks", ["application_id"])
    # No foreign key to users: that table is on a branch this one does not descend from.
    op.create_table(
        "user_passwords",
        sa.Column("user_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("set_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )


def downgrade() -> None:
    op.drop_table("user_passwords")
    op.drop_table("account_clocks")
    op.drop_table("account_transitions")
    op.drop_table("account_applications")
    op.drop_table("departments")
