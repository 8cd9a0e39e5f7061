"""Run one plan-vs-fact report: on its due day, the last period's figures from the CRM against
the plans, as tasks to the recipients, a CSV file and (with `channel:`) one message to the chat, all through the outbox.

Exactly once per period: the tasks' keys hold the period, the file is written only if it is
not there yet, and the period is remembered so later runs read nothing from the CRM.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from adapters.contracts import FactSource
from connector.storage.outbox import Outbox
from connector.storage.store import Store
from domain import CreateTask, EventKind, SendMessage
from domain.errors import AdapterError
from domain.facts import Fact
from domain.keys import report_rule, report_task_key
from rules.calendar import WorkCalendar
from rules.indicators import Indicator, deal_fields, with_deals
from rules.periods import Period, due_date, last_completed, last_working_day, period_of
from rules.plan_reports import FILE_COLUMNS, Row, file_rows, missed_by, plan_vs_fact, split_by_recipient, table, to_csv
from rules.plans import PlanBook, Teams
from rules.reports import ReportDef

log = logging.getLogger(__name__)

# How far back a report reads facts when it measures time between stages.
HISTORY_LOOKBACK = timedelta(days=180)


def period_window(period: Period, calendar: WorkCalendar) -> tuple[datetime, datetime]:
    """The period as UTC moments: from its first local midnight to the one after its last day."""
    start = datetime.combine(period.first, time(), tzinfo=calendar.tz)
    end = datetime.combine(period.last + timedelta(days=1), time(), tzinfo=calendar.tz)
    return start, end


def due_moment(period: Period, report: ReportDef, calendar: WorkCalendar) -> datetime:
    """The end of work on the day the report on ``period`` is due."""
    day = (last_working_day(period, calendar) if report.current else None) or due_date(period, report.by, calendar)
    return calendar.end_of_working_day(datetime.combine(day, time(12), tzinfo=calendar.tz))


def reported_period(report: ReportDef, today: date, calendar: WorkCalendar) -> tuple[Period, date | None]:
    """The period a run on ``today`` reports on and the day it is due: the last one that ended
    (due ``by`` or the first working day after it), or with ``current`` the running one (due on
    its last working day; None when it has none), or with ``ahead`` the day just begun."""
    if report.ahead:
        return period_of("day", today), today
    if report.current:
        period = period_of(report.period, today)
        return period, last_working_day(period, calendar)
    period = last_completed(report.period, today, calendar)
    return period, due_date(period, report.by, calendar)


def run_plan_report(
    store: Store,
    report: ReportDef,
    now: datetime,
    calendar: WorkCalendar,
    source: FactSource,
    indicators: Mapping[str, Indicator],
    teams: Teams,
) -> int:
    """Deliver the report on the last ``report.period`` once its due day has come; returns how
    many tasks were queued (0 before the due day and on every later run). An ``ahead`` report
    is on the working day just begun and counts the activities planned in it."""
    today = now.astimezone(calendar.tz).date()
    if report.ahead and not calendar.is_working_day(today):
        return 0
    period, due = reported_period(report, today, calendar)
    if due is None or today < due or store.cursors.last_report(report.crm, report.name) == period.key:
        return 0
    if report.current and today == due and now < _end_of_work(today, calendar):
        # The running period's results are complete only when work ends, later on a day with
        # longer hours (an event day's shift): a later run of the schedule delivers them.
        return 0
    since, until = period_window(period, calendar)
    if any(_reaches_back(indicators, name) for name in report.indicators):
        since -= HISTORY_LOOKBACK  # a deal that reached a stage now may have entered the one before long ago
    try:
        read = source.read_planned if report.ahead else source.read_facts
        facts = list(read(since, until))
        if any(_uses(indicators, name, "breaches") for name in report.indicators):
            facts += breach_facts(store, report.crm, since, until)
        if joined := deal_fields(indicators, report.indicators):
            # Activities planned ahead come without deals: those in work are read with today's facts.
            deals = list(source.read_facts(since, until)) if report.ahead else facts
            facts = with_deals(facts, deals, joined)
    except AdapterError as exc:  # the next scheduled run tries again: nothing was delivered
        log.warning(
            "plan report name=%s period=%s: facts not read (%s); retried at its next run", report.name, period, exc
        )
        return 0
    book = PlanBook(store.plans.all(), calendar, teams)
    rows = plan_vs_fact(
        period,
        report.indicators,
        indicators,
        facts,
        book,
        teams,
        calendar.tz,
        targets=report.targets,
        person_field=report.person_field,
        group_by=report.group_by,
    )
    deadline = due_moment(period, report, calendar)
    rule = report_rule(report.name)
    queued = 0
    with store.sessions() as session, session.begin():
        recipients = split_by_recipient(report.to, rows, teams) if report.to else {}
        for user, mine in sorted(recipients.items()):
            variables = _variables(report.name, period, due, user, mine, indicators, scope=_scope(mine))
            task = CreateTask(
                "",
                title=report.title.render(variables),
                description=report.text.render(variables),
                responsible_id=user,
                deadline=deadline,
            )
            if Outbox.stage(
                session,
                key=report_task_key(report.name, report.crm, period.key, user),
                crm=report.crm,
                command=task,
                rule=rule,
                now=now,
                trigger=str(EventKind.SCHEDULE),
                audit_message=f"plan-vs-fact {period} for user {user}",
                audit_detail={"period": period.key, "due": due.isoformat(), "rows": [_plain(r) for r in mine]},
            ):
                queued += 1
        if report.missed is not None:
            for lead, behind in sorted(missed_by(rows, teams, report.missed.to).items()):
                variables = _variables(report.name, period, due, lead, behind, indicators, scope="below plan")
                task = CreateTask(
                    "",
                    title=report.missed.title.render(variables),
                    description=report.missed.text.render(variables),
                    responsible_id=lead,
                    deadline=calendar.end_of_working_day(now),
                )
                if Outbox.stage(
                    session,
                    key=report_task_key(f"{report.name}!missed", report.crm, period.key, lead),
                    crm=report.crm,
                    command=task,
                    rule=rule,
                    now=now,
                    trigger=str(EventKind.SCHEDULE),
                    audit_message=f"plan missed {period} by users {', '.join(r.name for r in behind)}",
                    audit_detail={"period": period.key, "rows": [_plain(r) for r in behind]},
                ):
                    queued += 1
        if report.channel is not None and rows:
            # One message with everyone's rows: the chat is shared, unlike each recipient's task.
            variables = _variables(report.name, period, due, "", rows, indicators, scope=_scope(rows))
            Outbox.stage(
                session,
                key=report_task_key(report.name, report.channel, period.key, "chat"),
                crm=report.channel,
                command=SendMessage("", channel=report.channel, text=report.text.render(variables)),
                rule=rule,
                now=now,
                trigger=str(EventKind.SCHEDULE),
                audit_crm=report.crm,
                audit_message=f"plan-vs-fact {period} to the chat {report.channel}",
            )
    if report.file is not None:
        path = Path(report.file.render({"report": report.name, "period": period.key}))
        if path.suffix.lower() == ".xlsx":
            write_xlsx_once(path, rows, period)
        else:
            write_once(path, to_csv(rows, period))
    store.cursors.save_last_report(report.crm, report.name, period.key, now)
    log.info("plan report name=%s period=%s due=%s queued=%d", report.name, period, due, queued)
    return queued


def _end_of_work(day: date, calendar: WorkCalendar) -> datetime:
    return calendar.end_of_working_day(datetime.combine(day, time(), tzinfo=calendar.tz))


def breach_facts(store: Store, crm: str, since: datetime, until: datetime) -> list[Fact]:
    """The breaches the connector recorded for ``crm``'s deals due in [since, until), each with
    the deal's fields as last seen (so ``person_field`` finds the agent named on the deal)."""
    out = []
    with store.sessions() as session:
        for row in store.timers.breaches(session, since, until):
            if row.crm != crm:
                continue
            snapshot = store.snapshots.get(session, crm, row.deal_id)
            fields = dict((snapshot.data.get("fields") or {}) if snapshot is not None else {})
            fields["deadline"] = row.deadline
            out.append(
                Fact("breach", str(row.id), row.responsible_id, at=row.due_at, deal_id=row.deal_id, fields=fields)
            )
    return out


