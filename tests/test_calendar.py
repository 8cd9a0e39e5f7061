"""Tests for rules.calendar: duration parsing, the RU production calendar, working-time arithmetic."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rules.calendar import CalendarError, Duration, WorkCalendar, parse_duration

MSK = ZoneInfo("Europe/Moscow")
# Moments outside work hours become the opening moment, which one property filters out: many are.
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)


def msk(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=MSK)


CAL = WorkCalendar()
# Calendars the properties run on: plain, a lunch break, another zone with config overrides, and a
# DST zone whose work period straddles the switch (so the UTC arithmetic is exercised).
CALENDARS = [
    CAL,
    WorkCalendar(work_hours="09:00-13:00, 14:00-18:00"),
    WorkCalendar(
        timezone="Asia/Yekaterinburg",
        work_hours="08:30-17:15",
        extra_days_off=[date(2026, 3, 10), date(2026, 3, 11)],
        extra_working_days=[date(2026, 3, 14)],
    ),
    WorkCalendar(timezone="America/New_York", country="US", work_hours="01:00-04:00"),
]
DAY_HOURS = {id(CALENDARS[0]): 9 * 60, id(CALENDARS[1]): 8 * 60, id(CALENDARS[2]): 8 * 60 + 45,
             id(CALENDARS[3]): 3 * 60}  # fmt: skip

calendars = st.sampled_from(CALENDARS)
moments = st.datetimes(
    min_value=datetime(2023, 1, 1),
    max_value=datetime(2029, 12, 31),
    timezones=st.sampled_from([MSK, UTC, ZoneInfo("Asia/Vladivostok")]),
)
WORKING_UNITS = ["working_minutes", "working_hours", "working_days"]
working_durations = st.one_of(
    st.builds(Duration, st.integers(0, 20_000), st.just("working_minutes")),
    st.builds(Duration, st.integers(0, 400), st.just("working_hours")),
    st.builds(Duration, st.integers(0, 60), st.just("working_days")),
)


MICRO = timedelta(microseconds=1)


def u(moment: datetime) -> datetime:
    """In UTC. Aware datetimes in one DST zone compare and subtract by wall clock (fold ignored),
    so the properties compare instants in UTC."""
    return moment.astimezone(UTC)


def minutes_of(cal: WorkCalendar, d: Duration) -> int:
    """A working duration in working minutes."""
    per = {"working_minutes": 1, "working_hours": 60, "working_days": DAY_HOURS[id(cal)]}[d.unit]
    return d.amount * per


def as_delta(cal: WorkCalendar, d: Duration) -> timedelta:
    return timedelta(minutes=minutes_of(cal, d))


def is_working_or_period_end(cal: WorkCalendar, t: datetime) -> bool:
    return cal.is_working_time(t) or cal.is_working_time(u(t) - MICRO)


# --------------------------------------------------------------------------------------------
# parse_duration / Duration
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "amount", "unit"),
    [
        ("24h", 24, "hours"),
        ("24 h", 24, "hours"),
        ("24 hours", 24, "hours"),
        ("1 hour", 1, "hours"),
        ("30m", 30, "minutes"),
        ("30 min", 30, "minutes"),
        ("30 minutes", 30, "minutes"),
        ("2d", 2, "days"),
        ("2 days", 2, "days"),
        ("1 day", 1, "days"),
        ("3 working days", 3, "working_days"),
        ("1 working day", 1, "working_days"),
        ("4 working hours", 4, "working_hours"),
        ("1 working hour", 1, "working_hours"),
        ("90 working minutes", 90, "working_minutes"),
        ("3wd", 3, "working_days"),
        ("4wh", 4, "working_hours"),
        ("3 рабочих дня", 3, "working_days"),
        ("1 рабочий день", 1, "working_days"),
        ("5 рабочих дней", 5, "working_days"),
        ("4 рабочих часа", 4, "working_hours"),
        ("1 рабочий час", 1, "working_hours"),
        ("24 часа", 24, "hours"),
        ("5 часов", 5, "hours"),
        ("2 дня", 2, "days"),
        ("1 день", 1, "days"),
        ("30 минут", 30, "minutes"),
        ("  3   Working   DAYS ", 3, "working_days"),
        ("3WD", 3, "working_days"),
        ("3 РАБОЧИХ ДНЯ", 3, "working_days"),
        ("0 working hours", 0, "working_hours"),
        ("-4 working hours", -4, "working_hours"),
    ],
)
def test_parse_duration_accepts(text: str, amount: int, unit: str) -> None:
    assert parse_duration(text) == Duration(amount, unit)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    ["", "   ", "3", "h", "wd", "three days", "3 weeks", "3 working", "3.5h", "3 days 2 hours", "3 рабочих",
     "24 hours please", "3 working years", "1e3 h"],
)  # fmt: skip
def test_parse_duration_rejects_naming_the_text(text: str) -> None:
    with pytest.raises(CalendarError) as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


def test_parse_duration_rejects_non_text() -> None:
    with pytest.raises(CalendarError):
        parse_duration(24)  # type: ignore[arg-type]


def test_duration_str_and_neg() -> None:
    assert str(Duration(3, "working_days")) == "3 working days"
    assert str(Duration(1, "working_days")) == "1 working day"
    assert str(Duration(-1, "hours")) == "-1 hour"
    assert -Duration(4, "working_hours") == Duration(-4, "working_hours")
    assert Duration(2, "days").is_working is False
    assert Duration(2, "working_minutes").is_working is True


@pytest.mark.parametrize(("amount", "unit"), [(1.5, "hours"), (True, "hours"), (3, "weeks"), ("3", "days")])
def test_duration_validates(amount: object, unit: str) -> None:
    with pytest.raises(CalendarError):
        Duration(amount, unit)  # type: ignore[arg-type]


@SETTINGS
@given(st.integers(-10_000, 10_000), st.sampled_from(["minutes", "hours", "days", *WORKING_UNITS]))
def test_duration_str_round_trips(amount: int, unit: str) -> None:
    d = Duration(amount, unit)  # type: ignore[arg-type]
    assert parse_duration(str(d)) == d
    assert -d == Duration(-amount, unit)  # type: ignore[arg-type]


@SETTINGS
@given(
    st.sampled_from(["3 working days", "4 working hours", "24 hours", "3 рабочих дня", "90 working minutes"]),
    st.data(),
)
def test_parse_duration_ignores_case_and_spacing(text: str, data: st.DataObject) -> None:
    flipped = "".join(c.upper() if data.draw(st.booleans()) else c for c in text)
    spaced = data.draw(st.sampled_from(["", " ", "\t"])) + flipped.replace(" ", "  \t ") + " "
    assert parse_duration(spaced) == parse_duration(text)


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"work_hours": "18:00-09:00"},
        {"work_hours": "9-18"},
        {"work_hours": "25:00-26:00"},
        {"work_hours": "09:60-18:00"},
        {"work_hours": "09:00-13:00,12:00-18:00"},
        {"work_hours": ""},
        {"work_hours": "09:00-09:00"},
        {"timezone": "Mars/Olympus_Mons"},
        {"country": "XX"},
        {"weekend": [7]},
        {"extra_days_off": [date(2026, 3, 10)], "extra_working_days": [date(2026, 3, 10)]},
        {"extra_days_off": ["not a date"]},
        {"extra_days_off": [datetime(2026, 3, 10, tzinfo=MSK)]},
    ],
)
def test_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(CalendarError):
        WorkCalendar(**kwargs)  # type: ignore[arg-type]


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 2, 20, 17, 0)
    for call in (
        lambda: CAL.add(naive, "4wh"),
        lambda: CAL.add(naive, "24h"),
        lambda: CAL.subtract(naive, "4wh"),
        lambda: CAL.working_time_between(naive, msk(2026, 2, 24)),
        lambda: CAL.working_time_between(msk(2026, 2, 24), naive),
        lambda: CAL.is_working_time(naive),
        lambda: CAL.next_working_moment(naive),
        lambda: CAL.end_of_month(naive),
        lambda: CAL.end_of_working_day(naive),
        lambda: CAL.next_working_day_start(naive),
    ):
        with pytest.raises(CalendarError, match="time zone"):
            call()


def test_add_rejects_bad_duration_text() -> None:
    with pytest.raises(CalendarError, match="3 weeks"):
        CAL.add(msk(2026, 2, 20, 17), "3 weeks")


def test_is_working_day_takes_a_date() -> None:
    with pytest.raises(CalendarError):
        CAL.is_working_day(msk(2026, 2, 20, 17))


# --------------------------------------------------------------------------------------------
# the Russian production calendar
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2024, 4, 26), True),
        (date(2024, 4, 27), True),  # Saturday worked instead of 29 April
        (date(2024, 4, 28), False),
        (date(2024, 4, 29), False),
        (date(2024, 4, 30), False),
        (date(2024, 5, 1), False),
        (date(2024, 5, 2), True),
        (date(2024, 11, 2), True),  # Saturday worked instead of 30 April
        (date(2024, 12, 28), True),  # Saturday worked instead of 30 December
        (date(2024, 12, 30), False),
        (date(2024, 12, 31), False),
        (date(2025, 5, 2), False),
        (date(2025, 5, 8), False),
        (date(2025, 11, 1), True),  # Saturday worked instead of 3 November
        (date(2025, 11, 3), False),
        (date(2025, 11, 4), False),
        (date(2025, 12, 31), False),
        *((date(2026, 1, d), False) for d in range(1, 12)),  # 1-8 holidays, 9 moved, 10-11 weekend
        (date(2026, 1, 12), True),
        (date(2026, 2, 20), True),
        (date(2026, 2, 23), False),
        (date(2026, 3, 9), False),  # 8 March is a Sunday
        (date(2026, 5, 11), False),  # 9 May is a Saturday
        (date(2026, 12, 31), False),
        (date(2027, 2, 20), True),  # Saturday worked instead of 22 February
        (date(2027, 2, 22), False),
    ],
)
def test_production_calendar(day: date, working: bool) -> None:
    assert CAL.is_working_day(day) is working


def test_matches_the_holidays_package_in_known_years() -> None:
    ru = holidays.country_holidays("RU", years=range(2013, 2028))
    day = date(2013, 1, 1)
    while day.year < 2028:
        assert CAL.is_working_day(day) == ru.is_working_day(day), day
        day += timedelta(days=1)


def test_known_years_and_coverage_warning() -> None:
    years = CAL.known_years()
    assert {2024, 2025, 2026, 2027} <= set(years)
    assert 2031 not in years
    assert CAL.coverage_warning(2026) is None
    assert CAL.coverage_warning(2024) is None
    warning = CAL.coverage_warning(2031)
    assert warning is not None and "2031" in warning and "extra_days_off" in warning
    # countries without yearly decrees never warn
    assert WorkCalendar(country="DE", timezone="Europe/Berlin").coverage_warning(2031) is None


def test_statutory_transfer_applied_after_the_last_known_decree() -> None:
    # holidays has no art. 112 transfers after 2027: 4 Nov 2028 is a Saturday, so Monday 6 Nov is off.
    assert 2028 not in CAL.known_years()
    assert holidays.country_holidays("RU", years=2028).is_working_day(date(2028, 11, 6))
    assert not CAL.is_working_day(date(2028, 11, 6))
    assert CAL.is_working_day(date(2028, 11, 7))
    assert not CAL.is_working_day(date(2030, 2, 25))  # 23 Feb 2030 is a Saturday
    assert not CAL.is_working_day(date(2031, 3, 10))  # 8 Mar 2031 is a Saturday
    assert not CAL.is_working_day(date(2031, 2, 24))  # 23 Feb 2031 is a Sunday
    # The New Year holidays are not transferred by the statute (the decree moves them): 2028-01-10 works.
    assert CAL.is_working_day(date(2028, 1, 10))


def test_config_overrides_win_over_the_package() -> None:
    cal = WorkCalendar(
        extra_days_off=[date(2026, 2, 24), "2026-02-25"],  # type: ignore[list-item]
        extra_working_days=[date(2026, 2, 21), date(2026, 2, 23)],
    )
    assert not cal.is_working_day(date(2026, 2, 24))
    assert not cal.is_working_day(date(2026, 2, 25))
    assert cal.is_working_day(date(2026, 2, 21))  # a Saturday
    assert cal.is_working_day(date(2026, 2, 23))  # a holiday
    assert cal.add(msk(2026, 2, 20, 17), "4wh") == msk(2026, 2, 21, 12)


def test_six_day_week() -> None:
    cal = WorkCalendar(weekend=[6])
    assert cal.is_working_day(date(2026, 2, 21))
    assert cal.add(msk(2026, 2, 20, 17), "4wh") == msk(2026, 2, 21, 12)


# --------------------------------------------------------------------------------------------
# concrete deadlines
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cal", "start", "duration", "expected"),
    [
        # Friday 17:00 + 4 working hours: 1 h on Friday, 3 h on Monday
        (CAL, msk(2026, 3, 13, 17), "4 working hours", msk(2026, 3, 16, 12)),
        # ... Tuesday when Monday is a holiday (23 February 2026)
        (CAL, msk(2026, 2, 20, 17), "4 working hours", msk(2026, 2, 24, 12)),
        # ... the working Saturday 27 April 2024 counts
        (CAL, msk(2024, 4, 26, 17), "4wh", msk(2024, 4, 27, 12)),
        # 3 working days across the 2024 May holidays: 26 Apr 8 h, 27 Apr (Sat) 9 h, 2 May 9 h, 3 May 1 h
        (CAL, msk(2024, 4, 26, 10), "3 working days", msk(2024, 5, 3, 10)),
        # 2025: 7 May (3 h), 8-11 May off, 12 May (9 h), 13 May (9 h), 14 May (6 h)
        (CAL, msk(2025, 5, 7, 15), "3 рабочих дня", msk(2025, 5, 14, 15)),
        # 2026: 1 May Friday off, 4-5 May work
        (CAL, msk(2026, 4, 30, 10), "3wd", msk(2026, 5, 6, 10)),
        # over the New Year: 30 Dec 2025 is the last working day before 12 Jan 2026
        (CAL, msk(2025, 12, 30, 12), "1 working day", msk(2026, 1, 12, 12)),
        # working Saturday 1 Nov 2025, then 3 and 4 Nov off
        (CAL, msk(2025, 10, 31, 12), "2 working days", msk(2025, 11, 5, 12)),
        # landing exactly on the end of the day stays there
        (CAL, msk(2026, 3, 13, 17), "1 working hour", msk(2026, 3, 13, 18)),
        (CAL, msk(2026, 3, 12, 9), "1 working day", msk(2026, 3, 12, 18)),
        (CAL, msk(2026, 3, 12, 9), "60 working minutes", msk(2026, 3, 12, 10)),
        # starting outside work hours: first to the next work start
        (CAL, msk(2026, 3, 14, 11), "1 working hour", msk(2026, 3, 16, 10)),
        (CAL, msk(2026, 3, 13, 19), "4 working hours", msk(2026, 3, 16, 13)),
        (CAL, msk(2026, 3, 12, 7), "1 working hour", msk(2026, 3, 12, 10)),
        (CAL, msk(2026, 3, 13, 18), "1 working day", msk(2026, 3, 16, 18)),
        # calendar time ignores the calendar
        (CAL, msk(2026, 2, 20, 17), "24h", msk(2026, 2, 21, 17)),
        (CAL, msk(2026, 2, 20, 17), "2 days", msk(2026, 2, 22, 17)),
        (CAL, msk(2026, 2, 20, 17), "30 min", msk(2026, 2, 20, 17, 30)),
        # zero changes nothing
        (CAL, msk(2026, 3, 14, 11), "0 working hours", msk(2026, 3, 14, 11)),
        # lunch break 13:00-14:00
        (CALENDARS[1], msk(2026, 3, 12, 12), "2 working hours", msk(2026, 3, 12, 15)),
        (CALENDARS[1], msk(2026, 3, 12, 12), "1 working hour", msk(2026, 3, 12, 13)),
        (CALENDARS[1], msk(2026, 3, 12, 13, 30), "1 working hour", msk(2026, 3, 12, 15)),
        (CALENDARS[1], msk(2026, 3, 12, 10), "1 working day", msk(2026, 3, 13, 10)),
    ],
)
def test_add_table(cal: WorkCalendar, start: datetime, duration: str, expected: datetime) -> None:
    result = cal.add(start, duration)
    assert result == expected
    assert result.tzinfo == cal.tz


@pytest.mark.parametrize(
    ("end", "duration", "expected"),
    [
        # "reminder 4 working hours before" a Tuesday-noon deadline after the 23 February holiday
        (msk(2026, 2, 24, 12), "4 working hours", msk(2026, 2, 20, 17)),
        # from the start of a day: back to the previous working day
        (msk(2026, 3, 16, 9), "1 working hour", msk(2026, 3, 13, 17)),
        # landing exactly on the start of a day stays there
        (msk(2026, 3, 16, 10), "1 working hour", msk(2026, 3, 16, 9)),
        # from outside work hours: back from the end of the previous period
        (msk(2026, 3, 14, 11), "1 working hour", msk(2026, 3, 13, 17)),
        (msk(2024, 5, 3, 10), "3 working days", msk(2024, 4, 26, 10)),
        (msk(2026, 2, 21, 17), "24h", msk(2026, 2, 20, 17)),
        (msk(2026, 2, 20, 17), "-4 working hours", msk(2026, 2, 24, 12)),
    ],
)
def test_subtract_table(end: datetime, duration: str, expected: datetime) -> None:
    assert CAL.subtract(end, duration) == expected


def test_other_zones_in_results_in_calendar_zone() -> None:
    start = datetime(2026, 2, 20, 14, 0, tzinfo=UTC)  # 17:00 in Moscow
    result = CAL.add(start, "4 working hours")
    assert result == msk(2026, 2, 24, 12)
    assert result.tzinfo == MSK
    assert CAL.add(start, "24h").tzinfo == MSK
    # 2026-02-20 09:30 in Vladivostok is 02:30 in Moscow: counts from 09:00 Moscow
    vlad = datetime(2026, 2, 20, 9, 30, tzinfo=ZoneInfo("Asia/Vladivostok"))
    assert CAL.add(vlad, "1wh") == msk(2026, 2, 20, 10)


def test_working_time_between() -> None:
    assert CAL.working_time_between(msk(2026, 2, 20, 17), msk(2026, 2, 24, 12)) == timedelta(hours=4)
    assert CAL.working_time_between(msk(2026, 2, 24, 12), msk(2026, 2, 20, 17)) == timedelta(hours=-4)
    assert CAL.working_time_between(msk(2025, 12, 30, 9), msk(2026, 1, 12, 18)) == timedelta(hours=18)
    assert CAL.working_time_between(msk(2026, 3, 14, 0), msk(2026, 3, 15, 23)) == timedelta(0)
    assert CAL.working_time_between(msk(2024, 4, 27, 8), msk(2024, 4, 27, 20)) == timedelta(hours=9)


def test_is_working_time_and_next_working_moment() -> None:
    assert CAL.is_working_time(msk(2026, 3, 12, 9))
    assert CAL.is_working_time(msk(2026, 3, 12, 17, 59, 59))
    assert not CAL.is_working_time(msk(2026, 3, 12, 18))
    assert not CAL.is_working_time(msk(2026, 3, 12, 8, 59))
    assert not CAL.is_working_time(msk(2026, 3, 14, 12))  # Saturday
    assert CAL.is_working_time(msk(2024, 4, 27, 12))  # working Saturday
    assert CAL.next_working_moment(msk(2026, 3, 12, 12, 34)) == msk(2026, 3, 12, 12, 34)
    assert CAL.next_working_moment(msk(2026, 3, 12, 18)) == msk(2026, 3, 13, 9)
    assert CAL.next_working_moment(msk(2025, 12, 30, 18)) == msk(2026, 1, 12, 9)


def test_end_of_working_day_and_next_working_day_start() -> None:
    assert CAL.end_of_working_day(msk(2026, 3, 11, 10)) == msk(2026, 3, 11, 18)
    assert CAL.end_of_working_day(msk(2026, 3, 11, 7)) == msk(2026, 3, 11, 18)
    assert CAL.end_of_working_day(msk(2026, 3, 11, 18)) == msk(2026, 3, 11, 18)
    assert CAL.end_of_working_day(msk(2026, 3, 11, 19)) == msk(2026, 3, 12, 18)
    assert CAL.end_of_working_day(msk(2026, 2, 20, 19)) == msk(2026, 2, 24, 18)
    assert CAL.end_of_working_day(msk(2026, 3, 14, 12)) == msk(2026, 3, 16, 18)
    assert CAL.next_working_day_start(msk(2026, 2, 20, 8)) == msk(2026, 2, 24, 9)
    assert CAL.next_working_day_start(msk(2025, 12, 30, 10)) == msk(2026, 1, 12, 9)
    assert CALENDARS[1].end_of_working_day(msk(2026, 3, 11, 13, 30)) == msk(2026, 3, 11, 18)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (msk(2026, 5, 3, 12), msk(2026, 5, 29, 18)),  # 30-31 May 2026 is a weekend
        (msk(2026, 2, 1, 12), msk(2026, 2, 27, 18)),  # 28 Feb 2026 is a Saturday
        (msk(2026, 1, 15, 12), msk(2026, 1, 30, 18)),  # 31 Jan 2026 is a Saturday
        (msk(2025, 12, 1, 12), msk(2025, 12, 30, 18)),  # 31 Dec 2025 is off by decree
        (msk(2024, 11, 30, 23), msk(2024, 11, 29, 18)),  # may be before the moment
        (msk(2026, 3, 31, 12), msk(2026, 3, 31, 18)),
        # 22:00 UTC on 31 January is 01:00 on 1 February in Moscow: February counts
        (datetime(2026, 1, 31, 22, tzinfo=UTC), msk(2026, 2, 27, 18)),
    ],
)
def test_end_of_month(moment: datetime, expected: datetime) -> None:
    assert CAL.end_of_month(moment) == expected


def test_end_of_month_without_working_days() -> None:
    cal = WorkCalendar(extra_days_off=[date(2026, 2, d) for d in range(1, 29)])
    with pytest.raises(CalendarError, match="2026-02"):
        cal.end_of_month(msk(2026, 2, 10))


def test_no_working_days_at_all_is_an_error_not_a_hang() -> None:
    cal = WorkCalendar(weekend=range(7))
    # decreed working Saturdays still work (2027-02-20 is one), so look after the last decree
    assert cal.add(msk(2026, 3, 12, 10), "1wh") == msk(2027, 2, 20, 10)
    with pytest.raises(CalendarError, match="no working"):
        cal.add(msk(2028, 3, 12, 10), "1wh")
    with pytest.raises(CalendarError, match="no working"):
        cal.next_working_day_start(msk(2028, 3, 12, 10))


def test_long_durations_round_trip() -> None:
    # Speed belongs to benchmarks, not to a timed test on a shared machine.
    end = CAL.add(msk(2024, 1, 9, 10), "1000 working days")
    assert CAL.subtract(end, "1000 working days") == msk(2024, 1, 9, 10)
    assert CAL.working_time_between(msk(2024, 1, 9, 10), end) == timedelta(hours=9000)


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(calendars, moments, working_durations)
def test_working_add_lands_on_working_time_or_period_end(cal: WorkCalendar, start: datetime, d: Duration) -> None:
    assume(d.amount > 0)
    result = cal.add(start, d)
    assert result.tzinfo == cal.tz
    assert u(result) > u(start)
    assert is_working_or_period_end(cal, result)


@SETTINGS
@given(calendars, moments, st.sampled_from(WORKING_UNITS), st.integers(0, 300), st.integers(0, 300))
def test_working_add_is_monotonic(cal: WorkCalendar, start: datetime, unit: str, a: int, b: int) -> None:
    low, high = sorted((a, b))
    first, second = cal.add(start, Duration(low, unit)), cal.add(start, Duration(high, unit))  # type: ignore[arg-type]
    assert u(first) <= u(second)
    if low < high:
        assert u(first) < u(second)


@SETTINGS
@given(calendars, moments, st.sampled_from(WORKING_UNITS), st.integers(0, 300), st.integers(0, 300))
def test_working_add_is_associative(cal: WorkCalendar, start: datetime, unit: str, a: int, b: int) -> None:
    da, db = Duration(a, unit), Duration(b, unit)  # type: ignore[arg-type]
    assert u(cal.add(cal.add(start, da), db)) == u(cal.add(start, Duration(a + b, unit)))  # type: ignore[arg-type]


@SETTINGS
@given(calendars, moments, working_durations)
def test_working_time_between_measures_add(cal: WorkCalendar, start: datetime, d: Duration) -> None:
    assert cal.working_time_between(start, cal.add(start, d)) == as_delta(cal, d)
    assert cal.working_time_between(cal.add(start, d), start) == -as_delta(cal, d)


@SETTINGS
@given(calendars, moments, moments, moments)
def test_working_time_between_is_additive(cal: WorkCalendar, a: datetime, b: datetime, c: datetime) -> None:
    assert cal.working_time_between(a, b) + cal.working_time_between(b, c) == cal.working_time_between(a, c)


@SETTINGS
@given(calendars, moments, working_durations)
def test_subtract_inverts_add_on_working_moments(cal: WorkCalendar, start: datetime, d: Duration) -> None:
    t = cal.next_working_moment(start)
    assert cal.is_working_time(t)
    assert u(cal.subtract(cal.add(t, d), d)) == u(t)


@SETTINGS
@given(calendars, moments, working_durations, st.integers(1, 600))
def test_add_inverts_subtract(cal: WorkCalendar, start: datetime, d: Duration, offset: int) -> None:
    # any moment inside a period or at its end (add of a positive amount lands on one)
    t = cal.add(start, Duration(offset, "working_minutes"))
    back = cal.subtract(t, d)
    assert d.amount == 0 or cal.is_working_time(back)
    assert u(cal.add(back, d)) == u(t)


@SETTINGS
@given(calendars, moments, working_durations)
def test_negative_add_is_subtract(cal: WorkCalendar, start: datetime, d: Duration) -> None:
    assert u(cal.add(start, -d)) == u(cal.subtract(start, d))
    assert u(cal.subtract(start, -d)) == u(cal.add(start, d))
    assert u(cal.add(start, str(d))) == u(cal.add(start, d))


@SETTINGS
@given(calendars, moments, st.integers(0, 60))
def test_working_days_equal_day_length_in_working_time(cal: WorkCalendar, start: datetime, n: int) -> None:
    minutes = n * DAY_HOURS[id(cal)]
    by_days = cal.add(start, Duration(n, "working_days"))
    assert u(by_days) == u(cal.add(start, Duration(minutes, "working_minutes")))
    if minutes % 60 == 0:
        assert u(by_days) == u(cal.add(start, f"{minutes // 60} working hours"))
    assert cal.subtract(by_days, Duration(n, "working_days")) == cal.subtract(
        by_days, Duration(minutes, "working_minutes")
    )


@SETTINGS
@given(moments, st.integers(1, 60))
def test_working_days_keep_the_time_of_day(start: datetime, n: int) -> None:
    t = CAL.next_working_moment(start)
    local = t.astimezone(MSK)
    assume(local.time() != local.replace(hour=9, minute=0, second=0, microsecond=0).time())
    result = CAL.add(t, Duration(n, "working_days"))
    assert result.time() == local.time()
    assert CAL.is_working_day(result.date())
    # exactly n working days later (start day not counted)
    days = [local.date() + timedelta(days=i) for i in range(1, (result.date() - local.date()).days + 1)]
    assert sum(CAL.is_working_day(day) for day in days) == n


@SETTINGS
@given(calendars, moments, st.integers(-2000, 2000), st.sampled_from(["minutes", "hours", "days"]))
def test_calendar_time_ignores_the_calendar(cal: WorkCalendar, start: datetime, n: int, unit: str) -> None:
    delta = {"minutes": timedelta(minutes=n), "hours": timedelta(hours=n), "days": timedelta(days=n)}[unit]
    absolute = start.astimezone(UTC)  # aware + timedelta on a zone is wall-clock arithmetic
    assert u(cal.add(start, Duration(n, unit))) == absolute + delta  # type: ignore[arg-type]
    assert u(cal.subtract(start, Duration(n, unit))) == absolute - delta  # type: ignore[arg-type]


@SETTINGS
@given(calendars, moments)
def test_next_working_moment_is_the_first_working_moment(cal: WorkCalendar, start: datetime) -> None:
    t = cal.next_working_moment(start)
    assert u(t) >= u(start)
    assert cal.is_working_time(t)
    assert cal.working_time_between(start, t) == timedelta(0)
    assert (u(t) == u(start)) == cal.is_working_time(start)


@SETTINGS
@given(calendars, moments)
def test_day_helpers(cal: WorkCalendar, moment: datetime) -> None:
    end_of_day = cal.end_of_working_day(moment)
    assert u(end_of_day) >= u(moment)
    assert not cal.is_working_time(end_of_day)
    assert cal.is_working_time(u(end_of_day) - MICRO)
    start = cal.next_working_day_start(moment)
    assert start.date() > moment.astimezone(cal.tz).date()
    assert cal.is_working_time(start) and not cal.is_working_time(u(start) - MICRO)
    # end_of_month: the last working moment of the month, in that month
    month_end = cal.end_of_month(moment)
    local = moment.astimezone(cal.tz)
    assert (month_end.year, month_end.month) == (local.year, local.month)
    first_of_next = (local.replace(day=28) + timedelta(days=4)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    assert cal.working_time_between(month_end, first_of_next) == timedelta(0)
    assert cal.is_working_time(u(month_end) - MICRO)
