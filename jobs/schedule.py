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

from sqlalchemy import select

from connector.storage.models import DealSnapshotRow, InboxRow
from connector.storage.store import Store, new_correlation_id
from domain import Deal, Event, EventKind, EventSource, InboxStatus
from domain.keys import schedule_key, schedule_run_key, schedule_slot
from rules.calendar import WorkCalendar
from rules.model import Rule, RuleContext

log = logging.getLogger(__name__)


def _deal_from_snapshot(crm: str, deal_id: str, data: dict) -> Deal:  # type: ignore[type-arg]
    return Deal(
        crm=crm,
        id=deal_id,
        title=data.get("title") or "",
        stage=data.get("stage") or "",
        stage_semantic=data.get("stage_semantic") or "open",
        pipeline=data.get("pipeline") or "",
        responsible_id=data.get("responsible_id"),
        fields=dict(data.get("fields") or {}),
    )


def run_scheduled_rule(store: Store, rule: Rule, now: datetime, calendar: WorkCalendar) -> int:
    """Queue this run of ``rule`` for every candidate deal; returns how many were queued."""
    slot = schedule_slot(now)
    probe_event = Event(
        crm=rule.crm,
        kind=EventKind.SCHEDULE,
        deal_id=None,
        occurred_at=now,
        dedup_key=schedule_run_key(rule.name, slot),
        source=EventSource.SCHEDULE,
        data={"schedule": rule.name, "slot": slot},
    )
    queued = 0
    with store.sessions() as session, session.begin():
        prefix = schedule_key(rule.name, slot, "")
        done = set(
            session.scalars(
                select(InboxRow.deal_id).where(InboxRow.crm == rule.crm, InboxRow.dedup_key.startswith(prefix))
            )
        )
        for snap in session.scalars(select(DealSnapshotRow).where(DealSnapshotRow.crm == rule.crm)):
            if snap.deal_id in done:
                continue
            deal = _deal_from_snapshot(rule.crm, snap.deal_id, snap.data)
            ctx = RuleContext(
                deal=deal, event=probe_event, now=now, triggers=frozenset({"schedule"}), calendar=calendar
            )
            try:
                if not rule.condition(ctx):
                    continue
            except Exception:  # noqa: BLE001 - a stale snapshot may lack what the condition reads
                pass  # let the worker decide on the fresh deal
            session.add(
                InboxRow(
                    crm=rule.crm,
                    dedup_key=schedule_key(rule.name, slot, snap.deal_id),
                    kind=str(EventKind.SCHEDULE),
                    source=EventSource.SCHEDULE,
                    deal_id=snap.deal_id,
                    occurred_at=now,
                    received_at=now,
                    payload={"raw": {}, "previous": None, "data": {"schedule": rule.name, "slot": slot}},
                    status=InboxStatus.NEW,
                    attempts=0,
                    next_try_at=now,
                    correlation_id=new_correlation_id(),
                )
            )
            queued += 1
    log.info("scheduled rule run rule=%s slot=%s queued=%d", rule.name, slot, queued)
    return queued
