"""Run recurring work (``recurring:``): the tasks of the schedule's latest occurrence, once.

The runtime calls this on the item's cron and once at start (a catch-up: an occurrence
missed while the connector was stopped is still made within ``catch_up``). Every task is
keyed by the occurrence and the person, so any number of runs make it once.
"""

from __future__ import annotations

import logging
from datetime import datetime

from connector.storage.audit import NOTE, Audit
from connector.storage.outbox import Outbox
from connector.storage.store import Store
from domain import EventKind
from rules.calendars import CalendarSet
from rules.org import Org
from rules.recurring import RecurringDef, latest_occurrence, plan_occurrence, recurring_rule

log = logging.getLogger(__name__)


def run_recurring(store: Store, item: RecurringDef, now: datetime, calendars: CalendarSet, org: Org) -> int:
    """Queue the tasks of ``item``'s latest occurrence at or before ``now``; returns how many
    were new (0 when that occurrence was already made, or none is within ``catch_up``)."""
    calendar = calendars.get(item.calendar)
    occurrence = latest_occurrence(item, now, calendar)
    if occurrence is None:
        return 0
    tasks, notes = plan_occurrence(item, occurrence, calendar, org)
    rule = recurring_rule(item.name)
    queued = 0
    with store.sessions() as session, session.begin():
        for planned in tasks:
            if Outbox.stage(
                session,
                key=planned.key,
                crm=item.crm,
                command=planned.task,
                rule=rule,
                now=now,
                trigger=str(EventKind.SCHEDULE),
                audit_message=f"recurring {item.name} at {occurrence:%Y-%m-%d %H:%M} for {planned.task.responsible_id}",
            ):
                queued += 1
        for index, note in enumerate(notes):  # once per occurrence, like its tasks
            Audit.record(
                session,
                at=now,
                crm=item.crm,
                rule=rule,
                trigger=str(EventKind.SCHEDULE),
                action=NOTE,
                message=f"recurring {item.name}: {note}",
                key=f"{rule}|{occurrence.isoformat()}|note|{index}",
            )
    log.info("recurring run name=%s occurrence=%s queued=%d", item.name, occurrence.isoformat(), queued)
    return queued
