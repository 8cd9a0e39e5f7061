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
from domain import EventKind

log = logging.getLogger(__name__)

OPEN_STATUSES = ("open", "reminded")


def fire_due_timers(store: Store, now: datetime, *, limit: int = 500) -> int:
    """Turn every timer due at ``now`` into an event; returns how many fired."""
    fired = 0
    with store.sessions() as session, session.begin():
        query = (
            select(TimerRow)
            .where(TimerRow.status.in_(OPEN_STATUSES), TimerRow.fire_at <= now)
            .order_by(TimerRow.fire_at)
            .limit(limit)
        )
        if store.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)  # several schedulers never fire one twice
        for timer in session.scalars(query):
            # A reminder found only after the due moment (the connector was down) is moot.
            reminder = timer.status == "open" and timer.fire_at < timer.due_at and now < timer.due_at
            phase = "reminder" if reminder else "breached"
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
                    dedup_key=f"timer:{timer.key}:{phase}:{timer.due_at.isoformat()}",
                    kind=str(EventKind.TIMER_DUE),
                    source="timer",
                    deal_id=timer.deal_id,
                    occurred_at=timer.fire_at,
                    received_at=now,
                    payload={"raw": {}, "previous": None, "data": data},
                    status="new",
                    attempts=0,
                    next_try_at=now,
                    correlation_id=new_correlation_id(),
                )
            )
            if reminder:
                timer.status, timer.fire_at = "reminded", timer.due_at
            else:
                timer.status = "breached"
            timer.updated_at = now
            fired += 1
    if fired:
        log.info("deadlines due fired=%d", fired)
    return fired
