"""Working-day calendar for regulation deadlines ("within 3 working days", "4 working hours before").

The production calendar (days off, holidays, moved days off and working Saturdays fixed by the
government's yearly decree) comes from the PyPI ``holidays`` package; ``workalendar`` is wrong for
Russia and is not used. This module is pure: no I/O, no clock (every "now" is passed in).

Semantics
---------
* Every datetime passed in must be timezone-aware (a naive one raises :class:`CalendarError`);
  every datetime returned is in the calendar's time zone (``WorkCalendar.tz``). Internally all
  arithmetic is done in UTC, so DST transitions never stretch or shrink a duration.
* ``minutes`` / ``hours`` / ``days`` are plain calendar time on the absolute time line:
  ``"24h"`` is ``timedelta(hours=24)`` whatever the calendar says, ``"2 days"`` is 48 hours.
* ``working_minutes`` / ``working_hours`` count only time inside the work hours of working days.
  Working time is the union of half-open periods ``[start, end)`` (one per work-hours range per
  working day). Adding:

  - a start outside working time first moves to the next working moment
    (:meth:`WorkCalendar.next_working_moment`);
  - landing exactly on the end of a work period stays there: Friday 17:00 + 1 working hour is
    Friday 18:00, not Monday 09:00. The result of a working add is therefore always a working
    moment or the end of a work period.

* ``working_days``: N working days are N x (length of the work day) of working time, so
  ``add(t, "N working days") == add(t, f"{N*H} working hours")`` where H is the length of the
  work day in hours. Starting inside work hours this gives the same local time of day N working
  days later; starting exactly at the start of the work day it gives the *end* of the N-th working
  day counting the start day (Mon 09:00 + 1 working day = Mon 18:00, "by the end of the day").
  Starting outside work hours counts from the next work start (Sat 11:00 + 1 working day =
  Mon 18:00).
* A zero duration returns the start unchanged (so ``add(add(t, a), b) == add(t, a + b)`` holds
  for every a, b >= 0).
* ``subtract`` walks backwards: an end outside working time first moves back to the end of the
  previous work period, and landing exactly on the start of a period stays there. It is the exact
  inverse of ``add``: ``subtract(add(t, d), d) == t`` for every working moment t, and
  ``add(subtract(t, d), d) == t`` for every t inside a period or at its end (not at its start).
  ``add`` with a negative duration is ``subtract`` and vice versa.
* ``working_time_between(a, b)`` is the working time inside ``[a, b]``, negative when b < a;
  ``working_time_between(t, add(t, d)) == d`` for working durations d >= 0.
* ``end_of_working_day(t)``: end of the last work period of t's local date when that is a working
  day and t is not after it (18:00 itself gives 18:00), else of the next working day.
  ``end_of_month(t)``: end of work on the last working day of t's local month (it can be earlier
  than t). ``next_working_day_start(t)``: work start of the first working day after t's date.
* Work hours are ``"HH:MM-HH:MM"``, or several ranges for a break: ``"09:00-13:00, 14:00-18:00"``
  (``24:00`` may end a range). The work-day length is the sum of the ranges.
* Python compares two aware datetimes *of the same zone* by wall clock, ignoring ``fold``; in a
  zone with DST compare results in UTC (Moscow has had no DST since 2014).

Production calendar data
------------------------
``holidays`` has the decree data (moved days off, working Saturdays, holidays falling on a weekend
moved to a weekday) for the years in :meth:`WorkCalendar.known_years` (for Russia 1991-2027 in
holidays 0.109; the range is read from the package, so a newer package extends it). For later
years it has only the statutory holidays, and even the Labour Code art. 112 transfer (a holiday on
a Saturday or Sunday makes the next working day a day off) is missing there, because the package
hard-codes those transfers per year. For Russian years after the last known decree this module
therefore applies art. 112 itself (except for the 1-8 January holidays, whose weekend days the
decree moves to dates nobody can predict), and :meth:`WorkCalendar.coverage_warning` says so.
Configuration (``extra_days_off`` / ``extra_working_days``) wins over the package in every year.

Single dates may have their own work hours (``day_hours``: an event day worked 15:00-23:00);
"N working days" still counts the regular work day's length. Not modelled: the pre-holiday day
shortened by one hour (Labour Code art. 95), shifts crossing midnight, per-weekday work hours.
"""

