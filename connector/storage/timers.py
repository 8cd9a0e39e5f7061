"""Deadlines kept as timers (one per CRM, deal and deadline), and the breaches they record."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from connector.storage.models import BreachRow, TimerRow
from domain.keys import deadline_timer_key
from domain.statuses import TIMER_RUNNING, DeadlinePhase, TimerStatus

if TYPE_CHECKING:
    from connector.storage.store import Store


class Timers:
    """Starts, stops and fires deadlines; every change happens in the caller's transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def running(session: Session, crm: str, deal_id: str) -> list[TimerRow]:
        """The deal's deadlines still running."""
        return list(
            session.scalars(
                select(TimerRow).where(
                    TimerRow.crm == crm, TimerRow.deal_id == deal_id, TimerRow.status.in_(TIMER_RUNNING)
                )
            )
        )

    @staticmethod
    def start(
        session: Session,
        *,
        crm: str,
        deal_id: str,
        name: str,
        rule: str,
        due_at: datetime,
        remind_at: datetime | None,
        responsible_id: str | None,
        rearm: bool,
        now: datetime,
    ) -> TimerRow | None:
        """Arm the deadline; None when it is running already and this is no re-arm (the caller
        says so). A rule restarts it under its own name; a re-arm keeps the rule that started it."""
        key = deadline_timer_key(crm, deal_id, name)
        timer = session.scalar(select(TimerRow).where(TimerRow.key == key))
        if timer is not None and timer.status in TIMER_RUNNING and not rearm:
            return None
        if timer is None:
            timer = TimerRow(key=key, crm=crm, deal_id=deal_id, name=name, rule=rule, created_at=now)
            session.add(timer)
        elif not rearm:
            timer.rule = rule
        timer.due_at, timer.status, timer.updated_at = due_at, TimerStatus.OPEN, now
        timer.fire_at = min(remind_at, due_at) if remind_at else due_at
        timer.payload = {
            "responsible_id": responsible_id,
            "remind_at": remind_at.isoformat() if remind_at else None,
        }
        return timer

    @staticmethod
    def current(session: Session, crm: str, deal_id: str, name: str) -> TimerRow | None:
        """The deal's timer of this deadline, in whatever state."""
        return session.scalar(select(TimerRow).where(TimerRow.key == deadline_timer_key(crm, deal_id, name)))

    @staticmethod
    def stop(session: Session, *, crm: str, deal_id: str, name: str, met: bool, now: datetime) -> None:
        """Stop a running deadline: met (done) or called off (cancelled)."""
        session.execute(
            update(TimerRow)
            .where(TimerRow.key == deadline_timer_key(crm, deal_id, name), TimerRow.status.in_(TIMER_RUNNING))
            .values(status=TimerStatus.DONE if met else TimerStatus.CANCELLED, updated_at=now)
        )

    def due(self, session: Session, now: datetime, limit: int) -> Iterator[tuple[TimerRow, DeadlinePhase]]:
        """Every timer due at ``now`` with the phase that fell due, advanced as it is yielded:
        a reminder becomes "reminded" (and fires again at the due moment), a due moment
        "breached". One indexed query however many deadlines are open."""
        query = (
            select(TimerRow)
            .where(TimerRow.status.in_(TIMER_RUNNING), TimerRow.fire_at <= now)
            .order_by(TimerRow.fire_at)
            .limit(limit)
        )
        if self.store.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)  # several schedulers never fire one twice
        for timer in list(session.scalars(query)):
            # A reminder found only after the due moment (the connector was down) is moot.
            reminder = timer.status == TimerStatus.OPEN and timer.fire_at < timer.due_at and now < timer.due_at
            phase = DeadlinePhase.REMINDER if reminder else DeadlinePhase.BREACHED
            yield timer, phase
            if reminder:
                timer.status, timer.fire_at = TimerStatus.REMINDED, timer.due_at
            else:
                timer.status = TimerStatus.BREACHED
            timer.updated_at = now

    @staticmethod
    def record_breach(
        session: Session,
        *,
        crm: str,
        deal_id: str,
        deadline: str,
        due_at: datetime | None,
        responsible_id: str | None,
        rule: str,
        now: datetime,
    ) -> None:
        """Keep a missed deadline for the penalty report, once per deal, deadline and due moment."""
        exists = session.scalar(
            select(BreachRow.id).where(
                BreachRow.crm == crm,
                BreachRow.deal_id == deal_id,
                BreachRow.deadline == deadline,
                BreachRow.due_at == due_at,
            )
        )
        if exists is None:
            session.add(
                BreachRow(
                    crm=crm,
                    deal_id=deal_id,
                    deadline=deadline,
                    responsible_id=responsible_id,
                    due_at=due_at,
                    breached_at=now,
                    rule=rule,
                )
            )

    @staticmethod
    def breaches(session: Session, start: datetime, end: datetime) -> list[BreachRow]:
        """Breaches whose due moment falls in [start, end), oldest first (the penalty report)."""
        moment = BreachRow.due_at
        return list(
            session.scalars(
                select(BreachRow).where(moment >= start, moment < end).order_by(moment, BreachRow.deal_id)
            ).all()
        )
