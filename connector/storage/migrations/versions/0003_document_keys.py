"""Document events are keyed ``document:<source>:<entity>:<ref>:<version>``.

The part before the first colon named the kind of source; it is now the same word for every
document source, so a document filed before the upgrade is still recognised after it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

inbox = sa.table("inbox", sa.column("id", sa.BigInteger()), sa.column("source"), sa.column("dedup_key"))


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(inbox.c.id, inbox.c.dedup_key).where(
            inbox.c.source == "document", ~inbox.c.dedup_key.startswith("document:")
        )
    ).all()
    for row_id, key in rows:
        conn.execute(sa.update(inbox).where(inbox.c.id == row_id).values(dedup_key="document:" + key.partition(":")[2]))


def downgrade() -> None:
    """Nothing to undo: the keys of both formats identify the same documents."""
