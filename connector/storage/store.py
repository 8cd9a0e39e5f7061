"""The database behind one connector process, and its repositories.

Rows are built, claimed and moved between statuses by the repositories only: ``inbox``,
``outbox``, ``timers``, ``cursors``, ``snapshots``, ``audit`` and ``plans``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from connector.storage.audit import Audit
from connector.storage.cursors import Cursors
from connector.storage.engine import (
    READ_ONLY,
    DatabaseSettings,
    DatabaseUnavailable,
    database_problem,
    make_engine,
    make_intake_engine,
    make_sessionmaker,
    migrate,
    ping,
)
from connector.storage.inbox import Inbox
from connector.storage.models import InboxRow, OutboxRow
from connector.storage.outbox import Outbox
from connector.storage.plans import Plans
from connector.storage.snapshots import Snapshots
from connector.storage.timers import Timers

Row = TypeVar("Row", InboxRow, OutboxRow)


class Store:
    """The database behind one connector process."""

    def __init__(self, url: str, *, apply_migrations: bool = True, settings: DatabaseSettings | None = None) -> None:
        """Open the database at ``url`` and migrate it (or, without migrations, reach it once);
        ``DatabaseUnavailable`` says in one line why it could not."""
        self.url = url
        self.settings = settings or DatabaseSettings()
        try:
            self.engine: Engine = make_engine(url, self.settings)
        except OSError as exc:  # SQLite: the database's folder cannot be made
            raise DatabaseUnavailable(database_problem(exc, url)) from exc
        self.sessions: sessionmaker[Session] = make_sessionmaker(self.engine)
        # Sessions that only read: on SQLite they take no write lock (status, metrics, why).
        self.reading: sessionmaker[Session] = make_sessionmaker(self.engine.execution_options(**{READ_ONLY: True}))
        # Inbox inserts go through their own engine where the database allows it (PostgreSQL:
        # autocommit, no ping per checkout); on SQLite it is the same engine, since a second
        # one would open a second in-memory database.
        self.intake_engine: Engine = (
            make_intake_engine(url, self.settings) if self.engine.dialect.name != "sqlite" else self.engine
        )
        self.inbox = Inbox(self)
        self.outbox = Outbox(self)
        self.timers = Timers(self)
        self.cursors = Cursors(self)
        self.snapshots = Snapshots(self)
        self.audit = Audit(self)
        self.plans = Plans(self)
        try:
            if apply_migrations:
                migrate(self.engine)
            else:
                ping(self.engine)
        except DBAPIError as exc:
            self.close()
            raise DatabaseUnavailable(database_problem(exc, url)) from exc

    @classmethod
    def for_config(cls, storage: Mapping[str, Any], *, apply_migrations: bool | None = None) -> Store:
        """The store a config's ``storage`` section describes (migrating as it says, unless told)."""
        migrating = storage.get("apply_migrations", True) if apply_migrations is None else apply_migrations
        return cls(storage["url"], apply_migrations=migrating, settings=DatabaseSettings.from_storage(storage))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()
        if self.intake_engine is not self.engine:
            self.intake_engine.dispose()

    def claim(
        self,
        model: type[Row],
        statuses: Sequence[str],
        now: datetime,
        lease: timedelta,
        limit: int,
        owner: str,
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
