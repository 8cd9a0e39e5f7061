"""Operations on the tables that several parts of the connector share."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Engine, Insert, Table, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from connector.storage.engine import make_engine, make_intake_engine, make_sessionmaker, migrate
from connector.storage.models import AuditRow, CursorRow, InboxRow, OutboxRow
from domain import Event, InboxStatus

Row = TypeVar("Row", InboxRow, OutboxRow)


def new_correlation_id() -> str:
    """Ties a delivery to the rules it fired and the writes they made (in logs and audit)."""
    return uuid.uuid4().hex[:16]


def _insert_event_statement(dialect: str) -> Insert:
    """The inbox insert that skips a (crm, dedup_key) already stored and returns the new id."""
    table = cast(Table, InboxRow.__table__)
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table)
    elif dialect == "sqlite":  # ON CONFLICT … RETURNING needs SQLite 3.35 (2021)
        stmt = sqlite.insert(table)
    else:
        raise ValueError(f"unsupported database {dialect!r}: PostgreSQL or SQLite")
    insert: Insert = stmt.on_conflict_do_nothing(index_elements=["crm", "dedup_key"]).returning(table.c.id)
    return insert


class Store:
    """The database behind one connector process."""

    def __init__(self, url: str, *, apply_migrations: bool = True) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        self.sessions: sessionmaker[Session] = make_sessionmaker(self.engine)
        # Inbox inserts go through their own engine where the database allows it (PostgreSQL:
        # autocommit, no ping per checkout); on SQLite it is the same engine, since a second
        # one would open a second in-memory database.
        self.intake_engine: Engine = make_intake_engine(url) if self.engine.dialect.name != "sqlite" else self.engine
        # SQLite has one writer at a time and its busy handler sleeps 1, 2, 5, 10… ms when a
        # writer waits: queueing this process's inbox writes on a lock hands the write lock
        # over at once instead. PostgreSQL takes concurrent inserts, so no lock there.
        self._insert_lock: threading.Lock | nullcontext[None] = (
            threading.Lock() if self.engine.dialect.name == "sqlite" else nullcontext()
        )
        self._insert_event: Insert = _insert_event_statement(self.engine.dialect.name)
        if apply_migrations:
            migrate(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()
        if self.intake_engine is not self.engine:
            self.intake_engine.dispose()

    # --- inbox -----------------------------------------------------------------------

    def add_event(self, event: Event, received_at: datetime, correlation_id: str | None = None) -> bool:
        """Store one event durably; False when the same delivery was stored before.

        One statement, ``INSERT … ON CONFLICT (crm, dedup_key) DO NOTHING RETURNING id``:
        a row back means it was inserted, none means a twin was there first (a concurrent
        twin included: the unique constraint decides, no pre-check ``SELECT`` needed). On
        PostgreSQL it runs in autocommit, so the answer arrives only after the commit; on
        SQLite the transaction is committed before this returns. Either way True means the
        row is durable. Database errors propagate (the intake answers 503).
        """
        params = {
            "crm": event.crm,
            "dedup_key": event.dedup_key,
            "kind": str(event.kind),
            "source": event.source,
            "deal_id": event.deal_id,
            "occurred_at": event.occurred_at,
            "received_at": received_at,
            "payload": {"raw": event.raw, "previous": event.previous, "data": event.data},
            "status": InboxStatus.NEW,
            "attempts": 0,
            "next_try_at": received_at,
            "correlation_id": correlation_id or new_correlation_id(),
        }
        for attempt in (1, 2):
            try:
                with self._insert_lock, self.intake_engine.begin() as conn:
                    return conn.execute(self._insert_event, params).first() is not None
            except DBAPIError as exc:
                # Without a ping per checkout, a connection the server dropped (restart,
                # idle timeout) fails on first use; SQLAlchemy has then discarded it and the
                # pool's older ones. The statement is idempotent (ON CONFLICT), so one retry
                # on a fresh connection is safe: at worst a twin reports a duplicate.
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

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
        session.add(
            AuditRow(
                at=at,
                crm=crm,
                deal_id=deal_id,
                rule=rule,
                trigger=trigger,
                action=action,
                message=message,
                detail=detail,
                correlation_id=correlation_id,
                key=key,
            )
        )

    def audit_for_deal(self, crm: str | None, deal_id: str) -> list[AuditRow]:
        with self.sessions() as session:
            query = select(AuditRow).where(AuditRow.deal_id == deal_id).order_by(AuditRow.at, AuditRow.id)
            if crm:
                query = query.where(AuditRow.crm == crm)
            return list(session.scalars(query))
