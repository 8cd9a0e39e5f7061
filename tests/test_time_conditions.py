"""Time conditions (weekday, working time, working day, holiday, time window) and the
calendar a rule counts on: a table per construct."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from marshmallow import ValidationError

from domain import Deal, Event, EventKind
from rules.calendar import CalendarError, WorkCalendar
from rules.calendars import CalendarSet, build_calendar
from rules.conditions import ConditionError, compile_condition
from rules.engine import evaluate
from rules.model import RuleContext
from rules.org import Org, Person, Team
from rules.schema import RuleSchema

MSK = ZoneInfo("Europe/Moscow")
KYIV = ZoneInfo("Europe/Kyiv")
RU = WorkCalendar(country="RU", timezone="Europe/Moscow", work_hours="09:00-18:00")
UA = build_calendar(
    {
        "country": "UA",
        "timezone": "Europe/Kyiv",
        "work_hours": "10:00-19:00",
        "shifts": {"event_day": "15:00-23:00"},
        "days": [{"date": datetime(2026, 3, 12).date(), "shift": "event_day", "name": "Вебинар"}],
    }
)
ALMATY = ZoneInfo("Asia/Almaty")
MINSK = ZoneInfo("Europe/Minsk")
KZ = WorkCalendar(country="KZ", timezone="Asia/Almaty")
BY = WorkCalendar(country="BY", timezone="Europe/Minsk")
CALENDARS = CalendarSet(RU, {"ua_remote": UA, "kz": KZ, "by": BY})


def ctx_at(moment: datetime, *, deal_fields: dict[str, Any] | None = None, now: datetime | None = None) -> RuleContext:
    deal = Deal(crm="b24", id="1", responsible_id="13", fields=deal_fields or {})
    event = Event(crm="b24", kind=EventKind.DEAL_CREATED, deal_id="1", occurred_at=moment, dedup_key="k")
    return RuleContext(
        deal=deal,
        event=event,
        now=now or moment,
        triggers=frozenset({"deal.created"}),
        calendar=RU,
        calendars=CALENDARS,
    )


# 2026-03-06 is a Friday, 2026-03-07 Saturday, 2026-03-09 Monday (a day off in Russia: 8 March
# falls on a Sunday and moves to Monday), 2026-03-12 a Thursday.
CASES: list[tuple[str, dict[str, Any], datetime, bool]] = [
    ("weekday sat-sun on a Saturday", {"weekday": ["sat", "sun"]}, datetime(2026, 3, 7, 12, tzinfo=MSK), True),
    ("weekday sat-sun on a Friday", {"weekday": ["sat", "sun"]}, datetime(2026, 3, 6, 12, tzinfo=MSK), False),
    ("weekday range mon-fri", {"weekday": "mon-fri"}, datetime(2026, 3, 6, 12, tzinfo=MSK), True),
    ("weekday range wraps fri-mon", {"weekday": "fri-mon"}, datetime(2026, 3, 8, 12, tzinfo=MSK), True),
    ("weekday in Russian", {"weekday": ["сб", "вс"]}, datetime(2026, 3, 7, 12, tzinfo=MSK), True),
    ("weekday by number", {"weekday": [4]}, datetime(2026, 3, 6, 12, tzinfo=MSK), True),
    # the weekday is the calendar's: Friday 23:30 UTC is Saturday in Moscow
    ("weekday in the calendar's zone", {"weekday": "sat"}, datetime(2026, 3, 6, 23, 30, tzinfo=UTC), True),
    ("working time inside hours", {"working_time": True}, datetime(2026, 3, 6, 10, tzinfo=MSK), True),
    ("outside working time evening", {"working_time": False}, datetime(2026, 3, 6, 19, tzinfo=MSK), True),
    ("outside working time at 18:00", {"working_time": False}, datetime(2026, 3, 6, 18, tzinfo=MSK), True),
    ("outside working time weekend", {"working_time": False}, datetime(2026, 3, 7, 11, tzinfo=MSK), True),
    ("moved day off is not working", {"working_time": False}, datetime(2026, 3, 9, 11, tzinfo=MSK), True),
    ("working_day on moved day off", {"working_day": False}, datetime(2026, 3, 9, 11, tzinfo=MSK), True),
    ("working_day on a Friday", {"working_day": True}, datetime(2026, 3, 6, 20, tzinfo=MSK), True),
    ("holiday on 8 March", {"holiday": True}, datetime(2026, 3, 8, 11, tzinfo=MSK), True),
    ("moved day off is no holiday by name", {"holiday": True}, datetime(2026, 3, 9, 11, tzinfo=MSK), False),
    ("window wraps midnight late", {"time_between": "19:00-09:00"}, datetime(2026, 3, 6, 23, tzinfo=MSK), True),
    ("window wraps midnight early", {"time_between": "19:00-09:00"}, datetime(2026, 3, 6, 8, 59, tzinfo=MSK), True),
    ("window end is open", {"time_between": "19:00-09:00"}, datetime(2026, 3, 6, 9, 0, tzinfo=MSK), False),
    ("window inside the day", {"time_between": "13:00-14:00"}, datetime(2026, 3, 6, 13, 30, tzinfo=MSK), True),
    # another calendar: 20:00 Kyiv on the event day is working time there, not in Moscow
    (
        "event-day shift on the UA calendar",
        {"working_time": True, "calendar": "ua_remote"},
        datetime(2026, 3, 12, 20, tzinfo=KYIV),
        True,
    ),
    ("same moment on the default calendar", {"working_time": True}, datetime(2026, 3, 12, 20, tzinfo=KYIV), False),
    # Ukraine has no public holidays under martial law (from 2023 in the holidays package)
    (
        "no UA holiday on 8 March 2026",
        {"holiday": True, "calendar": "ua_remote"},
        datetime(2026, 3, 8, 12, tzinfo=KYIV),
        False,
    ),
    ("KZ holiday 8 March", {"holiday": True, "calendar": "kz"}, datetime(2026, 3, 8, 12, tzinfo=ALMATY), True),
    (
        "KZ observed day is no holiday",
        {"holiday": True, "calendar": "kz"},
        datetime(2026, 3, 9, 12, tzinfo=ALMATY),
        False,
    ),
    ("KZ observed day is off", {"working_day": False, "calendar": "kz"}, datetime(2026, 3, 9, 12, tzinfo=ALMATY), True),
    ("BY holiday 8 March", {"holiday": True, "calendar": "by"}, datetime(2026, 3, 8, 12, tzinfo=MINSK), True),
    (
        "combined: weekend and after 19:00",
        {"weekday": "sat", "time_between": "19:00-23:00"},
        datetime(2026, 3, 7, 20, tzinfo=MSK),
        True,
    ),
    ("combined with not", {"not": {"working_time": True}}, datetime(2026, 3, 7, 20, tzinfo=MSK), True),
]


@pytest.mark.parametrize(("spec", "moment", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_time_condition_on_the_event_time(spec: dict[str, Any], moment: datetime, expected: bool) -> None:
    assert compile_condition(spec)(ctx_at(moment)) is expected


def test_at_names_the_moment_tested() -> None:
    created = datetime(2026, 3, 7, 11, tzinfo=MSK)  # a Saturday
    weekday_event = datetime(2026, 3, 10, 11, tzinfo=MSK)  # a Tuesday
    ctx = ctx_at(weekday_event, deal_fields={"UF_CREATED": created.isoformat()}, now=weekday_event + timedelta(hours=8))
    assert compile_condition({"working_time": True})(ctx)
    assert compile_condition({"working_time": False, "at": "UF_CREATED"})(ctx)
    assert compile_condition({"working_time": False, "at": "now"})(ctx)  # 19:00
    # a missing or empty moment is no match either way
    assert not compile_condition({"working_time": False, "at": "UF_NONE"})(ctx)
    assert not compile_condition({"working_time": True, "at": "UF_NONE"})(ctx)


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"weekday": "someday"}, "when.weekday", "not a weekday"),
        ({"working_time": "yes"}, "when.working_time", "true or false"),
        ({"time_between": "19-9"}, "when.time_between", "window of the day"),
        ({"time_between": "25:00-09:00"}, "when.time_between", "not a window"),
        ({"time_between": "09:00-09:00"}, "when.time_between", "empty"),
        ({"at": "created_at"}, "when.at", "goes with a time condition"),
        ({"working_time": False, "at": ""}, "when.at", "deal field holding a moment"),
        ({"holiday": True, "calendar": 5}, "when.calendar", "name of a calendar"),
    ],
)
def test_bad_time_conditions_are_refused(spec: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(ConditionError) as err:
        compile_condition(spec)
    assert err.value.path == path
    assert message in str(err.value)


def _rule(extra: dict[str, Any]) -> Any:
    return RuleSchema().load(
        {
            "name": "after-hours",
            "crm": "b24",
            "on": ["deal.created"],
            "when": {"working_time": False},
            "do": [{"create_task": {"title": "t", "responsible": "responsible", "due": "1 working hour"}}],
            **extra,
        }
    )


def test_rule_calendar_and_team_calendar_choose_the_calendar() -> None:
    # 20:00 Kyiv on the event day: after hours in Moscow, inside the UA team's shift
    moment = datetime(2026, 3, 12, 20, tzinfo=KYIV)
    org = Org([Person("taras", id="13")], [Team("sales_ua", members=("taras",), calendar="ua_remote")])
    on_default = ctx_at(moment)
    assert len(evaluate([_rule({})], on_default)) == 1  # no org: the default calendar
    assert evaluate([_rule({"calendar": "ua_remote"})], on_default) == []  # the rule's own
    with_team = RuleContext(**{**on_default.__dict__, "org": org})
    assert evaluate([_rule({})], with_team) == []  # the responsible's team's
    decisions = evaluate([_rule({"calendar": "default"})], with_team)  # the rule's wins
    assert len(decisions) == 1
    # the task's due counts on the rule's calendar: next Moscow work start + 1 h
    assert decisions[0].action.deadline == datetime(2026, 3, 13, 10, tzinfo=MSK)  # type: ignore[union-attr]


SHIFTED = build_calendar(
    {
        "country": "UA",
        "timezone": "Europe/Kyiv",
        "work_hours": "10:00-19:00",
        "shifts": {"event_day": "15:00-23:00"},
        "days": [
            {"date": date(2026, 3, 12), "shift": "event_day"},
            {"date": date(2026, 3, 14), "work_hours": "10:00-14:00"},  # a Saturday worked
            {"date": date(2026, 3, 16), "off": True},
        ],
    }
)


@pytest.mark.parametrize(
    ("start", "duration", "expected"),
    [
        (datetime(2026, 3, 11, 18, 0, tzinfo=KYIV), "2 working hours", datetime(2026, 3, 12, 16, 0, tzinfo=KYIV)),
        (datetime(2026, 3, 12, 9, 0, tzinfo=KYIV), "1 working hour", datetime(2026, 3, 12, 16, 0, tzinfo=KYIV)),
        (datetime(2026, 3, 12, 22, 0, tzinfo=KYIV), "2 working hours", datetime(2026, 3, 13, 11, 0, tzinfo=KYIV)),
        (datetime(2026, 3, 13, 18, 0, tzinfo=KYIV), "2 working hours", datetime(2026, 3, 14, 11, 0, tzinfo=KYIV)),
        (datetime(2026, 3, 14, 13, 0, tzinfo=KYIV), "2 working hours", datetime(2026, 3, 17, 11, 0, tzinfo=KYIV)),
    ],
)
def test_shift_days_count_their_own_hours(start: datetime, duration: str, expected: datetime) -> None:
    assert SHIFTED.add(start, duration) == expected


def test_a_date_cannot_be_both_off_and_shifted() -> None:
    with pytest.raises(CalendarError, match="both days off and given work hours: 2026-03-12"):
        WorkCalendar(extra_days_off=[date(2026, 3, 12)], day_hours={date(2026, 3, 12): "15:00-23:00"})


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 25, 11, 20, tzinfo=MSK), datetime(2026, 11, 25, 16, 0, tzinfo=MSK)),  # Wednesday morning
        (datetime(2026, 11, 25, 16, 0, tzinfo=MSK), datetime(2026, 11, 26, 16, 0, tzinfo=MSK)),  # 16:00 itself: past
        (datetime(2026, 11, 27, 16, 30, tzinfo=MSK), datetime(2026, 11, 30, 16, 0, tzinfo=MSK)),  # Friday evening
        (datetime(2026, 11, 28, 10, 0, tzinfo=MSK), datetime(2026, 11, 30, 16, 0, tzinfo=MSK)),  # Saturday
        (datetime(2026, 12, 31, 12, 0, tzinfo=MSK), datetime(2027, 1, 11, 16, 0, tzinfo=MSK)),  # New Year holidays
    ],
)
def test_due_time_is_that_time_of_this_or_the_next_working_day(moment: datetime, expected: datetime) -> None:
    assert WorkCalendar(country="RU", timezone="Europe/Moscow").working_day_at(moment, "16:00") == expected


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"due_time": "25:00"}, "not a time of day"),
        ({"due_time": "16:00", "due": "1 working day"}, "not both"),
    ],
)
def test_bad_due_time_is_refused(task: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        _rule({"do": [{"create_task": {"title": "t", "responsible": "responsible", **task}}]})
    assert message in str(err.value)
