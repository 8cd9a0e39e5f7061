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


def test_a_sum_asked_again_is_the_same_answer_across_zones_and_a_dst_fold() -> None:
    from zoneinfo import ZoneInfo

    settings = {"timezone": "America/New_York", "work_hours": "00:00-03:00, 22:00-24:00", "country": "US"}
    kept = WorkCalendar(**settings)  # type: ignore[arg-type]
    zone = ZoneInfo("America/New_York")
    # 01:30 on 2026-11-01 happens twice in New York: fold 0 (EDT) and fold 1 (EST), an hour apart,
    # yet the two datetimes compare equal: the kept answer must not serve one for the other.
    first = datetime(2026, 11, 1, 1, 30, tzinfo=zone)
    second = first.replace(fold=1)
    assert first.astimezone(UTC) != second.astimezone(UTC)
    same_moment_elsewhere = first.astimezone(ZoneInfo("Asia/Tokyo"))
    for moment in (first, second, same_moment_elsewhere, first, second):
        for duration in ("90 working minutes", "4 working hours", "-2 working days", "24h"):
            fresh = WorkCalendar(**settings)  # type: ignore[arg-type]
            assert kept.add(moment, duration) == fresh.add(moment, duration), (moment, duration)
            assert kept.subtract(moment, duration) == fresh.subtract(moment, duration), (moment, duration)
    assert kept.add(first, "24h") != kept.add(second, "24h")


def test_kept_sums_stay_bounded_and_failures_are_not_kept() -> None:
    cal = WorkCalendar()
    start = datetime(2026, 3, 2, 9, tzinfo=UTC)
    for minutes in range(cal._SUMS_KEPT + 10):
        cal.add(start + timedelta(minutes=minutes), "1 working hour")
    assert len(cal._sums) <= cal._SUMS_KEPT
    for _ in range(2):
        with pytest.raises(CalendarError, match="cannot read duration"):
            cal.add(start, "soon")
        with pytest.raises(CalendarError, match="no time zone"):
            cal.add(datetime(2026, 3, 2, 9), "1 working hour")


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s["timezone"])
def test_next_holiday_kept_for_a_day_answers_as_a_fresh_calendar(settings: dict[str, str]) -> None:
    # RuleContext.next_holiday keeps its answer for the local day: moments in time order
    # around each local midnight (and DST changes) must get what a fresh calendar says.
    from domain import Deal, Event, EventKind, EventSource
    from rules.model import RuleContext

    kept = WorkCalendar(**settings)  # type: ignore[arg-type]
    deal = Deal(crm="b24", id="1", title="t", stage="NEW")
    moments = sorted(
        datetime(2026, m, d, tzinfo=UTC) + timedelta(minutes=minutes)
        for m, d in ((1, 1), (3, 8), (3, 28), (5, 8), (10, 24), (10, 31), (12, 30))
        for minutes in range(0, 3 * 24 * 60, 37)
    )

    def context(now: datetime, calendar: WorkCalendar) -> RuleContext:
        event = Event(
            crm="b24",
            kind=EventKind.DEAL_UPDATED,
            deal_id="1",
            occurred_at=now,
            dedup_key="k",
            source=EventSource.WEBHOOK,
        )
        return RuleContext(deal=deal, event=event, now=now, triggers=frozenset(), calendar=calendar)

    for days in (60, 3):
        # Fresh answers first: asking them in between would replace the kept one.
        want = [context(now, WorkCalendar(**settings)).next_holiday(days) for now in moments]  # type: ignore[arg-type]
        got = [context(now, kept).next_holiday(days) for now in moments]
        assert got == want
