"""Operations on the tables that several parts of the connector share."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from connector.domain import Event
from connector.storage.engine import make_engine, make_sessionmaker, migrate
from connector.storage.models import AuditRow, CursorRow, InboxRow, OutboxRow

Row = TypeVar("Row", InboxRow, OutboxRow)


def new_correlation_id() -> str:
    """Ties a delivery to the rules it fired and the writes they made (in logs and audit)."""
    return uuid.uuid4().hex[:16]


class Store:
    """The database behind one connector process."""

    def __init__(self, url: str, *, apply_migrations: bool = True) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        self.sessions: sessionmaker[Session] = make_sessionmaker(self.engine)
        if apply_migrations:
            migrate(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    # --- inbox -----------------------------------------------------------------------

    def add_event(self, event: Event, received_at: datetime, correlation_id: str | None = None) -> bool:
        """Store one event durably; False when the same delivery was stored before."""
        row = InboxRow(
            crm=event.crm,
            dedup_key=event.dedup_key,
            kind=str(event.kind),
            source=event.source,
            deal_id=event.deal_id,
            occurred_at=event.occurred_at,
            received_at=received_at,
            payload={"raw": event.raw, "previous": event.previous, "data": event.data},
            status="new",
            attempts=0,
            next_try_at=received_at,
            correlation_id=correlation_id or new_correlation_id(),
        )
        with self.sessions() as session:
            # A pre-check saves a failed INSERT (and its log noise) for the common duplicate.
            exists = session.scalar(
                select(InboxRow.id).where(InboxRow.crm == event.crm, InboxRow.dedup_key == event.dedup_key)
            )
            if exists is not None:
                return False
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # a concurrent twin won the race
                session.rollback()
                return False
        return True

    # --- claiming --------------------------------------------------------------------

    def claim(
        self,
        model: type[Row],
        statuses: Sequence[str],
        now: datetime,
        lease: timedelta,
        limit: int,
        owner: str,
        extra: Any = None,
    ) -> list[Row]:
        """Lease up to ``limit`` due rows to ``owner`` and return them.

        PostgreSQL skips rows other workers hold locked; SQLite serialises writers anyway.
        An expired lease makes a row claimable again, so a crash never strands it.
        """
        with self.sessions() as session:
            query = (
                select(model)
                .where(
                    model.status.in_(statuses),
                    model.next_try_at <= now,
                    or_(model.claimed_until.is_(None), model.claimed_until < now),
                )
                .order_by(model.id)
                .limit(limit)
            )
            if extra is not None:
                query = query.where(extra)
            if self.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(session.scalars(query))
            if rows:
                session.execute(
                    update(model)
                    .where(model.id.in_([r.id for r in rows]))
                    .values(claimed_until=now + lease, claimed_by=owner)
                )
            session.commit()
            return rows

    # --- cursors ---------------------------------------------------------------------

    def get_cursor(self, crm: str, stream: str) -> str | None:
        with self.sessions() as session:
            row = session.get(CursorRow, (crm, stream))
            return row.value if row else None

    def set_cursor(self, crm: str, stream: str, value: str | None, now: datetime) -> None:
        with self.sessions() as session:
            row = session.get(CursorRow, (crm, stream))
            if row is None:
                session.add(CursorRow(crm=crm, stream=stream, value=value, updated_at=now))
            else:
                row.value, row.updated_at = value, now
            session.commit()

    # --- audit -----------------------------------------------------------------------

    @staticmethod
    def audit(
        session: Session,
        *,
        at: datetime,
        crm: str,
        action: str,
        message: str,
        deal_id: str | None = None,
        rule: str | None = None,
        trigger: str | None = None,
        detail: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        key: str | None = None,
    ) -> None:
        """Add an audit line inside the caller's transaction; a ``key`` seen before is skipped."""
        if key is not None and session.scalar(select(AuditRow.id).where(AuditRow.key == key)) is not None:
            return
        session.add(AuditRow(at=at, crm=crm, deal_id=deal_id, rule=rule, trigger=trigger, action=action,
                             message=message, detail=detail, correlation_id=correlation_id, key=key))

    def audit_for_deal(self, crm: str | None, deal_id: str) -> list[AuditRow]:
        with self.sessions() as session:
            query = select(AuditRow).where(AuditRow.deal_id == deal_id).order_by(AuditRow.at, AuditRow.id)
            if crm:
                query = query.where(AuditRow.crm == crm)
            return list(session.scalars(query))
