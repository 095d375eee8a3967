"""resource notices: a provider's change or offline notice of a resource, its effective date
(at least 5 working days after the notice) and when the housekeeping tick applied it

Revision ID: 0015_resource_notices
Revises: 0012
Create Date: 2026-12-02 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_resource_notices"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resource_notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_code", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=True),
        sa.Column("replacement", sa.String(length=64), nullable=True),
        sa.Column("effective_on", sa.Date(), nullable=False),
        sa.Column("earliest_on", sa.Date(), nullable=False),
        sa.Column("earliest_provisional", sa.Boolean(), nullable=False),
        sa.Column("announced_at", sa.DateTime(), nullable=False),
        sa.Column("announced_by", sa.String(length=100), nullable=False),
        sa.Column("applied_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_resource_notices_resource_code", "resource_notices", ["resource_code"])


def downgrade() -> None:
    op.drop_index("ix_resource_notices_resource_code", table_name="resource_notices")
    op.drop_table("resource_notices")
