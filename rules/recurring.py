"""Recurring work that belongs to no deal (``recurring:``): seed 000's planning meeting twice a
week, the weekly update of the site and social networks -- a task per person on a schedule.

Each firing of the schedule is an *occurrence*, named by its moment; the tasks of one
occurrence are keyed by it, so a run repeated (a restart, a catch-up after downtime, a
second scheduler) creates nothing twice. Pure: the moments are passed in.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from domain import CreateTask
from rules.calendar import CalendarError, WorkCalendar, parse_duration
from rules.org import SUBJECTS, Org, OrgRef, parse_ref, unknown_calendar
from rules.templates import Template, TemplateProblem

__all__ = [
    "RecurringDef",
    "cron_moments",
    "RecurringSchema",
    "RecurringTask",
    "latest_occurrence",
    "occurrences",
    "plan_occurrence",
]


@dataclass(frozen=True)
class RecurringDef:
    """One configured piece of recurring work."""

    name: str
    crm: str
    schedule: str
    to: tuple[str | OrgRef, ...]
    title: Template
    description: Template | None = None
    due: str | None = None
    calendar: str | None = None
    on_days_off: str = "skip"  # skip | run
    catch_up: timedelta = timedelta(hours=12)
    task_type: str = "task"
    enabled: bool = True


@dataclass(frozen=True)
class RecurringTask:
    """A task one occurrence gives one person, with the key that makes it happen once."""

    key: str
    occurrence: datetime
    task: CreateTask


def occurrences(item: RecurringDef, start: datetime, end: datetime, calendar: WorkCalendar) -> Iterator[datetime]:
    """The item's moments in ``(start, end]``, on days off too (``plan_occurrence`` decides
    what a day off means)."""
    return cron_moments(item.schedule, start, end, calendar)


def cron_moments(schedule: str, start: datetime, end: datetime, calendar: WorkCalendar) -> Iterator[datetime]:
    """The moments of a cron schedule in ``(start, end]``, in the calendar's zone."""
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab(schedule, timezone=calendar.tz)
    moment = trigger.get_next_fire_time(None, start.astimezone(calendar.tz))
    while moment is not None and moment <= end:
        if moment > start:
            yield moment
        moment = trigger.get_next_fire_time(moment, moment + timedelta(seconds=1))


def latest_occurrence(item: RecurringDef, now: datetime, calendar: WorkCalendar) -> datetime | None:
    """The last moment of the schedule at or before ``now`` and within ``catch_up`` of it."""
    found = None
    for found in occurrences(item, now - item.catch_up, now, calendar):  # noqa: B007 - the last one
        pass
    return found


def plan_occurrence(
    item: RecurringDef, occurrence: datetime, calendar: WorkCalendar, org: Org
) -> tuple[list[RecurringTask], list[str]]:
    """The tasks of one occurrence and notes on what was left out (a day off, nobody found)."""
    notes: list[str] = []
    if item.on_days_off == "skip" and not calendar.is_working_day(occurrence.astimezone(calendar.tz).date()):
        return [], [f"{occurrence.isoformat()} is a day off: skipped"]
    users: list[str] = []
    for target in item.to:
        if isinstance(target, OrgRef):
            resolved = org.resolve(target, item.crm, None)
            if not resolved.user_ids:
                notes.append(f"{target}: {resolved.how}")
            users.extend(resolved.user_ids)
        elif target in org.people:
            users.extend(org.resolve(OrgRef("person", target, target), item.crm, None).user_ids)
        else:
            users.append(target)
    variables = {"now": occurrence, "occurrence": occurrence, "name": item.name}
    due = calendar.add(occurrence, item.due) if item.due else None
    tasks = []
    for user in dict.fromkeys(users):
        task = CreateTask(
            "",
            title=item.title.render(variables),
            description=item.description.render(variables) if item.description else "",
            responsible_id=user,
            deadline=due,
            task_type=item.task_type,
        )
        tasks.append(RecurringTask(recurring_task_key(item.name, item.crm, occurrence, user), occurrence, task))
    return tasks, notes


def recurring_rule(name: str) -> str:
    """The rule name recurring work is recorded under in the outbox and the audit."""
    return f"recurring:{name}"


def recurring_task_key(name: str, crm: str, occurrence: datetime, user: str) -> str:
    """One person's task of one occurrence."""
    return f"recurring|{name}|{crm}|{occurrence.isoformat()}|{user}"


# --- config ----------------------------------------------------------------------------------


def _template(value: Any) -> Template:
    try:
        return Template(str(value))
    except TemplateProblem as exc:
        raise ValidationError(str(exc)) from exc


