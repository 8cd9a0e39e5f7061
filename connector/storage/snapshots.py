"""What the connector knows of each deal: its last snapshot (what changed when the CRM does not
say), and how many deals each rule has given each user (what round-robin balances)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector.storage.models import AssignmentCountRow, DealSnapshotRow
from domain import Deal

if TYPE_CHECKING:
    from connector.storage.store import Store


def deal_from_snapshot(crm: str, deal_id: str, data: dict[str, Any]) -> Deal:
    """A deal as last seen: every value a snapshot keeps, so that a scheduled rule's
    pre-filter tests the same fields (amount, created_at, updated_at, …) the worker will."""
    return Deal(
        crm=crm,
        id=deal_id,
        title=data.get("title") or "",
        stage=data.get("stage") or "",
        stage_semantic=data.get("stage_semantic") or "open",
        pipeline=data.get("pipeline") or "",
        responsible_id=data.get("responsible_id"),
        amount=_decimal(data.get("amount")),
        created_at=_moment(data.get("created_at")),
        updated_at=_moment(data.get("updated_at")),
        fields=dict(data.get("fields") or {}),
    )


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except InvalidOperation:
        return None


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class Snapshots:
    """Deal snapshots and round-robin counts; changes happen in the caller's transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def get(session: Session, crm: str, deal_id: str) -> DealSnapshotRow | None:
        return session.get(DealSnapshotRow, (crm, deal_id))

    @staticmethod
    def save(session: Session, crm: str, deal: Deal, data: dict[str, Any], now: datetime) -> None:
        """Keep ``data`` as the deal's snapshot, seen ``now``."""
        snap = session.get(DealSnapshotRow, (crm, deal.id))
        if snap is None:
            session.add(
                DealSnapshotRow(crm=crm, deal_id=deal.id, data=data, deal_updated_at=deal.updated_at, seen_at=now)
            )
        else:
            snap.data, snap.deal_updated_at, snap.seen_at = data, deal.updated_at, now

    @staticmethod
    def forget(session: Session, crm: str, deal_id: str) -> None:
        """The deal was deleted."""
        snap = session.get(DealSnapshotRow, (crm, deal_id))
        if snap is not None:
            session.delete(snap)

    def updated_at(self, crm: str, deal_ids: Sequence[str]) -> dict[str, datetime | None]:
        """When each deal was last modified, as last processed."""
        with self.store.sessions() as session:
            return {
                s.deal_id: s.deal_updated_at
                for s in session.scalars(
                    select(DealSnapshotRow).where(
                        DealSnapshotRow.crm == crm, DealSnapshotRow.deal_id.in_(list(deal_ids))
                    )
                )
            }

    @staticmethod
    def known(session: Session, crm: str) -> Iterator[tuple[Deal, dict[str, Any]]]:
        """Every deal of ``crm`` the connector has processed, as last seen, with its snapshot."""
        for snap in session.scalars(select(DealSnapshotRow).where(DealSnapshotRow.crm == crm)):
            yield deal_from_snapshot(crm, snap.deal_id, snap.data), snap.data

    @staticmethod
    def assignments(session: Session) -> dict[str, dict[str, int]]:
        """How many deals each rule has given each user."""
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        for r in session.scalars(select(AssignmentCountRow)):
            counts[r.rule][r.user_id] = r.count
        return counts

    @staticmethod
    def count_assignment(session: Session, rule: str, user_id: str) -> None:
        counter = session.get(AssignmentCountRow, (rule, user_id))
        if counter is None:
            session.add(AssignmentCountRow(rule=rule, user_id=user_id, count=1))
        else:
            counter.count += 1