def _uses(indicators: Mapping[str, Indicator], name: str, of: str) -> bool:
    ind = indicators[name]
    return ind.of == of or (ind.how == "ratio" and any(_uses(indicators, p, of) for p in ind.parts))


def _reaches_back(indicators: Mapping[str, Indicator], name: str) -> bool:
    ind = indicators[name]
    return ind.reaches_back or (ind.how == "ratio" and any(_reaches_back(indicators, p) for p in ind.parts))


def write_xlsx_once(path: Path, rows: Sequence[Row], period: Period) -> bool:
    """The report as a spreadsheet (numbers as numbers), unless the file exists; needs openpyxl
    (``pip install -e '.[xlsx]'``)."""
    if path.exists():
        return False
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = period.key
    sheet.append(list(FILE_COLUMNS))
    for line in file_rows(rows, period):
        sheet.append([float(v) if isinstance(v, Decimal) else v for v in line])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    book.save(partial)
    os.replace(partial, path)
    return True


def write_once(path: Path, content: str) -> bool:
    """Write ``content`` to ``path`` unless it exists (atomically: a reader never sees half)."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(content, encoding="utf-8")
    os.replace(partial, path)
    return True


def _scope(rows: Sequence[Row]) -> str:
    if len(rows) == 1 and rows[0].scope == "person":
        return f"user {rows[0].name}"
    teams = sorted({r.team for r in rows if r.team})
    if any(r.scope == "all" for r in rows) or not teams:
        return "all"
    return "team " + ", ".join(teams)


def _variables(
    name: str,
    period: Period,
    due: object,
    user: str,
    rows: Sequence[Row],
    indicators: Mapping[str, Indicator],
    *,
    scope: str,
) -> dict[str, object]:
    return {
        "report": name,
        "period": period.key,
        "due": due,
        "user": user,
        "scope": scope,
        "rows": [r.as_dict() for r in rows],
        "table": table(rows, indicators),
    }


def _plain(row: Row) -> dict[str, object]:
    return {
        "scope": row.scope,
        "name": row.name,
        "cells": {
            k: {"plan": None if c.plan is None else str(c.plan), "fact": None if c.fact is None else str(c.fact)}
            for k, c in row.cells.items()
        },
    }