from __future__ import annotations

import calendar as _stdcal
import functools
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

__all__ = ["CalendarError", "Duration", "Unit", "WorkCalendar", "parse_duration"]


class CalendarError(ValueError):
    """Bad duration text, bad work hours or configuration, a naive datetime, and the like."""


Unit = Literal["minutes", "hours", "days", "working_hours", "working_days", "working_minutes"]
_UNITS: tuple[str, ...] = get_args(Unit)
_WORKING_UNITS = frozenset({"working_minutes", "working_hours", "working_days"})

# How far to look for a working day before deciding the configuration has none at all
# (e.g. weekend=range(7)); a real production calendar never has more than ~12 days off in a row.
_SEARCH_LIMIT_DAYS = 1000

# ---------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------

_SINGULAR = {
    "minutes": "minute",
    "hours": "hour",
    "days": "day",
    "working_minutes": "working minute",
    "working_hours": "working hour",
    "working_days": "working day",
}

# Unit spellings after the number, matched against the whole lower-cased, space-collapsed rest.
# Russian forms cover the three plural cases (1 рабочий день / 3 рабочих дня / 5 рабочих дней).
_WORKING_EN = r"(?:working|work|business)[\s-]*"
_WORKING_RU = r"(?:рабочий|рабочая|рабочие|рабочих|рабочего|рабочую|раб\.?)\s*"
_UNIT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (unit, re.compile(pattern))
    for unit, pattern in (
        ("working_days", rf"wd|bd|{_WORKING_EN}days?|{_WORKING_RU}(?:день|дня|дней|дн\.?)"),
        ("working_hours", rf"wh|{_WORKING_EN}(?:hours?|hrs?)|{_WORKING_RU}(?:час|часа|часов|ч\.?)"),
        (
            "working_minutes",
            rf"wm|{_WORKING_EN}(?:minutes?|mins?)|{_WORKING_RU}(?:минута|минуты|минут|минуту|мин\.?)",
        ),
        ("days", r"d|days?|день|дня|дней|дн\.?|сутки|суток"),
        ("hours", r"h|hours?|hrs?|час|часа|часов|ч\.?"),
        ("minutes", r"m|min|mins|minutes?|минута|минуты|минут|минуту|мин\.?"),
    )
)
_NUMBER = re.compile(r"([+-]?)\s*(\d+)\s*(.*)", re.DOTALL)


@dataclass(frozen=True)
class Duration:
    """An amount of time in one unit; working units are counted on the calendar.

    ``amount`` may be negative: ``add`` with a negative duration subtracts.
    """

    amount: int
    unit: Unit

    def __post_init__(self) -> None:
        # bool is an int subclass; "True working days" is a bug, not a duration.
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise CalendarError(f"duration amount must be an integer, got {self.amount!r}")
        if self.unit not in _UNITS:
            raise CalendarError(f"unknown duration unit {self.unit!r}; known: {', '.join(_UNITS)}")

    @property
    def is_working(self) -> bool:
        """True when the duration is counted on the working calendar."""
        return self.unit in _WORKING_UNITS

    def __neg__(self) -> Duration:
        return Duration(-self.amount, self.unit)

    def __str__(self) -> str:
        """E.g. ``"3 working days"``, ``"1 hour"``, ``"-4 working hours"``; parse_duration reads it back."""
        name = _SINGULAR[self.unit] if abs(self.amount) == 1 else self.unit.replace("_", " ")
        return f"{self.amount} {name}"


def parse_duration(text: str) -> Duration:
    """Read a duration such as ``"24h"``, ``"3 working days"``, ``"4wh"`` or ``"3 рабочих дня"``.

    Case and whitespace do not matter; a leading ``-`` gives a negative amount. Anything not
    understood raises :class:`CalendarError` naming the text.
    """
    if not isinstance(text, str):
        raise CalendarError(f"a duration is text like '3 working days', got {text!r}")
    return _parse_duration(text)


