"""Breaches (missed deadlines, for the penalty report) and round-robin assignment counts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "breaches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("crm", sa.String(length=64), nullable=False),
        sa.Column("deal_id", sa.String(length=64), nullable=False),
        sa.Column("deadline", sa.String(length=128), nullable=False),
        sa.Column("responsible_id", sa.String(length=64), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("breached_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rule", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_breaches")),
        sa.UniqueConstraint(
            "crm", "deal_id", "deadline", "due_at", name=op.f("uq_breaches_crm_deal_id_deadline_due_at")
        ),
    )
    with op.batch_alter_table("breaches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_breaches_breached_at"), ["breached_at"], unique=False)

    op.create_table(
        "assignment_counts",
        sa.Column("rule", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("rule", "user_id", name=op.f("pk_assignment_counts")),
    )


def downgrade() -> None:
    op.drop_table("assignment_counts")
    with op.batch_alter_table("breaches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_breaches_breached_at"))
    op.drop_table("breaches")
