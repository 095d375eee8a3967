"""quarantine key digest: a quarantined row whose key holds ID or phone numbers keeps its key
masked, and a keyed hash of the raw key to match later runs by

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-01 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quality_quarantine") as batch:
        batch.add_column(sa.Column("key_digest", sa.LargeBinary(length=16), nullable=True))
        batch.create_index("ix_quality_quarantine_digest", ["resource_code", "key_digest"])


def downgrade() -> None:
    with op.batch_alter_table("quality_quarantine") as batch:
        batch.drop_index("ix_quality_quarantine_digest")
        batch.drop_column("key_digest")
