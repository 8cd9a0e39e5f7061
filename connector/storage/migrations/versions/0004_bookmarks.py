"""Poll cursors are bookmarks: ``{"position": ISO time, "complete": bool}`` for every stream.

A deal stream kept a bare ISO time and a document stream ``{"date": …, "complete": …}``;
both become the one format. Per-document memory and the leader's heartbeat share the table
and are left as they are.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

cursors = sa.table("cursors", sa.column("crm"), sa.column("stream"), sa.column("value"))


def _bookmark(value: str) -> str | None:
    """The value as a bookmark, or None when it is one already (or no position at all)."""
    try:
        data = json.loads(value)
    except ValueError:
        return json.dumps({"position": value, "complete": True})  # a bare ISO time
    if isinstance(data, dict) and "date" in data:
        return json.dumps({"position": data["date"], "complete": bool(data.get("complete", True))})
    return None


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(cursors.c.crm, cursors.c.stream, cursors.c.value).where(
            cursors.c.crm != "_connector", ~cursors.c.stream.startswith("doc:"), cursors.c.value.is_not(None)
        )
    ).all()
    for crm, stream, value in rows:
        converted = _bookmark(value)
        if converted is not None:
            conn.execute(
                sa.update(cursors).where(cursors.c.crm == crm, cursors.c.stream == stream).values(value=converted)
            )


def downgrade() -> None:
    conn = op.get_bind()
    for crm, stream, value in conn.execute(sa.select(cursors.c.crm, cursors.c.stream, cursors.c.value)).all():
        data = json.loads(value) if value and value.startswith("{") else None
        if not isinstance(data, dict) or "position" not in data:
            continue
        old = (
            data["position"]
            if stream == "deals"
            else json.dumps({"date": data["position"], "complete": data["complete"]})
        )
        conn.execute(sa.update(cursors).where(cursors.c.crm == crm, cursors.c.stream == stream).values(value=old))
