"""quality key check: the check value of the quarantine key (an HMAC of a constant, so a
lost or replaced key file is refused instead of silently making masked keys unmatchable),
and the keyed digests of an error report's row keys (kept masked, matched by digest)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quality_key_check",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("check_value", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_quality_key_check_one_row"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("quality_error_reports") as batch:
        batch.add_column(sa.Column("key_digests", sa.JSON(), nullable=True))
    with op.batch_alter_table("quality_error_report_deliveries") as batch:
        batch.add_column(sa.Column("key_digests", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("quality_error_report_deliveries") as batch:
        batch.drop_column("key_digests")
    with op.batch_alter_table("quality_error_reports") as batch:
        batch.drop_column("key_digests")
    op.drop_table("quality_key_check")
