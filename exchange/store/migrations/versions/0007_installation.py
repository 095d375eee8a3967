"""installation id and pruned runs: the store's one installation id (it keys the delivery
markers in targets), and the finished runs whose staging directory was pruned

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-01 13:00:00
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

from exchange.kernel.clock import utcnow

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    installation = op.create_table(
        "installation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("installation_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_installation_one_row"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("installation_id"),
    )
    # Generated here, once per store: every later open reads this very id.
    op.bulk_insert(
        installation, [{"id": 1, "installation_id": uuid.uuid4().hex, "created_at": utcnow()}]
    )
    op.create_table(
        "run_prunes",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("pruned_at", sa.DateTime(), nullable=False),
        sa.Column("bytes_removed", sa.BigInteger(), nullable=False),
        sa.Column("files_removed", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("run_id"),
    )


def downgrade() -> None:
    op.drop_table("run_prunes")
    op.drop_table("installation")
