"""The deadline scan: due reminders and breaches become inbox events.

One indexed query (status, fire_at) finds what is due however many deadlines are open;
each due timer is advanced and its event stored in the same transaction, so a crash
between the two cannot fire a phase twice or lose it. The worker then runs the rules on
the event (``deadline.reminder`` / ``deadline.breached``) like on any other.
"""

from __future__ import annotations

import logging
from datetime import datetime

from connector.storage.inbox import Inbox
from connector.storage.store import Store
from domain import Event, EventKind, EventSource
from domain.keys import timer_event_key

log = logging.getLogger(__name__)


def fire_due_timers(store: Store, now: datetime, *, limit: int = 500) -> int:
    """Turn every timer due at ``now`` into an event; returns how many fired."""
    fired = 0
    with store.sessions() as session, session.begin():
        for timer, phase in store.timers.due(session, now, limit):
            data = {
                "deadline": timer.name,
                "phase": str(phase),
                "due_at": timer.due_at.isoformat(),
                "responsible_id": (timer.payload or {}).get("responsible_id"),
                "rule": timer.rule,
            }
            event = Event(
                crm=timer.crm,
                kind=EventKind.TIMER_DUE,
                deal_id=timer.deal_id,
                occurred_at=timer.fire_at,
                dedup_key=timer_event_key(timer.key, phase, timer.due_at),
                source=EventSource.TIMER,
                data=data,
            )
            Inbox.stage(session, event, now)
            fired += 1
    if fired:
        log.info("deadlines due fired=%d", fired)
    return fired
