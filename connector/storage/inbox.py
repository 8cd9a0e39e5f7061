"""The inbox: one row per delivery, polled change, due deadline or scheduled run, stored before
it is acknowledged and unique by (CRM, dedup key)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Engine, Insert, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from connector.storage.models import InboxRow
from domain import Event, InboxStatus
from domain.statuses import INBOX_REPLAYABLE

if TYPE_CHECKING:
    from connector.storage.store import Store


def new_correlation_id() -> str:
    """Ties a delivery to the rules it fired and the writes they made (in logs and audit)."""
    return os.urandom(8).hex()


def row_values(event: Event, received_at: datetime, correlation_id: str | None = None) -> dict[str, Any]:
    """An event as a new inbox row's columns: the only place inbox rows are built."""
    return {
        "crm": event.crm,
        "dedup_key": event.dedup_key,
        "kind": str(event.kind),
        "source": str(event.source),
        "deal_id": event.deal_id,
        "occurred_at": event.occurred_at,
        "received_at": received_at,
        "payload": {"raw": event.raw, "previous": event.previous, "data": event.data},
        "status": InboxStatus.NEW,
        "attempts": 0,
        "next_try_at": received_at,
        "correlation_id": correlation_id or new_correlation_id(),
    }


def _insert_statement(dialect: str) -> Insert:
    """The insert that skips a (crm, dedup_key) already stored and returns the new id."""
    table = cast(Table, InboxRow.__table__)
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table)
    elif dialect == "sqlite":  # ON CONFLICT … RETURNING needs SQLite 3.35 (2021)
        stmt = sqlite.insert(table)
    else:
        raise ValueError(f"unsupported database {dialect!r}: PostgreSQL or SQLite")
    insert: Insert = stmt.on_conflict_do_nothing(index_elements=["crm", "dedup_key"]).returning(table.c.id)
    return insert


_GROUP_COLUMNS = (
    "crm",
    "dedup_key",
    "kind",
    "source",
    "deal_id",
    "occurred_at",
    "received_at",
    "payload",
    "status",
    "attempts",
    "next_try_at",
    "correlation_id",
)


