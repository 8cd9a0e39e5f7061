"""Marshmallow schemas for ``calendars:`` (named working calendars) and ``org:`` (the org chart)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from rules.calendar import CalendarError, WorkCalendar
from rules.calendars import DaySpec
from rules.org import Org, Person, Team

_NAME = validate.Regexp(r"^[A-Za-z0-9_.-]+$", error="letters, digits, '-', '_', '.' only")
_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


def _work_hours(value: str) -> None:
    try:
        WorkCalendar(work_hours=value, country="RU")
    except CalendarError as exc:
        raise ValidationError(str(exc)) from exc


class WeekdayField(fields.Field):
    """A weekday as 0-6 (Monday = 0) or mon..sun."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 6:
            return value
        if isinstance(value, str) and value.lower()[:3] in _WEEKDAYS:
            return _WEEKDAYS[value.lower()[:3]]
        raise ValidationError("a weekday: mon..sun or 0 (Monday) .. 6 (Sunday)")


class DaySchema(Schema):
    """One exceptional date: a day off, or a day worked other hours (a named shift or a range)."""

    date = fields.Date(required=True)
    name = fields.String(load_default="")
    off = fields.Boolean(load_default=False, metadata={"doc": "a day off"})
    shift = fields.String(load_default=None, allow_none=True, metadata={"doc": "a shift named under shifts"})
    work_hours = fields.String(load_default=None, allow_none=True, validate=_work_hours)

    @validates_schema
    def one_kind(self, data: dict[str, Any], **kwargs: Any) -> None:
        given = [k for k in ("off", "shift", "work_hours") if data.get(k)]
        if len(given) != 1:
            raise ValidationError("give exactly one of off: true, shift: NAME, work_hours: HH:MM-HH:MM")

    @post_load
    def build(self, data: dict[str, Any], **kwargs: Any) -> DaySpec:
        return DaySpec(
            day=data["date"], name=data["name"], off=data["off"], work_hours=data["shift"] or data["work_hours"]
        )


class NamedCalendarSchema(Schema):
    """One entry of ``calendars:``: a working calendar besides the default one."""

    country = fields.String(
        load_default="RU", metadata={"doc": "country of the production calendar (holidays package: RU, UA, KZ, BY…)"}
    )
    timezone = fields.String(load_default="Europe/Moscow", metadata={"doc": "IANA time zone of this calendar"})
    work_hours = fields.String(load_default="09:00-18:00", validate=_work_hours, metadata={"doc": "e.g. 10:00-19:00"})
    weekend = fields.List(WeekdayField(), load_default=lambda: [5, 6], metadata={"doc": "days off every week"})
    extra_days_off = fields.List(fields.Date(), load_default=list)
    extra_working_days = fields.List(fields.Date(), load_default=list)
    shifts = fields.Dict(
        keys=fields.String(validate=_NAME),
        values=fields.String(validate=_work_hours),
        load_default=dict,
        metadata={"doc": "named work hours for exceptional days, e.g. event_day: 15:00-23:00"},
    )
    days = fields.List(fields.Nested(DaySchema), load_default=list, metadata={"doc": "exceptional dates"})

    @validates_schema
    def check(self, data: dict[str, Any], **kwargs: Any) -> None:
        import holidays

        country = str(data.get("country", "RU")).upper()
        try:
            holidays.country_holidays(country, years=())
        except (NotImplementedError, AttributeError, TypeError) as exc:
            raise ValidationError({"country": [f"the holidays package has no calendar for {country!r}"]}) from exc
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(str(data.get("timezone")))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValidationError({"timezone": [f"unknown time zone {data.get('timezone')!r}"]}) from exc
        shifts = data.get("shifts") or {}
        for i, day in enumerate(data.get("days") or []):
            if (
                isinstance(day, DaySpec)
                and day.work_hours
                and ":" not in day.work_hours
                and day.work_hours not in shifts
            ):
                known = ", ".join(sorted(shifts)) or "none"
                raise ValidationError({"days": {i: {"shift": [f"no shift named {day.work_hours!r}; known: {known}"]}}})


class PersonSchema(Schema):
    id = fields.Raw(load_default=None, allow_none=True, metadata={"doc": "user id in every CRM"})
    ids = fields.Dict(
        keys=fields.String(), values=fields.Raw(), load_default=dict, metadata={"doc": "user id per CRM name"}
    )
    name = fields.String(load_default="")

    @validates_schema
    def some_id(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("id") is None and not data.get("ids"):
            raise ValidationError("give id (one user id) or ids (a user id per CRM)")


class TeamSchema(Schema):
    name = fields.String(load_default="")
    members = fields.List(fields.String(), load_default=list)
    lead = fields.String(load_default=None, allow_none=True, metadata={"doc": "person leading the team"})
    head = fields.String(
        load_default=None, allow_none=True, metadata={"doc": "head of department over it (else found via parent)"}
    )
    parent = fields.String(load_default=None, allow_none=True, metadata={"doc": "the team or department above"})
    calendar = fields.String(load_default=None, allow_none=True, metadata={"doc": "the team's calendar by name"})


class OrgSchema(Schema):
    """``org:``: people, teams and roles."""

    people = fields.Dict(keys=fields.String(validate=_NAME), values=fields.Raw(), load_default=dict)
    teams = fields.Dict(keys=fields.String(validate=_NAME), values=fields.Nested(TeamSchema), load_default=dict)
    roles = fields.Dict(
        keys=fields.String(validate=_NAME),
        values=fields.List(fields.String()),
        load_default=dict,
        metadata={"doc": "role name -> people holding it"},
    )
    fallback = fields.String(
        load_default=None, allow_none=True, metadata={"doc": "the person who gets what resolves to nobody"}
    )

    @post_load
    def build(self, data: dict[str, Any], **kwargs: Any) -> Org:
        people: list[Person] = []
        errors: dict[str, Any] = {}
        for key, spec in data["people"].items():
            if isinstance(spec, (int, str)) and not isinstance(spec, bool):
                people.append(Person(key=key, id=str(spec)))
                continue
            try:
                loaded = PersonSchema().load(spec if isinstance(spec, dict) else {"id": spec})
            except ValidationError as exc:
                errors[key] = exc.messages
                continue
            people.append(
                Person(
                    key=key,
                    id=str(loaded["id"]) if loaded["id"] is not None else None,
                    ids={str(c): str(u) for c, u in loaded["ids"].items()},
                    name=loaded["name"],
                )
            )
        if errors:
            raise ValidationError({"people": errors})
        teams = [
            Team(
                key=key,
                members=tuple(t["members"]),
                lead=t["lead"],
                head=t["head"],
                parent=t["parent"],
                calendar=t["calendar"],
                name=t["name"],
            )
            for key, t in data["teams"].items()
        ]
        return Org(people, teams, data["roles"], data["fallback"])
