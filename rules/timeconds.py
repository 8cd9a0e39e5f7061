"""Time conditions: is a moment on a weekday, in working time, on a holiday, inside a window
of the day -- on a calendar.

Forms (each may sit beside ``at:`` and ``calendar:``)::

  {weekday: [sat, sun]}          the local weekday is one of these (mon..sun, 0-6, or "mon-fri")
  {working_time: true | false}   inside (outside) the calendar's work periods
  {working_day: true | false}    the local date is (not) a working day
  {holiday: true | false}        the local date is (not) a public holiday by name
  {time_between: "19:00-09:00"}  the local time of day lies in [start, end) (may wrap midnight)
  at: event | now | FIELD        which moment: the event's (default), the evaluation's, or a
                                 deal field holding a moment (created_at, updated_at, a custom one)
  calendar: NAME                 a calendar of ``calendars:`` (else the rule's)

A moment that is missing or not a moment (an empty field) makes the condition false.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from rules.calendar import WorkCalendar
from rules.model import Condition, RuleContext

TIME_KEYS = ("weekday", "working_time", "working_day", "holiday", "time_between")
MODIFIERS = ("at", "calendar")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RU_WEEKDAYS = ("пн", "вт", "ср", "чт", "пт", "сб", "вс")


class TimeConditionError(ValueError):
    """A time condition that cannot be understood; ``key`` is the key at fault."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


def compile_time(spec: Mapping[str, Any]) -> list[Condition]:
    """One predicate per time key of ``spec`` (which holds only time keys and modifiers)."""
    moment = _moment_getter(spec.get("at", "event"))
    calendar_name = spec.get("calendar")
    if calendar_name is not None and (not isinstance(calendar_name, str) or not calendar_name):
        raise TimeConditionError("the name of a calendar under calendars:", "calendar")

    def on_calendar(test: Callable[[datetime, WorkCalendar], bool]) -> Condition:
        def check(ctx: RuleContext) -> bool:
            calendar = _calendar(ctx, calendar_name)
            when = moment(ctx)
            if calendar is None or when is None:
                return False
            return test(when, calendar)

        return check

    parts: list[Condition] = []
    for key in TIME_KEYS:
        if key not in spec:
            continue
        value = spec[key]
        if key == "weekday":
            parts.append(on_calendar(_on_weekdays(_weekdays(value))))
        elif key == "time_between":
            parts.append(on_calendar(_in_time_window(*_window(value))))
        else:
            if not isinstance(value, bool):
                raise TimeConditionError("true or false", key)
            parts.append(on_calendar(_day_test(_DAY_TESTS[key], value)))
    return parts


Test = Callable[[datetime, WorkCalendar], bool]


def _on_weekdays(days: frozenset[int]) -> Test:
    return lambda t, cal: t.astimezone(cal.tz).weekday() in days


def _in_time_window(start: int, end: int) -> Test:
    return lambda t, cal: _in_window(_minute_of_day(t, cal), start, end)


def _day_test(test: Test, wanted: bool) -> Test:
    return lambda t, cal: test(t, cal) == wanted


def _is_holiday(moment: datetime, calendar: WorkCalendar) -> bool:
    day = moment.astimezone(calendar.tz).date()
    return bool(calendar.holidays_between(day, day))


_DAY_TESTS: dict[str, Test] = {
    "working_time": lambda t, cal: cal.is_working_time(t),
    "working_day": lambda t, cal: cal.is_working_day(t.astimezone(cal.tz).date()),
    "holiday": _is_holiday,
}


def _calendar(ctx: RuleContext, name: str | None) -> WorkCalendar | None:
    if name is not None and ctx.calendars is not None and name in ctx.calendars:
        return ctx.calendars.get(name)
    return ctx.calendar


def _moment_getter(at: Any) -> Callable[[RuleContext], datetime | None]:
    if not isinstance(at, str) or not at:
        raise TimeConditionError("event, now or the name of a deal field holding a moment", "at")
    if at == "event":
        return lambda ctx: ctx.event.occurred_at
    if at == "now":
        return lambda ctx: ctx.now
    return lambda ctx: _as_moment(ctx.deal.get(at))


def _as_moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else None
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return parsed if parsed.tzinfo else None
    return None


def _weekdays(value: Any) -> frozenset[int]:
    items = value if isinstance(value, list) else [value]
    days: set[int] = set()
    for item in items:
        if isinstance(item, str) and "-" in item:
            first, _, last = item.partition("-")
            a, b = _weekday(first), _weekday(last)
            days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
        else:
            days.add(_weekday(item))
    if not days:
        raise TimeConditionError("weekdays: mon..sun, 0 (Monday)..6, or a range like mon-fri", "weekday")
    return frozenset(days)


def _weekday(item: Any) -> int:
    if isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 6:
        return item
    if isinstance(item, str):
        text = item.strip().lower()
        for names in (WEEKDAYS, _RU_WEEKDAYS):
            for number, name in enumerate(names):
                if text[: len(name)] == name and text:
                    return number
    raise TimeConditionError(f"{item!r} is not a weekday: mon..sun, пн..вс or 0 (Monday)..6", "weekday")


_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _window(value: Any) -> tuple[int, int]:
    match = _WINDOW.match(value) if isinstance(value, str) else None
    if match is None:
        raise TimeConditionError("a window of the day like 19:00-09:00", "time_between")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise TimeConditionError(f"{value!r} is not a window of the day like 19:00-09:00", "time_between")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise TimeConditionError(f"{value!r} is empty: start and end are the same", "time_between")
    return start, end


def _minute_of_day(moment: datetime, calendar: WorkCalendar) -> int:
    local = moment.astimezone(calendar.tz)
    return local.hour * 60 + local.minute


def _in_window(minute: int, start: int, end: int) -> bool:
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end  # wraps midnight