class _PostgresGroupInsert:
    """A group's rows in one ``INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING RETURNING`` on
    the intake engine's psycopg connection, without SQLAlchemy's statement machinery.

    The statement for each group size is built once and psycopg prepares it on the server
    after a few uses, so a group costs the parameters' conversion and one round trip. The
    connection is the intake engine's (its timeouts, keepalives and autocommit: the one
    statement is committed before ``execute`` returns) and goes back to the pool after
    each group. A connection that fails is invalidated and the error raised as SQLAlchemy
    would raise it, so ``Inbox.add_many`` retries a dropped connection once, as before.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._statements: dict[int, str] = {}
        columns = ", ".join(_GROUP_COLUMNS)
        self._head = f"INSERT INTO {InboxRow.__tablename__} ({columns}) VALUES "
        self._row = "(" + ", ".join(["%s"] * len(_GROUP_COLUMNS)) + ")"
        self._tail = " ON CONFLICT (crm, dedup_key) DO NOTHING RETURNING crm, dedup_key"

    def _statement(self, size: int) -> str:
        statement = self._statements.get(size)
        if statement is None:
            statement = self._statements[size] = self._head + ", ".join([self._row] * size) + self._tail
        return statement

    def insert(self, rows: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
        params: list[Any] = []
        for row in rows:
            for column in _GROUP_COLUMNS:
                value = row[column]
                # The column is JSON: text of it, as SQLAlchemy's JSON type would write it.
                params.append(json.dumps(value) if column == "payload" else value)
        statement = self._statement(len(rows))
        pooled = self._engine.raw_connection()
        try:
            conn: Any = pooled.driver_connection
            with conn.cursor() as cursor:
                cursor.execute(statement, params)
                return {(crm, key) for crm, key in cursor.fetchall()}
        except self._engine.dialect.loaded_dbapi.Error as exc:
            gone = bool(pooled.dbapi_connection is None or conn.closed or conn.broken)
            if gone:
                pooled.invalidate(exc)
            raise DBAPIError.instance(
                statement, None, exc, self._engine.dialect.loaded_dbapi.Error, connection_invalidated=gone
            ) from exc
        finally:
            pooled.close()


class _SqliteGroupInsert:
    """A group's rows in one ``INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING RETURNING`` on
    a pooled sqlite3 connection, without SQLAlchemy's statement machinery.

    Values are converted as the ORM's column types would store them (UTC text timestamps,
    JSON text), so the worker reads them back unchanged. The connection's commit is synced
    (``synchronous=FULL``, set outside the transaction as SQLite requires, NORMAL again
    after): an acknowledged delivery is on disk. ``BEGIN IMMEDIATE`` takes the write lock
    up front, as the engine's own transactions do.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._statements: dict[int, str] = {}
        columns = ", ".join(_GROUP_COLUMNS)
        self._head = f"INSERT INTO {InboxRow.__tablename__} ({columns}) VALUES "
        self._row = "(" + ", ".join(["?"] * len(_GROUP_COLUMNS)) + ")"
        self._tail = " ON CONFLICT (crm, dedup_key) DO NOTHING RETURNING crm, dedup_key"

    def _statement(self, size: int) -> str:
        statement = self._statements.get(size)
        if statement is None:
            statement = self._statements[size] = self._head + ", ".join([self._row] * size) + self._tail
        return statement

    @staticmethod
    def _params(rows: Sequence[dict[str, Any]]) -> list[Any]:
        params: list[Any] = []
        for row in rows:
            received = _sqlite_time(row["received_at"])
            params += (
                row["crm"],
                row["dedup_key"],
                row["kind"],
                row["source"],
                row["deal_id"],
                _sqlite_time(row["occurred_at"]),
                received,
                json.dumps(row["payload"]),
                str(row["status"]),
                row["attempts"],
                received if row["next_try_at"] is row["received_at"] else _sqlite_time(row["next_try_at"]),
                row["correlation_id"],
            )
        return params

    def insert(self, rows: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
        params = self._params(rows)
        statement = self._statement(len(rows))
        pooled = self._engine.raw_connection()
        try:
            conn: Any = pooled.driver_connection
            conn.execute("PRAGMA synchronous=FULL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    inserted = {(crm, key) for crm, key in conn.execute(statement, params)}
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return inserted
            finally:
                conn.execute("PRAGMA synchronous=NORMAL")
        except self._engine.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(statement, None, exc, self._engine.dialect.loaded_dbapi.Error) from exc
        finally:
            pooled.close()


def _sqlite_time(value: datetime) -> str:
    """A datetime as ``UtcDateTime`` stores it on SQLite: naive UTC, SQLAlchemy's text format."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class Inbox:
    """Adds events, leases them to workers and records how their processing ended."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # SQLite has one writer at a time and its busy handler sleeps 1, 2, 5, 10… ms when a
        # writer waits: queueing this process's inbox writes on a lock hands the write lock
        # over at once instead. PostgreSQL takes concurrent inserts, so no lock there.
        self._insert_lock: threading.Lock | nullcontext[None] = (
            threading.Lock() if store.dialect == "sqlite" else nullcontext()
        )
        self._insert = _insert_statement(store.dialect)
        self._group: _PostgresGroupInsert | _SqliteGroupInsert = (
            _PostgresGroupInsert(store.intake_engine)
            if store.dialect == "postgresql"
            else _SqliteGroupInsert(store.intake_engine)
        )

    def add(self, event: Event, received_at: datetime, correlation_id: str | None = None) -> bool:
        """Store one event durably; False when the same delivery was stored before.

        One statement, ``INSERT … ON CONFLICT (crm, dedup_key) DO NOTHING RETURNING id``:
        a row back means it was inserted, none means a twin was there first (a concurrent
        twin included: the unique constraint decides, no pre-check ``SELECT`` needed). On
        PostgreSQL it runs in autocommit, so the answer arrives only after the commit; on
        SQLite the transaction is committed before this returns. Either way True means the
        row is durable. Database errors propagate (the intake answers 503).
        """
        params = row_values(event, received_at, correlation_id)
        for attempt in (1, 2):
            try:
                with self._insert_lock, self.store.intake_engine.begin() as conn:
                    return conn.execute(self._insert, params).first() is not None
            except DBAPIError as exc:
                # Without a ping per checkout, a connection the server dropped (restart,
                # idle timeout) fails on first use; SQLAlchemy has then discarded it and the
                # pool's older ones. The statement is idempotent (ON CONFLICT), so one retry
                # on a fresh connection is safe: at worst a twin reports a duplicate.
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    def add_many(self, rows: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
        """Store many new rows (``row_values``) in one statement and one transaction; returns
        the (CRM, dedup key) of those inserted (the others were stored before).

        Committed before it returns, as ``add``: a group commit's one durable write. The
        keys must be distinct within ``rows`` (the caller settles twins of one group).
        """
        if not rows:
            return set()
        for attempt in (1, 2):
            try:
                with self._insert_lock:
                    return self._group.insert(rows)
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:  # as in ``add``: one retry, idempotent
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def stage(session: Session, event: Event, received_at: datetime) -> None:
        """Add an event inside the caller's transaction (a producer that moves its own rows in
        the same commit; its keys are unique by construction)."""
        session.add(InboxRow(**row_values(event, received_at)))

    @staticmethod
    def deals_with_key_prefix(session: Session, crm: str, prefix: str) -> set[str | None]:
        """The deals of ``crm`` whose events' keys start with ``prefix`` (a run's, say)."""
        return set(
            session.scalars(select(InboxRow.deal_id).where(InboxRow.crm == crm, InboxRow.dedup_key.startswith(prefix)))
        )

    def claim(self, now: datetime, lease: timedelta, limit: int, owner: str) -> list[InboxRow]:
        """Lease up to ``limit`` new rows to ``owner``."""
        return self.store.claim(InboxRow, [InboxStatus.NEW], now, lease, limit, owner)

    @staticmethod
    def lock_new(session: Session, row_id: int) -> InboxRow | None:
        """The row, locked, if it is still waiting (a lapsed lease may have let another worker in).

        A row another session holds locked is skipped, not waited for: that worker is on it.
        """
        live = session.get(InboxRow, row_id, with_for_update={"skip_locked": True})
        return live if live is not None and live.status == InboxStatus.NEW else None

    @staticmethod
    def finish(row: InboxRow, now: datetime, note: str | None) -> None:
        """Mark a locked row processed; ``note`` says why nothing was done, if so."""
        row.status, row.processed_at, row.claimed_until, row.last_error = InboxStatus.DONE, now, None, note

    def fail(self, rows: Iterable[InboxRow], error: str, *, final: bool, now: datetime) -> None:
        """Give the rows back for a later try, backing off (up to ten minutes between tries), or
        mark them failed when ``final``. A transient failure never ends a row: its delivery
        was acknowledged, so only an operator may give it up."""
        self._settle(rows, error, now, InboxStatus.FAILED if final else None)

    def park(self, rows: Iterable[InboxRow], reason: str, now: datetime) -> None:
        """Set rows aside that the CRM will not let us process (a deal we may not read):
        they wait for `connector replay --inbox`."""
        self._settle(rows, reason, now, InboxStatus.PARKED)

    def _settle(self, rows: Iterable[InboxRow], error: str, now: datetime, status: InboxStatus | None) -> None:
        with self.store.sessions() as session, session.begin():
            for r in rows:
                live = session.get(InboxRow, r.id)
                if live is None or live.status != InboxStatus.NEW:
                    continue
                live.attempts += 1
                live.last_error = error[:2000]
                live.claimed_until = None
                if status is not None:
                    live.status = status
                else:
                    live.next_try_at = now + timedelta(seconds=min(600, 2 ** min(live.attempts, 10)))

    def hold(self, rows: Iterable[InboxRow], reason: str, until: datetime) -> None:
        """Give rows back untried until ``until`` (their CRM is paused): no attempt is counted."""
        with self.store.sessions() as session, session.begin():
            for r in rows:
                live = session.get(InboxRow, r.id)
                if live is None or live.status != InboxStatus.NEW:
                    continue
                live.last_error = reason[:2000]
                live.claimed_until = None
                live.next_try_at = max(live.next_try_at, until)

    def requeue(
        self,
        now: datetime,
        *,
        ids: Sequence[int] | None = None,
        crm: str | None = None,
        deal_id: str | None = None,
        keys: Sequence[str] | None = None,
        statuses: Sequence[str] = INBOX_REPLAYABLE,
    ) -> list[int]:
        """Queue chosen rows in ``statuses`` again as new (attempts from zero); their ids."""
        query = select(InboxRow).where(InboxRow.status.in_(list(statuses)))
        if ids:
            query = query.where(InboxRow.id.in_(list(ids)))
        if crm:
            query = query.where(InboxRow.crm == crm)
        if deal_id:
            query = query.where(InboxRow.deal_id == deal_id)
        if keys is not None:
            query = query.where(InboxRow.dedup_key.in_(list(keys)))
        with self.store.sessions() as session, session.begin():
            rows = list(session.scalars(query.order_by(InboxRow.id)))
            for r in rows:
                r.status, r.attempts, r.next_try_at = InboxStatus.NEW, 0, now
                r.claimed_until = r.processed_at = None
            return [r.id for r in rows]

    def events_since(self, since: datetime, kinds: Sequence[str]) -> list[tuple[str, str | None, str, datetime]]:
        """(CRM, deal, kind, moment) of the stored events of these kinds since ``since``, in time order."""
        with self.store.sessions() as session:
            return [
                (r.crm, r.deal_id, r.kind, r.occurred_at)
                for r in session.scalars(
                    select(InboxRow)
                    .where(InboxRow.occurred_at >= since, InboxRow.kind.in_(list(kinds)))
                    .order_by(InboxRow.occurred_at)
                )
            ]
