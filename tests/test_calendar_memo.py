"""The calendar's kept answers (period edges, holiday windows, parsed durations) change nothing.

A long-lived calendar answers from what it kept; a fresh one for every question computes
everything anew. They must agree, across zones with DST and split work hours too.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest

from rules.calendar import CalendarError, WorkCalendar, parse_duration

SETTINGS = [
    {"timezone": "Europe/Moscow", "work_hours": "09:00-18:00"},
    {"timezone": "Europe/Berlin", "work_hours": "08:00-12:00, 13:00-17:00", "country": "DE"},
    {"timezone": "America/New_York", "work_hours": "00:00-03:00, 22:00-24:00", "country": "US"},
]
DURATIONS = [
    "3 working days",
    "4 working hours",
    "90 working minutes",
    "1 working day",
    "24h",
    "-2 working days",
    "17 working hours",
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s["timezone"])
def test_a_long_lived_calendar_answers_as_a_fresh_one(settings: dict[str, str]) -> None:
    rng = random.Random(7)
    kept = WorkCalendar(**settings)  # type: ignore[arg-type]
    # Moments around the year, and around DST changes (late March, late October, early November).
    starts = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(365 * 24 * 60)) for _ in range(150)]
    starts += [
        datetime(2026, m, d, h, tzinfo=UTC) for m, d in ((3, 29), (10, 25), (11, 1), (3, 8)) for h in range(0, 24, 3)
    ]
    for start in starts:
        duration = rng.choice(DURATIONS)
        fresh = WorkCalendar(**settings)  # type: ignore[arg-type]
        assert kept.add(start, duration) == fresh.add(start, duration), (start, duration)
        fresh = WorkCalendar(**settings)  # type: ignore[arg-type]
        assert kept.subtract(start, duration) == fresh.subtract(start, duration), (start, duration)
        first = start.date()
        fresh = WorkCalendar(**settings)  # type: ignore[arg-type]
        assert kept.holidays_between(first, first + timedelta(days=60)) == fresh.holidays_between(
            first, first + timedelta(days=60)
        )


def test_holidays_between_gives_each_caller_its_own_list() -> None:
    cal = WorkCalendar()
    found = cal.holidays_between(date(2026, 1, 1), date(2026, 12, 31))
    found.clear()
    assert cal.holidays_between(date(2026, 1, 1), date(2026, 12, 31))


def test_parse_duration_still_refuses_each_time() -> None:
    for _ in range(2):
        with pytest.raises(CalendarError, match="cannot read duration 'soon'"):
            parse_duration("soon")
        with pytest.raises(CalendarError):
            parse_duration(["3 working days"])  # type: ignore[arg-type]
    assert parse_duration("3 Working Days") == parse_duration("3 working days")
