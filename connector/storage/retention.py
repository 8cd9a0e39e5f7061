"""What retention lets go, and its deletion in small batches: processed inbox rows, written
or discarded outbox rows and audit lines, each older than a moment. Failed inbox rows and dead letters
stay whatever their age: they wait for a person."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, delete, select

from connector.storage.models import AuditRow, InboxRow, OutboxRow
from domain.statuses import InboxStatus, OutboxStatus

if TYPE_CHECKING:
    from connector.storage.store import Store


def _expired(table: str, before: datetime) -> tuple[Any, list[ColumnElement[bool]]]:
    if table == "inbox":
        return InboxRow, [InboxRow.status == InboxStatus.DONE, InboxRow.processed_at < before]
    if table == "outbox":
        return OutboxRow, [
            OutboxRow.status.in_((OutboxStatus.DONE, OutboxStatus.DISCARDED)),
            OutboxRow.done_at < before,
        ]
    if table == "audit":
        return AuditRow, [AuditRow.at < before]
    raise ValueError(f"no retention for table {table!r}")


TABLES = ("inbox", "outbox", "audit")


def purge_batch(store: Store, table: str, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` of ``table``'s rows that expired ``before``, oldest first, in one
    short transaction; rows another session holds locked are skipped. Returns how many went."""
    model, conditions = _expired(table, before)
    with store.sessions() as session, session.begin():
        chosen = select(model.id).where(*conditions).order_by(model.id).limit(limit)
        if store.dialect == "postgresql":
            chosen = chosen.with_for_update(skip_locked=True)
        ids = list(session.scalars(chosen))
        if ids:
            session.execute(delete(model).where(model.id.in_(ids)))
        return len(ids)
