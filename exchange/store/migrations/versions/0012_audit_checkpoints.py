"""audit checkpoints: events are chained by a sealer after they commit (``seq``, the position
in the chain, and their links stay NULL until then), and signed checkpoints seal consecutive
ranges of the chain; an index on the events' time (for exports and who-received-what) and one
of the unchained events (for the sealer)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot alter a column's nullability in place (it copies the table).
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=True)
        batch.alter_column("hash", existing_type=sa.String(length=64), nullable=True)
        batch.create_unique_constraint("uq_audit_events_seq", ["seq"])
    # The existing chain was linked in id order: its positions are the rows' ranks by id
    # (ids may have gaps, where a transaction rolled back).
    events = sa.table("audit_events", sa.column("id", sa.Integer()), sa.column("seq"))
    ranked = sa.select(
        events.c.id, sa.func.row_number().over(order_by=events.c.id).label("rank")
    ).subquery()
    op.execute(sa.update(events).where(events.c.id == ranked.c.id).values(seq=ranked.c.rank))
    # ``exchange audit export`` and ``who`` read a window of time: found by this index, not by
    # scanning the log.
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    # The sealer's look for unchained events, in id order, after every commit: this index
    # holds only them, so the look costs the same at a million chained events as at none
    # (without it the planner may walk the primary key through every chained row).
    pending = sa.text("seq IS NULL")
    op.create_index(
        "ix_audit_events_pending", "audit_events", ["id"],
        postgresql_where=pending, sqlite_where=pending,
    )  # fmt: skip
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq_from", sa.BigInteger(), nullable=False),
        sa.Column("seq_to", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("prev_signature", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("witnessed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    op.drop_index("ix_audit_events_pending", table_name="audit_events")
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    events = sa.table("audit_events", sa.column("seq"))
    op.execute(sa.delete(events).where(events.c.seq.is_(None)))  # never chained: no links
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_constraint("uq_audit_events_seq", type_="unique")
        batch.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch.drop_column("seq")