# Rules read the same few duration texts from the config on every event (a deadline's due,
# its reminder): parsing them once each is worth it. Duration is frozen, so one instance can
# be shared; errors are not cached (each raises again).
@functools.lru_cache(maxsize=4096)
def _parse_duration(text: str) -> Duration:
    normalised = " ".join(text.lower().replace("ё", "е").split())
    match = _NUMBER.fullmatch(normalised)
    if match:
        sign, digits, rest = match.groups()
        for unit, pattern in _UNIT_PATTERNS:
            if pattern.fullmatch(rest):
                amount = int(digits)
                return Duration(-amount if sign == "-" else amount, unit)  # type: ignore[arg-type]
    raise CalendarError(
        f"cannot read duration {text!r}; expected a whole number and a unit, e.g. '24h', '30 min', "
        "'2 days', '3 working days', '4 working hours', '90 working minutes', '3 рабочих дня'"
    )


def _as_duration(duration: Duration | str) -> Duration:
    if isinstance(duration, Duration):
        return duration
    return parse_duration(duration)


# ---------------------------------------------------------------------------------------------
# Work hours
# ---------------------------------------------------------------------------------------------

_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")


def _parse_clock(text: str, whole: str) -> int:
    """Minutes since midnight for "HH:MM"; "24:00" is allowed (as a period end only)."""
    match = _CLOCK.fullmatch(text.strip())
    if not match:
        raise CalendarError(f"work hours {whole!r}: {text.strip()!r} is not a time like 09:00")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise CalendarError(f"work hours {whole!r}: {text.strip()!r} is not a valid time of day")
    return hours * 60 + minutes


def _parse_work_hours(text: str) -> tuple[tuple[int, int], ...]:
    """``"09:00-18:00"`` or ``"09:00-13:00, 14:00-18:00"`` -> ((540, 1080),) in minutes of the day."""
    if not isinstance(text, str) or not text.strip():
        raise CalendarError(f"work hours must be text like '09:00-18:00', got {text!r}")
    periods: list[tuple[int, int]] = []
    for part in text.split(","):
        bounds = part.split("-")
        if len(bounds) != 2:
            raise CalendarError(f"work hours {text!r}: {part.strip()!r} is not a range like 09:00-18:00")
        start, end = (_parse_clock(b, text) for b in bounds)
        if start >= 24 * 60:
            raise CalendarError(f"work hours {text!r}: a period cannot start at 24:00")
        if end <= start:
            raise CalendarError(
                f"work hours {text!r}: {part.strip()!r} ends before it starts (night shifts across "
                "midnight are not supported)"
            )
        if periods and start < periods[-1][1]:
            raise CalendarError(f"work hours {text!r}: periods must be in order and must not overlap")
        periods.append((start, end))
    return tuple(periods)


# ---------------------------------------------------------------------------------------------
# The calendar
# ---------------------------------------------------------------------------------------------

_Interval = tuple[datetime, datetime]  # [start, end) in UTC