class RecurringSchema(Schema):
    """One entry of ``recurring:``."""

    name = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_.-]+$"))
    crm = fields.String(required=True)
    schedule = fields.String(required=True, metadata={"doc": "cron (minute hour day month weekday), calendar's zone"})
    to = fields.Raw(
        required=True, metadata={"doc": "a person, a user id, role(NAME), head_of(TEAM), or a list of them"}
    )
    title = fields.String(required=True, metadata={"doc": "template; sees occurrence (the moment) and name"})
    description = fields.String(load_default=None, allow_none=True)
    due = fields.String(load_default=None, allow_none=True, metadata={"doc": "after the occurrence: 2h, 1 working day"})
    calendar = fields.String(
        load_default=None, allow_none=True, metadata={"doc": "a calendar by name (zone, days off)"}
    )
    on_days_off = fields.String(
        load_default="skip", validate=validate.OneOf(("skip", "run")), metadata={"doc": "skip or run on days off"}
    )
    catch_up = fields.String(
        load_default="12h", metadata={"doc": "an occurrence missed while stopped is still made this long after"}
    )
    type = fields.String(load_default="task", metadata={"doc": "task or call"})
    enabled = fields.Boolean(load_default=True)

    @validates_schema
    def check(self, data: dict[str, Any], **kwargs: Any) -> None:
        from apscheduler.triggers.cron import CronTrigger

        errors: dict[str, list[str]] = {}
        if data.get("schedule"):
            try:
                CronTrigger.from_crontab(data["schedule"], timezone="UTC")
            except ValueError as exc:
                errors["schedule"] = [f"not a cron expression: {exc}"]
        for key in ("due", "catch_up"):
            if data.get(key):
                try:
                    if parse_duration(data[key]).is_working and key == "catch_up":
                        errors[key] = ["plain time (e.g. 12h), not working time"]
                except CalendarError as exc:
                    errors[key] = [str(exc)]
        sample = {"now": datetime(2026, 1, 1, tzinfo=UTC), "occurrence": datetime(2026, 1, 1, tzinfo=UTC), "name": ""}
        for key in ("title", "description"):
            if data.get(key):
                try:
                    _template(data[key]).render(sample)  # no deal here: a name it lacks fails now, not at 10:00
                except ValidationError as exc:
                    errors[key] = [str(m) for m in exc.messages] if isinstance(exc.messages, list) else [str(exc)]
                except TemplateProblem as exc:
                    errors[key] = [f"{exc} (recurring work has no deal: templates see occurrence and name)"]
        targets = data.get("to")
        for i, target in enumerate(targets if isinstance(targets, list) else [targets]):
            problem = _target_problem(target)
            if problem:
                errors[f"to.{i}" if isinstance(targets, list) else "to"] = [problem]
        if errors:
            raise ValidationError(errors)

    @post_load
    def build(self, data: dict[str, Any], **kwargs: Any) -> RecurringDef:
        targets = data["to"] if isinstance(data["to"], list) else [data["to"]]
        return RecurringDef(
            name=data["name"],
            crm=data["crm"],
            schedule=data["schedule"],
            to=tuple(parse_ref(t) or str(t) for t in targets),
            title=_template(data["title"]),
            description=_template(data["description"]) if data["description"] else None,
            due=data["due"],
            calendar=data["calendar"],
            on_days_off=data["on_days_off"],
            catch_up=timedelta(minutes=_minutes(data["catch_up"])),
            task_type=data["type"],
            enabled=data["enabled"],
        )


def _minutes(text: str) -> int:
    duration = parse_duration(text)
    return duration.amount * {"days": 1440, "hours": 60}.get(duration.unit, 1)


def _target_problem(target: Any) -> str | None:
    if isinstance(target, bool) or not isinstance(target, (str, int, Mapping)) or target in ("", {}):
        return "a person, a user id, role(NAME) or head_of(TEAM)"
    ref = parse_ref(target)
    if isinstance(target, Mapping) and ref is None:
        return "a person, a user id, role(NAME) or head_of(TEAM)"
    if ref is not None and ref.arg in SUBJECTS:
        return f"{ref}: recurring work has no deal and no responsible; name a team or a person"
    return None


def recurring_problems(
    items: Sequence[tuple[int, RecurringDef]], org: Org, calendars: frozenset[str], crms: Collection[str]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(key path, message) for names in ``recurring:`` that are not configured."""
    seen: set[str] = set()
    for i, item in items:
        if item.name in seen:
            yield ("recurring", i, "name"), f"recurring work {item.name!r} is named twice"
        seen.add(item.name)
        if item.crm not in crms:
            yield ("recurring", i, "crm"), f"no CRM named {item.crm!r} under crms"
        if item.calendar is not None and item.calendar not in calendars:
            yield ("recurring", i, "calendar"), unknown_calendar(item.calendar, calendars)
        for j, target in enumerate(item.to):
            if isinstance(target, OrgRef):
                problem = org.ref_problem(target)
                if problem:
                    yield ("recurring", i, "to", j), problem
