"""Scheduled rules (``on: [schedule]``): one run becomes an event per candidate deal.

The candidates are the deals the connector knows (its snapshots), filtered by the rule's
condition on that last known state so that only likely matches cost a CRM read; the
worker reads each fresh and checks the condition again before acting. Each run has a
time slot in its dedup keys, so a run repeated (a restart, a second scheduler) adds
nothing twice.
"""

from __future__ import annotations

import logging
from datetime import datetime

from connector.storage.inbox import Inbox
from connector.storage.snapshots import Snapshots
from connector.storage.store import Store
from domain import Event, EventKind, EventSource
from domain.keys import schedule_key, schedule_run_key, schedule_slot
from rules.calendar import WorkCalendar
from rules.calendars import CalendarSet
from rules.engine import with_rule_calendar
from rules.model import Rule, RuleContext
from rules.org import Org

log = logging.getLogger(__name__)


def run_scheduled_rule(
    store: Store,
    rule: Rule,
    now: datetime,
    calendar: WorkCalendar,
    *,
    calendars: CalendarSet | None = None,
    org: Org | None = None,
) -> int:
    """Queue this run of ``rule`` for every candidate deal; returns how many were queued."""
    slot = schedule_slot(now)
    data = {"schedule": rule.name, "slot": slot}
    probe_event = Event(
        crm=rule.crm,
        kind=EventKind.SCHEDULE,
        deal_id=None,
        occurred_at=now,
        dedup_key=schedule_run_key(rule.name, slot),
        source=EventSource.SCHEDULE,
        data=data,
    )
    queued = 0
    with store.sessions() as session, session.begin():
        done = Inbox.deals_with_key_prefix(session, rule.crm, schedule_key(rule.name, slot, ""))
        for deal, _ in Snapshots.known(session, rule.crm):
            if deal.id in done:
                continue
            ctx = RuleContext(
                deal=deal,
                event=probe_event,
                now=now,
                triggers=frozenset({str(EventKind.SCHEDULE)}),
                calendar=calendar,
                calendars=calendars,
                org=org,
            )
            ctx = with_rule_calendar(rule, ctx)  # the calendar the worker will count on
            try:
                if not rule.condition(ctx):
                    continue
            except Exception:  # noqa: BLE001 - a stale snapshot may lack what the condition reads
                pass  # let the worker decide on the fresh deal
            event = Event(
                crm=rule.crm,
                kind=EventKind.SCHEDULE,
                deal_id=deal.id,
                occurred_at=now,
                dedup_key=schedule_key(rule.name, slot, deal.id),
                source=EventSource.SCHEDULE,
                data=dict(data),
            )
            Inbox.stage(session, event, now)
            queued += 1
    log.info("scheduled rule run rule=%s slot=%s queued=%d", rule.name, slot, queued)
    return queued
