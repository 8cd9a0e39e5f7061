"""Planning periods (year, quarter, month, week, day) and the due dates of their reports.

A period is named by a key an admin can type: ``2026``, ``2026-Q1``, ``2026-03``,
``2026-W10`` (ISO week) and ``2026-03-02``. Everything here is pure date arithmetic over a
``WorkCalendar``'s working days.
"""

from __future__ import annotations

import calendar as _stdcal
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

KINDS = ("year", "quarter", "month", "week", "day")


class WorkingDays(Protocol):
    def is_working_day(self, day: date) -> bool: ...


@dataclass(frozen=True, order=True)
class Period:
    """One planning period: its kind and its first and last day (both included)."""

    kind: str
    first: date
    last: date

    @property
    def key(self) -> str:
        if self.kind == "year":
            return f"{self.first.year}"
        if self.kind == "quarter":
            return f"{self.first.year}-Q{(self.first.month - 1) // 3 + 1}"
        if self.kind == "month":
            return f"{self.first:%Y-%m}"
        if self.kind == "week":
            year, week, _ = self.first.isocalendar()
            return f"{year}-W{week:02d}"
        return self.first.isoformat()

    def __str__(self) -> str:
        return self.key

    def days(self) -> Iterator[date]:
        day = self.first
        while day <= self.last:
            yield day
            day += timedelta(days=1)

    def contains(self, day: date) -> bool:
        return self.first <= day <= self.last

    def inside(self, other: Period) -> bool:
        return other.first <= self.first and self.last <= other.last

    def next(self) -> Period:
        return period_of(self.kind, self.last + timedelta(days=1))

    def previous(self) -> Period:
        return period_of(self.kind, self.first - timedelta(days=1))


def period_of(kind: str, day: date) -> Period:
    """The period of ``kind`` that holds ``day``."""
    if kind == "year":
        return Period(kind, date(day.year, 1, 1), date(day.year, 12, 31))
    if kind == "quarter":
        first_month = (day.month - 1) // 3 * 3 + 1
        last_month = first_month + 2
        end = _stdcal.monthrange(day.year, last_month)[1]
        return Period(kind, date(day.year, first_month, 1), date(day.year, last_month, end))
    if kind == "month":
        end = _stdcal.monthrange(day.year, day.month)[1]
        return Period(kind, day.replace(day=1), day.replace(day=end))
    if kind == "week":
        monday = day - timedelta(days=day.weekday())
        return Period(kind, monday, monday + timedelta(days=6))
    if kind == "day":
        return Period(kind, day, day)
    raise ValueError(f"unknown period kind {kind!r}; known: {', '.join(KINDS)}")


_KEYS = (
    (re.compile(r"^(\d{4})$"), "year"),
    (re.compile(r"^(\d{4})-Q([1-4])$"), "quarter"),
    (re.compile(r"^(\d{4})-(\d{2})$"), "month"),
    (re.compile(r"^(\d{4})-W(\d{2})$"), "week"),
    (re.compile(r"^(\d{4})-(\d{2})-(\d{2})$"), "day"),
)


def parse_period(text: str) -> Period:
    """The period a key names; ``ValueError`` says what keys look like."""
    value = str(text).strip().upper()
    for pattern, kind in _KEYS:
        match = pattern.match(value)
        if not match:
            continue
        numbers = [int(g) for g in match.groups()]
        try:
            if kind == "year":
                return period_of(kind, date(numbers[0], 1, 1))
            if kind == "quarter":
                return period_of(kind, date(numbers[0], numbers[1] * 3, 1))
            if kind == "month":
                return period_of(kind, date(numbers[0], numbers[1], 1))
            if kind == "week":
                return period_of(kind, date.fromisocalendar(numbers[0], numbers[1], 1))
            return period_of(kind, date(numbers[0], numbers[1], numbers[2]))
        except ValueError as exc:
            raise ValueError(f"{text!r} is no real {kind}: {exc}") from exc
    raise ValueError(f"{text!r} is not a period; write 2026, 2026-Q1, 2026-03, 2026-W10 or 2026-03-02")


def working_days(period: Period, calendar: WorkingDays) -> list[date]:
    return [d for d in period.days() if calendar.is_working_day(d)]


def due_date(period: Period, by_day: int | None, calendar: WorkingDays) -> date:
    """When a report on ``period`` is due.

    ``by_day`` N: the Nth of the month after the period, or the working day before it when the
    Nth is not a working day; if that day is not after the period's end (a long holiday right
    after it), the first working day after the period instead. Without ``by_day``: the first
    working day after the period.
    """
    first_after = _working_on_or_after(period.last + timedelta(days=1), calendar)
    if by_day is None:
        return first_after
    following = period.last + timedelta(days=1)
    day = following.replace(day=min(by_day, _stdcal.monthrange(following.year, following.month)[1]))
    while day > period.last and not calendar.is_working_day(day):
        day -= timedelta(days=1)
    return day if day > period.last else first_after


def _working_on_or_after(day: date, calendar: WorkingDays) -> date:
    for _ in range(400):
        if calendar.is_working_day(day):
            return day
        day += timedelta(days=1)
    raise ValueError(f"no working day within 400 days after {day.isoformat()}")


def last_working_day(period: Period, calendar: WorkingDays) -> date | None:
    """The period's last working day, when a report on the running period is due; None when
    the period has none (a day off)."""
    day = period.last
    while day >= period.first:
        if calendar.is_working_day(day):
            return day
        day -= timedelta(days=1)
    return None


def last_completed(kind: str, today: date, calendar: WorkingDays | None = None) -> Period:
    """The latest period of ``kind`` that ended before ``today``; with a calendar, a day is the
    latest working day (nobody reports on a Sunday: Monday's report is on Friday)."""
    period = period_of(kind, today).previous()
    if kind == "day" and calendar is not None:
        for _ in range(400):
            if calendar.is_working_day(period.first):
                break
            period = period.previous()
    return period
