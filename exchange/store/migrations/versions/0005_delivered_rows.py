"""incremental without repeats: the rows each subscription holds in its look-back window (by
row hash), and the content hash of each quarantined row

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-01 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivered_rows",
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("row_hash", sa.LargeBinary(length=16), nullable=False),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"]),
        sa.PrimaryKeyConstraint("subscription_id", "row_hash"),
    )
    with op.batch_alter_table("quality_quarantine") as batch:
        batch.add_column(sa.Column("row_hash", sa.LargeBinary(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("quality_quarantine") as batch:
        batch.drop_column("row_hash")
    op.drop_table("delivered_rows")
