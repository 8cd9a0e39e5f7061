"""Run one configured report: figures per user from the connector's records, written as tasks."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from connector.storage.outbox import Outbox
from connector.storage.snapshots import Snapshots
from connector.storage.store import Store
from domain import CreateTask, Event, EventKind, EventSource
from domain.keys import report_rule, report_run_key, report_task_key
from rules.calendar import WorkCalendar
from rules.model import RuleContext
from rules.reports import Figures, ReportDef, day_figures

log = logging.getLogger(__name__)


def run_report(store: Store, report: ReportDef, now: datetime, calendar: WorkCalendar) -> int:
    """Queue the report's tasks for the day of ``now``; returns how many were queued (a run
    repeated the same day queues nothing: the key holds the day)."""
    tz = calendar.tz
    day = now.astimezone(tz).date()
    probe = Event(
        crm=report.crm,
        kind=EventKind.SCHEDULE,
        deal_id=None,
        occurred_at=now,
        dedup_key=report_run_key(report.name, day),
        source=EventSource.SCHEDULE,
    )
    rule = report_rule(report.name)
    with store.sessions() as session, session.begin():
        snapshots = []
        for deal, data in Snapshots.known(session, report.crm):
            if report.condition is not None and not report.condition(
                RuleContext(deal=deal, event=probe, now=now, triggers=frozenset(), calendar=calendar)
            ):
                continue
            snapshots.append({**data, "id": deal.id})
        since = now - timedelta(days=2)
        tasks = [
            {**payload, "at": created}
            for payload, created in Outbox.recent(session, report.crm, CreateTask.kind, since, excluding_rule=rule)
        ]
        figures = day_figures(snapshots, tasks, day, tz)
        to = report.to or "responsible"
        if to != "responsible":
            total = Figures()
            for f in figures.values():
                for key, value in f.as_dict().items():
                    setattr(total, key, getattr(total, key) + value)
            figures = {to: total}
        queued = 0
        due = calendar.add(now, report.due) if report.due else None
        for user, f in sorted(figures.items()):
            variables = {"now": now, "day": day, "user": user, "stats": f.as_dict()}
            task = CreateTask(
                "",
                title=report.title.render(variables),
                description=report.text.render(variables),
                responsible_id=user,
                deadline=due,
            )
            if Outbox.stage(
                session,
                key=report_task_key(report.name, report.crm, day, user),
                crm=report.crm,
                command=task,
                rule=rule,
                now=now,
                trigger=str(EventKind.SCHEDULE),
                audit_message=f"report for user {user}",
                audit_detail=f.as_dict() | {"won_amount": str(f.won_amount), "open_amount": str(f.open_amount)},
            ):
                queued += 1
    log.info("report run name=%s day=%s queued=%d", report.name, day, queued)
    return queued
