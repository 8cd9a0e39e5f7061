"""What the configured reports would deliver in a dry-run's window: each occurrence, its due
day and recipients, so no report is skipped silently (their figures are read when they run)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger
from rich.console import Console
from rich.table import Table

from connector.config.schema import Config
from rules.calendar import WorkCalendar
from rules.periods import due_date, last_completed, last_working_day, period_of
from rules.plans import Teams
from rules.reports import ReportDef


@dataclass(frozen=True)
class ReportOccurrence:
    report: str
    covers: str  # a period key, or "runs" for a cron report
    due: str  # a date, or how many runs
    to: str
    delivery: str


def _recipients(report: ReportDef, teams: Teams) -> str:
    to = report.to
    if to is None:
        return "nobody (file only)" if report.missed is None else "those below plan"
    if to == "head":
        return f"head {teams.head}"
    if to == "team_lead":
        return "team leads " + ", ".join(sorted(set(teams.leads.values())))
    if to in ("person", "responsible"):
        return "each person" if report.indicators else "each responsible user"
    return f"user {to}"


def report_occurrences(config: Config, default: WorkCalendar, start: datetime, end: datetime) -> list[ReportOccurrence]:
    """Every report occurrence due between ``start`` and ``end``."""
    out: list[ReportOccurrence] = []
    for report in config.reports:
        calendar = config.calendars.get(report.calendar) if report.calendar and config.calendars else default
        first, last = start.astimezone(calendar.tz).date(), end.astimezone(calendar.tz).date()
        to = _recipients(report, config.teams_for(report.crm))
        if not report.indicators:
            trigger = CronTrigger.from_crontab(report.schedule, timezone=calendar.tz)
            runs, moment = 0, trigger.get_next_fire_time(None, start - timedelta(microseconds=1))
            while moment is not None and moment <= end and runs < 100_000:
                runs += 1
                moment = trigger.get_next_fire_time(moment, moment + timedelta(seconds=1))
            out.append(ReportOccurrence(report.name, "day", f"{runs} runs ({report.schedule})", to, "task"))
            continue
        delivery = "task" if report.to else ""
        if report.file is not None:
            delivery += (" + " if delivery else "") + "CSV file"
        if report.missed is not None:
            whom = "each person" if report.missed.to == "person" else "the lead of each person"
            delivery += (" + " if delivery else "") + f"task to {whom} below plan"
        running = report.current or report.ahead
        period = period_of(report.period, first) if running else last_completed(report.period, first)
        while True:
            due: date | None
            if report.ahead:  # on the day just begun
                due = period.first
                if due > last:
                    break
            elif report.current:  # due on the running period's last working day; a day off has none
                if period.first > last:
                    break
                due = last_working_day(period, calendar)
                if due is None or due > last:
                    period = period.next()
                    continue
            else:
                due = due_date(period, report.by, calendar)
                if due > last:
                    break
            working = report.period != "day" or calendar.is_working_day(period.first)
            if due >= first and working:
                out.append(ReportOccurrence(report.name, period.key, due.isoformat(), to, delivery))
            period = period.next()
    return out


def print_reports(occurrences: list[ReportOccurrence], console: Console) -> None:
    if not occurrences:
        return
    table = Table(title="Reports due in the window (figures are read from the CRM when each runs)")
    for column in ("report", "covers", "due", "to", "delivery"):
        table.add_column(column)
    for o in occurrences:
        table.add_row(o.report, o.covers, o.due, o.to, o.delivery)
    console.print(table)
