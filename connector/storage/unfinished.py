"""What is still open for one deal: inbox rows not processed (new, failed, parked) and outbox
rows not carried out (pending, sending, dead, discarded), with their errors, for ``why``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from connector.storage.models import InboxRow, OutboxRow
from domain.statuses import InboxStatus, OutboxStatus

if TYPE_CHECKING:
    from connector.storage.store import Store


@dataclass(frozen=True)
class OpenItem:
    """One open row: ``table`` is ``inbox`` or ``outbox``; ``what`` the event kind or command."""

    table: str
    id: int
    crm: str
    at: datetime
    status: str
    attempts: int
    what: str
    error: str


def open_for_deal(store: Store, crm: str | None, deal_id: str) -> list[OpenItem]:
    """The deal's open inbox rows, then its open outbox rows, each in arrival order."""
    items: list[OpenItem] = []
    with store.sessions() as session:
        inbox = select(InboxRow).where(InboxRow.deal_id == deal_id, InboxRow.status != InboxStatus.DONE)
        outbox = select(OutboxRow).where(OutboxRow.deal_id == deal_id, OutboxRow.status != OutboxStatus.DONE)
        if crm:
            inbox, outbox = inbox.where(InboxRow.crm == crm), outbox.where(OutboxRow.crm == crm)
        for r in session.scalars(inbox.order_by(InboxRow.id)):
            items.append(
                OpenItem("inbox", r.id, r.crm, r.received_at, r.status, r.attempts, r.kind, r.last_error or "")
            )
        for o in session.scalars(outbox.order_by(OutboxRow.id)):
            items.append(
                OpenItem("outbox", o.id, o.crm, o.created_at, o.status, o.attempts, o.command, o.last_error or "")
            )
    return items
