"""Run one configured report: figures per user from the connector's records, written as tasks."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select

from connector.storage.models import DealSnapshotRow, OutboxRow
from connector.storage.store import Store, new_correlation_id
from domain import CreateTask, Deal, Event, EventKind, EventSource, OutboxStatus
from domain.keys import decided_audit_key, report_rule, report_run_key, report_task_key
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
    with store.sessions() as session, session.begin():
        snapshots = []
        for snap in session.scalars(select(DealSnapshotRow).where(DealSnapshotRow.crm == report.crm)):
            data = snap.data
            if report.condition is not None:
                deal = Deal(
                    crm=report.crm,
                    id=snap.deal_id,
                    title=data.get("title") or "",
                    stage=data.get("stage") or "",
                    stage_semantic=data.get("stage_semantic") or "open",
                    pipeline=data.get("pipeline") or "",
                    responsible_id=data.get("responsible_id"),
                    fields=dict(data.get("fields") or {}),
                )
                if not report.condition(
                    RuleContext(deal=deal, event=probe, now=now, triggers=frozenset(), calendar=calendar)
                ):
                    continue
            snapshots.append({**data, "id": snap.deal_id})
        since = now - timedelta(days=2)
        tasks = [
            {**row.payload, "at": row.created_at}
            for row in session.scalars(
                select(OutboxRow).where(
                    OutboxRow.crm == report.crm,
                    OutboxRow.command == CreateTask.kind,
                    OutboxRow.created_at >= since,
                    OutboxRow.rule != report_rule(report.name),
                )
            )
        ]
        figures = day_figures(snapshots, tasks, day, tz)
        if report.to != "responsible":
            total = Figures()
            for f in figures.values():
                for key, value in f.as_dict().items():
                    setattr(total, key, getattr(total, key) + value)
            figures = {report.to: total}
        queued = 0
        due = calendar.add(now, report.due) if report.due else None
        for user, f in sorted(figures.items()):
            key = report_task_key(report.name, report.crm, day, user)
            if session.scalar(select(OutboxRow.id).where(OutboxRow.idempotency_key == key)) is not None:
                continue
            variables = {"now": now, "day": day, "user": user, "stats": f.as_dict()}
            task = CreateTask(
                "",
                title=report.title.render(variables),
                description=report.text.render(variables),
                responsible_id=user,
                deadline=due,
            )
            session.add(
                OutboxRow(
                    idempotency_key=key,
                    crm=report.crm,
                    deal_id=None,
                    rule=report_rule(report.name),
                    command=task.kind,
                    payload=task.to_payload(),
                    status=OutboxStatus.PENDING,
                    attempts=0,
                    next_try_at=now,
                    correlation_id=new_correlation_id(),
                    created_at=now,
                    updated_at=now,
                )
            )
            Store.audit(
                session,
                at=now,
                crm=report.crm,
                deal_id=None,
                rule=report_rule(report.name),
                trigger="schedule",
                action="decided:create_task",
                message=f"report for user {user}",
                detail=f.as_dict() | {"won_amount": str(f.won_amount), "open_amount": str(f.open_amount)},
                key=decided_audit_key(key),
            )
            queued += 1
    log.info("report run name=%s day=%s queued=%d", report.name, day, queued)
    return queued
