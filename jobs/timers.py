"""The deadline scan: due reminders and breaches become inbox events.

One indexed query (status, fire_at) finds what is due however many deadlines are open;
each due timer is advanced and its event stored in the same transaction, so a crash
between the two cannot fire a phase twice or lose it. The worker then runs the rules on
the event (``deadline.reminder`` / ``deadline.breached``) like on any other.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from connector.storage.models import InboxRow, TimerRow
from connector.storage.store import Store, new_correlation_id
from domain import EventKind, EventSource, InboxStatus
from domain.keys import timer_event_key
from domain.statuses import TIMER_RUNNING, DeadlinePhase, TimerStatus

log = logging.getLogger(__name__)


def fire_due_timers(store: Store, now: datetime, *, limit: int = 500) -> int:
    """Turn every timer due at ``now`` into an event; returns how many fired."""
    fired = 0
    with store.sessions() as session, session.begin():
        query = (
            select(TimerRow)
            .where(TimerRow.status.in_(TIMER_RUNNING), TimerRow.fire_at <= now)
            .order_by(TimerRow.fire_at)
            .limit(limit)
        )
        if store.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)  # several schedulers never fire one twice
        for timer in session.scalars(query):
            # A reminder found only after the due moment (the connector was down) is moot.
            reminder = timer.status == TimerStatus.OPEN and timer.fire_at < timer.due_at and now < timer.due_at
            phase = DeadlinePhase.REMINDER if reminder else DeadlinePhase.BREACHED
            data = {
                "deadline": timer.name,
                "phase": phase,
                "due_at": timer.due_at.isoformat(),
                "responsible_id": (timer.payload or {}).get("responsible_id"),
                "rule": timer.rule,
            }
            session.add(
                InboxRow(
                    crm=timer.crm,
                    dedup_key=timer_event_key(timer.key, phase, timer.due_at),
                    kind=str(EventKind.TIMER_DUE),
                    source=EventSource.TIMER,
                    deal_id=timer.deal_id,
                    occurred_at=timer.fire_at,
                    received_at=now,
                    payload={"raw": {}, "previous": None, "data": data},
                    status=InboxStatus.NEW,
                    attempts=0,
                    next_try_at=now,
                    correlation_id=new_correlation_id(),
                )
            )
            if reminder:
                timer.status, timer.fire_at = TimerStatus.REMINDED, timer.due_at
            else:
                timer.status = TimerStatus.BREACHED
            timer.updated_at = now
            fired += 1
    if fired:
        log.info("deadlines due fired=%d", fired)
    return fired