class WorkCalendar:
    """Working days and hours of one company: production calendar + work hours + config overrides."""

    def __init__(
        self,
        *,
        timezone: str = "Europe/Moscow",
        work_hours: str = "09:00-18:00",
        country: str = "RU",
        extra_days_off: Iterable[date] = (),
        extra_working_days: Iterable[date] = (),
        weekend: Iterable[int] = (5, 6),
        day_hours: Mapping[date, str] | None = None,
    ) -> None:
        """Build the calendar; every problem with the configuration raises :class:`CalendarError`.

        ``extra_days_off`` / ``extra_working_days`` are applied on top of the production calendar
        and win over it; ``weekend`` holds weekday numbers (Monday = 0). ``day_hours`` gives
        single dates their own work hours (a shift such as an event day worked 15:00-23:00); such
        a date is a working day whatever the production calendar says.
        """
        try:
            self.tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise CalendarError(f"unknown time zone {timezone!r}") from exc
        self.periods = _parse_work_hours(work_hours)
        self.work_hours = work_hours
        # Wall-clock length of a work day; "N working days" is N times this much working time.
        self.day_length = timedelta(minutes=sum(end - start for start, end in self.periods))

        self.weekend = frozenset(weekend)
        if not self.weekend <= set(range(7)):
            raise CalendarError(f"weekend holds weekday numbers 0 (Monday) .. 6 (Sunday), got {sorted(self.weekend)}")

        self.extra_days_off = frozenset(_as_date(d, "extra_days_off") for d in extra_days_off)
        self.extra_working_days = frozenset(_as_date(d, "extra_working_days") for d in extra_working_days)
        self.day_periods = {
            _as_date(day, "day_hours"): _parse_work_hours(hours) for day, hours in (day_hours or {}).items()
        }
        if shifted_off := self.extra_days_off & set(self.day_periods):
            listed = ", ".join(d.isoformat() for d in sorted(shifted_off))
            raise CalendarError(f"dates both days off and given work hours: {listed}")
        if both := self.extra_days_off & self.extra_working_days:
            listed = ", ".join(d.isoformat() for d in sorted(both))
            raise CalendarError(f"dates both in extra_days_off and extra_working_days: {listed}")

        self.country = country.upper() if isinstance(country, str) else country
        try:
            probe = holidays.country_holidays(self.country, years=())
        except (NotImplementedError, AttributeError, TypeError) as exc:
            raise CalendarError(f"the holidays package has no calendar for country {country!r}") from exc
        self._known = _decree_years(probe)

        self._lock = threading.Lock()
        self._years: dict[int, tuple[frozenset[date], frozenset[date]]] = {}
        self._intervals_cache: dict[date, tuple[_Interval, ...]] = {}
        self._names: dict[int, list[tuple[date, str]]] = {}
        self._between_cache: dict[tuple[date, date], tuple[tuple[date, str], ...]] = {}
        self._after_edge: dict[datetime, _Interval] = {}
        self._before_edge: dict[datetime, _Interval] = {}
        self._sums: dict[tuple[datetime, Duration | str, bool], datetime] = {}

    def __repr__(self) -> str:
        return f"WorkCalendar(country={self.country!r}, timezone={self.tz.key!r}, work_hours={self.work_hours!r})"

    # -- production calendar ------------------------------------------------------------------

    def known_years(self) -> range:
        """Years for which the package has the decree data (moved days off, working Saturdays).

        For countries without yearly decrees this is simply the years the package supports.
        """
        return self._known

    def coverage_warning(self, year: int) -> str | None:
        """A sentence for humans when ``year`` has only statutory dates, else None."""
        if year in self._known:
            return None
        art112 = (
            " Holidays falling on a weekend are moved to the next working day by Labour Code art. 112;"
            " the New Year weekend transfers are unknown."
            if self._applies_art112(year)
            else ""
        )
        return (
            f"The production calendar for {year} is not known to the holidays package "
            f"(decrees known for {self._known.start}-{self._known.stop - 1}): only statutory holidays "
            f"are used for {self.country}.{art112} Add the decree's moved days with "
            "extra_days_off / extra_working_days, or upgrade the holidays package."
        )

    def is_working_day(self, day: date) -> bool:
        """True when ``day`` is a working day (config overrides first, then the production calendar)."""
        if isinstance(day, datetime):
            raise CalendarError(f"is_working_day takes a date, got the datetime {day.isoformat()}")
        if day in self.extra_working_days or day in self.day_periods:
            return True
        if day in self.extra_days_off:
            return False
        days_off, weekend_workdays = self._year(day.year)
        if day in days_off:
            return False
        if day.weekday() in self.weekend:
            return day in weekend_workdays
        return True

    def holidays_between(self, first: date, last: date) -> list[tuple[date, str]]:
        """Public holidays (by name, not moved days off) from ``first`` to ``last`` inclusive."""
        # Rules ask for the same window (the next N days from today) on every event: the
        # answer is kept per window, and each caller gets its own list.
        cached = self._between_cache.get((first, last))
        if cached is None:
            cached = tuple(
                (day, name)
                for year in range(first.year, last.year + 1)
                for day, name in self._named_holidays(year)
                if first <= day <= last
            )
            if len(self._between_cache) >= 4096:
                self._between_cache.clear()  # a long-running worker moves on through the days
            self._between_cache[(first, last)] = cached
        return list(cached)

    def _named_holidays(self, year: int) -> list[tuple[date, str]]:
        cached = self._names.get(year)
        if cached is None:
            lib = holidays.country_holidays(self.country, years=year, language="ru") if 1 <= year <= 9999 else {}
            # Moved days off ("Выходной (перенесено …)", "… (выходной)"; in other countries' default
            # language "Day off (substituted …)", "… (observed)") are not holidays of their own.
            cached = sorted((d, str(n)) for d, n in lib.items() if not _moved_day_off(str(n)))
            self._names[year] = cached
        return cached

    def _year(self, year: int) -> tuple[frozenset[date], frozenset[date]]:
        """(days off, working weekend days) of one year, computed once (thread-safe)."""
        cached = self._years.get(year)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._years.get(year)
            if cached is None:
                cached = self._years[year] = self._load_year(year)
        return cached

    def _load_year(self, year: int) -> tuple[frozenset[date], frozenset[date]]:
        # A fresh object per year: the package fills weekend_workdays lazily per expanded year and
        # is not safe to expand from several threads.
        if not 1 <= year <= 9999:
            return frozenset(), frozenset()
        lib = holidays.country_holidays(self.country, years=year)
        days_off = {d for d in lib if d.year == year}
        weekend_workdays = {d for d in lib.weekend_workdays if d.year == year}
        if self._applies_art112(year):
            # Labour Code art. 112 part 2: a holiday on a day off moves the day off to the next
            # working day, except the 1-8 January holidays (those go wherever the decree says).
            for holiday in sorted(days_off):
                if holiday.weekday() in self.weekend and not (holiday.month == 1 and holiday.day <= 8):
                    # Bounded: a weekend covering the whole week has no "next working day".
                    for step in range(1, 15):
                        moved = holiday + timedelta(days=step)
                        if moved.weekday() not in self.weekend and moved not in days_off:
                            if moved.year == year:
                                days_off.add(moved)
                            break
        return frozenset(days_off), frozenset(weekend_workdays)

    def _applies_art112(self, year: int) -> bool:
        return self.country == "RU" and year >= self._known.stop

    # -- working periods ----------------------------------------------------------------------

    def _intervals(self, day: date) -> tuple[_Interval, ...]:
        """The work periods of ``day`` as UTC [start, end) pairs; empty on a day off."""
        cached = self._intervals_cache.get(day)
        if cached is not None:
            return cached
        result: tuple[_Interval, ...] = ()
        if self.is_working_day(day):
            midnight = datetime.combine(day, time())
            pairs = []
            for start, end in self.day_periods.get(day, self.periods):
                s = (midnight + timedelta(minutes=start)).replace(tzinfo=self.tz).astimezone(UTC)
                e = (midnight + timedelta(minutes=end)).replace(tzinfo=self.tz).astimezone(UTC)
                if e > s:  # a period swallowed by a DST gap is simply skipped
                    pairs.append((s, e))
            result = tuple(pairs)
        self._intervals_cache[day] = result
        return result

    def _local_date(self, moment_utc: datetime) -> date:
        return moment_utc.astimezone(self.tz).date()

    def _forward(self, t: datetime) -> _Interval:
        """(working moment at or after t, end of its period): t itself when t is inside a period."""
        day = self._local_date(t) - timedelta(days=1)  # a period of the day before may reach past midnight
        for _ in range(_SEARCH_LIMIT_DAYS):
            for start, end in self._intervals(day):
                if end > t:
                    return max(start, t), end
            day += timedelta(days=1)
        raise CalendarError(f"no working time within {_SEARCH_LIMIT_DAYS} days after {t.isoformat()}")

    def _backward(self, t: datetime) -> _Interval:
        """(start of the period, moment at or before t): t itself when start < t <= period end."""
        day = self._local_date(t) + timedelta(days=1)
        for _ in range(_SEARCH_LIMIT_DAYS):
            for start, end in reversed(self._intervals(day)):
                if start < t:
                    return start, min(end, t)
            day -= timedelta(days=1)
        raise CalendarError(f"no working time within {_SEARCH_LIMIT_DAYS} days before {t.isoformat()}")

    def _add_working(self, t: datetime, amount: timedelta) -> datetime:
        # Step period by period (at most a few per day), never minute by minute.
        cur, end = self._forward(t)
        while amount > end - cur:
            amount -= end - cur
            cur, end = self._forward_from_edge(end)
        return cur + amount

    def _subtract_working(self, t: datetime, amount: timedelta) -> datetime:
        start, cur = self._backward(t)
        while amount > cur - start:
            amount -= cur - start
            start, cur = self._backward_from_edge(start)
        return cur - amount

    # Stepping on from a period's end (or back from its start) asks about the same few
    # moments again and again -- every deadline counted across the same days does -- so
    # those answers are kept: one per period edge, pure functions of the configuration.

    def _forward_from_edge(self, edge: datetime) -> _Interval:
        found = self._after_edge.get(edge)
        if found is None:
            found = self._after_edge[edge] = self._forward(edge)
        return found

    def _backward_from_edge(self, edge: datetime) -> _Interval:
        found = self._before_edge.get(edge)
        if found is None:
            found = self._before_edge[edge] = self._backward(edge)
        return found

    def _working_delta(self, duration: Duration) -> timedelta:
        if duration.unit == "working_days":
            return self.day_length * duration.amount
        if duration.unit == "working_hours":
            return timedelta(hours=duration.amount)
        return timedelta(minutes=duration.amount)

    # -- public arithmetic --------------------------------------------------------------------

    def add(self, start: datetime, duration: Duration | str) -> datetime:
        """``start`` plus ``duration``; working units count only working time (see module doc)."""
        t = _utc(start, "start")
        key = (t, duration, True)
        found = self._sums.get(key)
        if found is None:
            found = self._keep_sum(key, self._add(t, _as_duration(duration)))
        return found

    def subtract(self, end: datetime, duration: Duration | str) -> datetime:
        """``end`` minus ``duration``; the exact inverse of :meth:`add` (see module doc)."""
        t = _utc(end, "end")
        key = (t, duration, False)
        found = self._sums.get(key)
        if found is None:
            found = self._keep_sum(key, self._subtract(t, _as_duration(duration)))
        return found

    # The same sums are asked for again and again: a deadline counted from the deal's
    # creation on each event of the deal (a rule once per deal plans it anew; the repeat is
    # then dropped by its key), several steps of one event counting from its moment. A
    # year's dry-run (bench/dry_run.py) asks 254,000 times for 45,000 distinct sums. The
    # answers are kept, keyed by the UTC moment (which no DST fold makes ambiguous); the
    # recent ones suffice, so the memo is emptied when it holds this many.
    _SUMS_KEPT = 4096

    def _keep_sum(self, key: tuple[datetime, Duration | str, bool], result: datetime) -> datetime:
        if len(self._sums) >= self._SUMS_KEPT:
            self._sums.clear()
        self._sums[key] = result
        return result

    def _add(self, t: datetime, d: Duration) -> datetime:
        if d.amount < 0:
            return self._subtract(t, -d)
        if d.amount == 0:
            return t.astimezone(self.tz)
        if not d.is_working:
            return (t + _calendar_delta(d)).astimezone(self.tz)
        return self._add_working(t, self._working_delta(d)).astimezone(self.tz)

    def _subtract(self, t: datetime, d: Duration) -> datetime:
        if d.amount < 0:
            return self._add(t, -d)
        if d.amount == 0:
            return t.astimezone(self.tz)
        if not d.is_working:
            return (t - _calendar_delta(d)).astimezone(self.tz)
        return self._subtract_working(t, self._working_delta(d)).astimezone(self.tz)

    def working_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Working time inside [start, end]; negative when end < start."""
        a, b = _utc(start, "start"), _utc(end, "end")
        if b < a:
            return -self.working_time_between(end, start)
        total = timedelta()
        day, last = self._local_date(a) - timedelta(days=1), self._local_date(b) + timedelta(days=1)
        while day <= last:
            for s, e in self._intervals(day):
                if e > a and s < b:
                    total += min(e, b) - max(s, a)
            day += timedelta(days=1)
        return total

    def is_working_time(self, moment: datetime) -> bool:
        """True when ``moment`` lies inside a work period (the period's end itself is not)."""
        t = _utc(moment, "moment")
        return self._forward(t)[0] == t

    def next_working_moment(self, moment: datetime) -> datetime:
        """``moment`` itself if it is working time, else the start of the next work period."""
        return self._forward(_utc(moment, "moment"))[0].astimezone(self.tz)

    def end_of_working_day(self, moment: datetime) -> datetime:
        """End of work hours of ``moment``'s day, or of the next working day.

        The same day when it is a working day and ``moment`` is not after its last work period
        (so 18:00 itself gives 18:00); otherwise the end of the next working day.
        """
        t = _utc(moment, "moment")
        day = self._local_date(t)
        periods = self._intervals(day)
        if periods and t <= periods[-1][1]:
            return periods[-1][1].astimezone(self.tz)
        return self._intervals(self._next_working_day(day))[-1][1].astimezone(self.tz)

    def next_working_day_start(self, moment: datetime) -> datetime:
        """Work start of the first working day strictly after ``moment``'s (local) date."""
        day = self._local_date(_utc(moment, "moment"))
        return self._intervals(self._next_working_day(day))[0][0].astimezone(self.tz)

    def working_day_at(self, moment: datetime, clock: str) -> datetime:
        """``clock`` ("16:00", local time) on ``moment``'s day when that is a working day and the
        time is still ahead; else at that time on the next working day ("by 16:00 the same day")."""
        minute = _parse_clock(clock, clock)
        t = _utc(moment, "moment")
        day = self._local_date(t)
        at = self._at_minute(day, minute)
        if self._intervals(day) and at > t:
            return at.astimezone(self.tz)
        return self._at_minute(self._next_working_day(day), minute).astimezone(self.tz)

    def _at_minute(self, day: date, minute: int) -> datetime:
        return (datetime.combine(day, time(0), tzinfo=self.tz) + timedelta(minutes=minute)).astimezone(UTC)

    def end_of_month(self, moment: datetime) -> datetime:
        """End of work hours on the last working day of ``moment``'s (local) month.

        It may be earlier than ``moment`` (e.g. a moment on a month's last, non-working day).
        """
        local = _utc(moment, "moment").astimezone(self.tz).date()
        day = local.replace(day=_stdcal.monthrange(local.year, local.month)[1])
        while day.month == local.month:
            periods = self._intervals(day)
            if periods:
                return periods[-1][1].astimezone(self.tz)
            day -= timedelta(days=1)
        raise CalendarError(f"{local:%Y-%m} has no working day")

    def _next_working_day(self, day: date) -> date:
        for _ in range(_SEARCH_LIMIT_DAYS):
            day += timedelta(days=1)
            if self._intervals(day):
                return day
        raise CalendarError(f"no working day within {_SEARCH_LIMIT_DAYS} days after {day.isoformat()}")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _moved_day_off(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith(("выходной", "day off")) or any(
        mark in lowered for mark in ("(выходной)", "(observed)", "substituted")
    )


def _utc(moment: datetime, name: str) -> datetime:
    """The aware ``moment`` in UTC; naive datetimes are refused because their zone is a guess."""
    if not isinstance(moment, datetime):
        raise CalendarError(f"{name} must be a datetime, got {moment!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise CalendarError(f"{name} {moment.isoformat()} has no time zone; pass an aware datetime")
    return moment.astimezone(UTC)


def _calendar_delta(duration: Duration) -> timedelta:
    if duration.unit == "days":
        return timedelta(days=duration.amount)
    if duration.unit == "hours":
        return timedelta(hours=duration.amount)
    return timedelta(minutes=duration.amount)


def _as_date(value: object, name: str) -> date:
    """Config dates: date objects or ISO text ("2026-01-09")."""
    if isinstance(value, datetime):
        raise CalendarError(f"{name}: {value.isoformat()} is a datetime, expected a date")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError as exc:
            raise CalendarError(f"{name}: {value!r} is not a date like 2026-01-09") from exc
    raise CalendarError(f"{name}: {value!r} is not a date")


def _decree_years(probe: holidays.HolidayBase) -> range:
    """Years whose yearly decree the package knows.

    Countries that move days off by decree (``has_substituted_holidays``) are covered up to the
    last year with decree entries; other countries have nothing to be missing.
    """
    start = max(getattr(probe, "start_year", 1), 1)
    if not getattr(probe, "has_substituted_holidays", False):
        return range(start, getattr(probe, "end_year", 9999) + 1)
    years: set[int] = set()
    for name in ("special_public_holidays", "special_public_holidays_observed"):
        years.update(getattr(probe, name, {}) or {})
    return range(start, max(years) + 1)
