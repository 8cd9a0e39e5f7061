"""The outbox: one row per intended CRM write, unique by its idempotency key, moved from pending
through sending to done (or a dead letter) only here."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from connector.storage.audit import DEAD_LETTER, DISCARDED, REPLAYED, Audit, decided
from connector.storage.inbox import new_correlation_id
from connector.storage.models import AuditRow, OutboxRow
from domain import Command, OutboxStatus, command_from_payload
from domain.keys import decided_audit_key, done_audit_key
from domain.statuses import OUTBOX_DUE

if TYPE_CHECKING:
    from connector.storage.store import Store


class Outbox:
    """Queues writes, leases them to dispatchers and records how each try ended."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def keys_among(session: Session, keys: Collection[str]) -> set[str]:
        """Which of ``keys`` were queued (one query)."""
        if not keys:
            return set()
        return set(session.scalars(select(OutboxRow.idempotency_key).where(OutboxRow.idempotency_key.in_(keys))))

    @staticmethod
    def stage(
        session: Session,
        *,
        key: str,
        crm: str,
        command: Command,
        rule: str,
        now: datetime,
        trigger: str,
        audit_crm: str | None = None,
        audit_message: str | None = None,
        audit_detail: dict[str, Any] | None = None,
        inbox_id: int | None = None,
        correlation_id: str | None = None,
    ) -> bool:
        """Queue a write for ``crm`` in the caller's transaction and audit the decision; False
        when the same key was decided before (the same write is never queued twice)."""
        if session.scalar(select(OutboxRow.id).where(OutboxRow.idempotency_key == key)) is not None:
            return False
        correlation = correlation_id or new_correlation_id()
        payload = command.to_payload()
        session.add(
            OutboxRow(
                idempotency_key=key,
                crm=crm,
                deal_id=command.deal_id or None,
                rule=rule,
                command=command.kind,
                payload=payload,
                status=OutboxStatus.PENDING,
                attempts=0,
                next_try_at=now,
                inbox_id=inbox_id,
                correlation_id=correlation,
                created_at=now,
                updated_at=now,
            )
        )
        Audit.record(
            session,
            at=now,
            crm=audit_crm or crm,
            deal_id=command.deal_id or None,
            rule=rule,
            trigger=trigger,
            action=decided(command.kind),
            message=audit_message if audit_message is not None else command.describe(),
            detail=audit_detail if audit_detail is not None else payload,
            correlation_id=correlation_id,
            key=decided_audit_key(key),
        )
        return True

    def claim(self, now: datetime, lease: timedelta, limit: int, owner: str) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows (pending, or sending since a crash) to ``owner``."""
        return self.store.claim(OutboxRow, OUTBOX_DUE, now, lease, limit, owner)

    def reload(self, row_id: int, owner: str) -> OutboxRow | None:
        """The row as stored now, if it is still ``owner``'s to carry out."""
        with self.store.sessions() as session:
            live = session.get(OutboxRow, row_id)
            if live is None or live.status not in OUTBOX_DUE or live.claimed_by != owner:
                return None
            session.expunge(live)
            return live

    def begin_batch(self, row_ids: Sequence[int], owner: str, now: datetime) -> tuple[list[OutboxRow], list[OutboxRow]]:
        """Start a batched call over the rows still ``owner``'s, in one transaction: the rows
        never tried are committed "sending" at once (first list); rows with earlier tries are
        returned as they are (second list) for the caller to look for their effect first."""
        wanted = list(row_ids)
        with self.store.sessions() as session, session.begin():
            live = {
                row.id: row
                for row in session.scalars(
                    select(OutboxRow).where(
                        OutboxRow.id.in_(wanted),
                        OutboxRow.status.in_(list(OUTBOX_DUE)),
                        OutboxRow.claimed_by == owner,
                    )
                )
            }
            fresh, tried = [], []
            for row_id in wanted:
                row = live.get(row_id)
                if row is None:
                    continue
                if row.status == OutboxStatus.PENDING and row.attempts == 0:
                    row.status, row.attempts, row.updated_at = OutboxStatus.SENDING, 1, now
                    fresh.append(row)
                else:
                    tried.append(row)
            session.flush()
            session.expunge_all()
        return fresh, tried

    def postpone(self, row: OutboxRow, until: datetime) -> None:
        """Leave the row for a later look, released from its lease."""
        with self.store.sessions() as session, session.begin():
            live = self._get(session, row)
            live.next_try_at, live.claimed_until = until, None

    def mark_sending(self, row: OutboxRow, now: datetime) -> None:
        """Committed before the CRM call: a crash after it leaves a row that may have landed."""
        with self.store.sessions() as session, session.begin():
            live = self._get(session, row)
            live.status, live.attempts, live.updated_at = OutboxStatus.SENDING, live.attempts + 1, now
        row.status, row.attempts = OutboxStatus.SENDING, row.attempts + 1

    def mark_sending_many(self, rows: Sequence[OutboxRow], now: datetime) -> None:
        """``mark_sending`` for the rows of one batched call, in one transaction: every row of
        the batch is visibly "sending" before any of them is sent."""
        with self.store.sessions() as session, session.begin():
            live_rows = {
                live.id: live
                for live in session.scalars(select(OutboxRow).where(OutboxRow.id.in_([row.id for row in rows])))
            }
            for row in rows:
                live = live_rows[row.id]
                live.status, live.attempts, live.updated_at = OutboxStatus.SENDING, live.attempts + 1, now
        for row in rows:
            row.status, row.attempts = OutboxStatus.SENDING, row.attempts + 1

    def mark_done_many(self, done: Sequence[tuple[OutboxRow, str | None, bool]], now: datetime) -> None:
        """``mark_done`` for several rows ``(row, remote_id, reconciled)`` in one transaction,
        as two bulk statements (the rows' update and their audit lines) instead of one per row."""
        keys = {row.id: done_audit_key(row.idempotency_key) for row, _, _ in done}
        with self.store.sessions() as session, session.begin():
            audited = set(session.scalars(select(AuditRow.key).where(AuditRow.key.in_(list(keys.values())))))
            session.execute(
                update(OutboxRow),
                [
                    {
                        "id": row.id,
                        "status": OutboxStatus.DONE,
                        "remote_id": remote_id,
                        "done_at": now,
                        "updated_at": now,
                        "claimed_until": None,
                        "last_error": None,
                    }
                    for row, remote_id, _ in done
                ],
            )
            lines = [
                {
                    "at": now,
                    "crm": row.crm,
                    "deal_id": row.deal_id,
                    "rule": row.rule,
                    "trigger": None,
                    "action": row.command,
                    "message": _done_message(row, remote_id, reconciled),
                    "detail": {"remote_id": remote_id, "outbox_id": row.id, "reconciled": reconciled},
                    "correlation_id": row.correlation_id,
                    "key": keys[row.id],
                }
                for row, remote_id, reconciled in done
                if keys[row.id] not in audited
            ]
            if lines:
                session.execute(insert(AuditRow), lines)

    def mark_done(self, row: OutboxRow, *, remote_id: str | None, reconciled: bool, now: datetime) -> None:
        """The write took effect (now, or found from an earlier try): done, and audited once."""
        with self.store.sessions() as session, session.begin():
            self._record_done(session, row, remote_id=remote_id, reconciled=reconciled, now=now)

    def _record_done(
        self,
        session: Session,
        row: OutboxRow,
        *,
        remote_id: str | None,
        reconciled: bool,
        now: datetime,
    ) -> None:
        live = self._get(session, row)
        live.status, live.remote_id, live.done_at, live.updated_at = OutboxStatus.DONE, remote_id, now, now
        live.claimed_until, live.last_error = None, None
        Audit.record(
            session,
            at=now,
            crm=row.crm,
            deal_id=row.deal_id,
            rule=row.rule,
            action=row.command,
            message=_done_message(row, remote_id, reconciled),
            detail={"remote_id": remote_id, "outbox_id": row.id, "reconciled": reconciled},
            correlation_id=row.correlation_id,
            key=done_audit_key(row.idempotency_key),
        )

    def mark_failed(
        self,
        row: OutboxRow,
        error: str,
        *,
        may_have_landed: bool,
        fatal: bool,
        max_attempts: int,
        retry_in: Callable[[int], float],
        now: datetime,
    ) -> bool:
        """A try failed: back off (``retry_in(attempts)`` seconds) or, when ``fatal`` or out of
        attempts, make it a dead letter (audited). True when it became one.

        A write that ``may_have_landed`` stays "sending", so the next try looks for it first.
        """
        with self.store.sessions() as session, session.begin():
            live = self._get(session, row)
            if live.status == OutboxStatus.PENDING and live.attempts == row.attempts:
                live.attempts += 1  # failed before the write was attempted (e.g. reconciling)
            if live.status == OutboxStatus.SENDING and not may_have_landed:
                live.status = OutboxStatus.PENDING  # refused or never sent: it did not land
            live.last_error = error[:2000]
            live.claimed_until = None
            live.updated_at = now
            if fatal or live.attempts >= max_attempts:
                live.status = OutboxStatus.DEAD
                Audit.record(
                    session,
                    at=now,
                    crm=row.crm,
                    deal_id=row.deal_id,
                    rule=row.rule,
                    action=DEAD_LETTER,
                    message=f"{row.command} gave up after {live.attempts} tries: {error}",
                    correlation_id=row.correlation_id,
                )
                return True
            live.next_try_at = now + timedelta(seconds=retry_in(live.attempts))
            return False

    @staticmethod
    def _dead_letters(
        session: Session, ids: Sequence[int] | None, crm: str | None, rule: str | None
    ) -> list[OutboxRow]:
        query = select(OutboxRow).where(OutboxRow.status == OutboxStatus.DEAD)
        if ids:
            query = query.where(OutboxRow.id.in_(list(ids)))
        if crm:
            query = query.where(OutboxRow.crm == crm)
        if rule:
            query = query.where(OutboxRow.rule == rule)
        return list(session.scalars(query.order_by(OutboxRow.id)))

    def replay_dead(
        self, now: datetime, *, ids: Sequence[int] | None = None, crm: str | None = None, rule: str | None = None
    ) -> list[int]:
        """Put chosen dead letters back in the queue; returns their ids."""
        with self.store.sessions() as session, session.begin():
            chosen = self._dead_letters(session, ids, crm, rule)
            for row in chosen:
                # attempts = 1: a dead write may have landed after all, so the dispatcher looks
                # for it by its marker first; then the row has its retries again.
                row.status, row.next_try_at, row.claimed_until, row.updated_at = OutboxStatus.PENDING, now, None, now
                row.attempts = 1
                _record_dead_letter(session, row, now, REPLAYED, "queued again")
            return [r.id for r in chosen]

    def discard_dead(
        self,
        now: datetime,
        *,
        reason: str,
        by: str,
        ids: Sequence[int] | None = None,
        crm: str | None = None,
        rule: str | None = None,
    ) -> list[int]:
        """Give up on chosen dead letters for good (a cause that cannot be fixed, such as a
        deleted user); each is kept with who discarded it and why. Returns their ids."""
        with self.store.sessions() as session, session.begin():
            chosen = self._dead_letters(session, ids, crm, rule)
            for row in chosen:
                row.status, row.claimed_until, row.updated_at, row.done_at = OutboxStatus.DISCARDED, None, now, now
                _record_dead_letter(session, row, now, DISCARDED, f"discarded by {by}: {reason}")
            return [r.id for r in chosen]

    @staticmethod
    def recent(
        session: Session, crm: str, command: str, since: datetime, *, excluding_rule: str
    ) -> list[tuple[dict[str, Any], datetime]]:
        """(payload, created) of the writes of one kind queued for ``crm`` since ``since``."""
        return [
            (row.payload, row.created_at)
            for row in session.scalars(
                select(OutboxRow).where(
                    OutboxRow.crm == crm,
                    OutboxRow.command == command,
                    OutboxRow.created_at >= since,
                    OutboxRow.rule != excluding_rule,
                )
            )
        ]

    @staticmethod
    def _get(session: Session, row: OutboxRow) -> OutboxRow:
        live = session.get(OutboxRow, row.id)
        assert live is not None, f"outbox row {row.id} vanished"
        return live


def _done_message(row: OutboxRow, remote_id: str | None, reconciled: bool) -> str:
    how = "found earlier write" if reconciled else "written"
    return f"{how}: {command_of(row).describe()} (remote id {remote_id})"


def _record_dead_letter(session: Session, row: OutboxRow, now: datetime, action: str, what: str) -> None:
    """The audit line of an operator's decision on a dead letter, with its last error."""
    Audit.record(
        session,
        at=now,
        crm=row.crm,
        deal_id=row.deal_id,
        rule=row.rule,
        action=action,
        message=f"dead letter {row.id} ({row.command}) {what}; last error: {(row.last_error or '')[:200]}",
        correlation_id=row.correlation_id,
    )


def command_of(row: OutboxRow) -> Command:
    """The command an outbox row carries."""
    return command_from_payload(row.command, row.payload)
