"""Named working calendars: the company's default one and any others (a remote team in
another country, a team working event days 15:00-23:00).

A rule chooses its calendar with ``calendar: NAME``; without one, the calendar of the team
of the deal's responsible (``org.teams.*.calendar``) is used, and failing that the default
(the top-level ``calendar:`` block). Pure: building a calendar reads no clock and no file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from rules.calendar import CalendarError, WorkCalendar

__all__ = ["DEFAULT_CALENDAR", "CalendarSet", "DaySpec", "build_calendar"]

DEFAULT_CALENDAR = "default"


@dataclass(frozen=True)
class DaySpec:
    """One exceptional date of a calendar: a day off, or a day with its own hours (a shift)."""

    day: date
    name: str = ""
    off: bool = False
    work_hours: str | None = None


def build_calendar(spec: Mapping[str, Any]) -> WorkCalendar:
    """A WorkCalendar from a loaded calendar block; raises CalendarError on a bad one.

    Keys: country, timezone, work_hours, weekend, extra_days_off, extra_working_days,
    shifts (name -> work hours) and days (DaySpec-like mappings or DaySpec objects).
    """
    shifts: Mapping[str, str] = spec.get("shifts") or {}
    days_off = set(spec.get("extra_days_off") or ())
    day_hours: dict[date, str] = {}
    for entry in _days(spec.get("days") or ()):
        if entry.off:
            days_off.add(entry.day)
        elif entry.work_hours:
            day_hours[entry.day] = shifts.get(entry.work_hours, entry.work_hours)
    return WorkCalendar(
        timezone=spec.get("timezone", "Europe/Moscow"),
        work_hours=spec.get("work_hours", "09:00-18:00"),
        country=spec.get("country", "RU"),
        extra_days_off=days_off,
        extra_working_days=spec.get("extra_working_days") or (),
        weekend=spec.get("weekend") or (5, 6),
        day_hours=day_hours,
    )


def _days(entries: Iterable[Any]) -> Iterable[DaySpec]:
    for entry in entries:
        if isinstance(entry, DaySpec):
            yield entry
        else:
            hours = entry.get("work_hours") or entry.get("shift")
            yield DaySpec(day=entry["date"], name=entry.get("name", ""), off=bool(entry.get("off")), work_hours=hours)


class CalendarSet:
    """The configured calendars by name; ``default`` is always there."""

    def __init__(self, default: WorkCalendar, named: Mapping[str, WorkCalendar] | None = None) -> None:
        self.default = default
        self._by_name: dict[str, WorkCalendar] = {DEFAULT_CALENDAR: default, **(named or {})}

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str | None) -> WorkCalendar:
        """The calendar called ``name`` (the default for None); unknown names raise CalendarError."""
        if name is None:
            return self.default
        try:
            return self._by_name[name]
        except KeyError:
            raise CalendarError(f"no calendar named {name!r}; known: {', '.join(sorted(self._by_name))}") from None

    @classmethod
    def from_config(cls, default: Mapping[str, Any], named: Mapping[str, Mapping[str, Any]]) -> CalendarSet:
        """Build every calendar; the first bad one raises CalendarError naming it."""
        calendars: dict[str, WorkCalendar] = {}
        for name, spec in named.items():
            try:
                calendars[name] = build_calendar(spec)
            except CalendarError as exc:
                raise CalendarError(f"calendars.{name}: {exc}") from exc
        return cls(build_calendar(default), calendars)
