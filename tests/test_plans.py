"""Plans, periods, due dates, indicators and plan-vs-fact rows: table tests of the pure layer."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from domain.facts import Fact
from rules.calendar import WorkCalendar
from rules.indicators import IndicatorError, deal_fields, figure, parse_indicator, with_deals
from rules.periods import due_date, last_completed, parse_period, working_days
from rules.plan_reports import missed_by, plan_vs_fact, split_by_recipient, table, to_csv
from rules.plans import PERSON, TEAM, PlanBook, PlanEntry, Teams, lowered, mismatches, parse_plan_file

CAL = WorkCalendar()
TEAMS = Teams(
    members={"north": ("11", "12"), "south": ("21",)},
    leads={"north": "7", "south": "8"},
    head="1",
    people={"ceo": "2"},
    roles={"directors": ("2", "3")},
)


@pytest.mark.parametrize(
    ("key", "first", "last"),
    [
        ("2026", date(2026, 1, 1), date(2026, 12, 31)),
        ("2026-Q2", date(2026, 4, 1), date(2026, 6, 30)),
        ("2026-02", date(2026, 2, 1), date(2026, 2, 28)),
        ("2026-W10", date(2026, 3, 2), date(2026, 3, 8)),
        ("2026-03-02", date(2026, 3, 2), date(2026, 3, 2)),
        ("2026-q4", date(2026, 10, 1), date(2026, 12, 31)),
    ],
)
def test_period_keys(key: str, first: date, last: date) -> None:
    period = parse_period(key)
    assert (period.first, period.last) == (first, last)
    assert parse_period(period.key) == period


@pytest.mark.parametrize("key", ["2026-13", "2026-Q5", "March", "2026-W54", "2026-02-30", ""])
def test_bad_period_keys_say_what_keys_look_like(key: str) -> None:
    with pytest.raises(ValueError, match="period|no real"):
        parse_period(key)


@pytest.mark.parametrize(
    ("period", "by", "due", "why"),
    [
        ("2026-10", 5, date(2026, 11, 5), "the 5th is a working day"),
        ("2026-03", 5, date(2026, 4, 3), "5 April 2026 is a Sunday: the Friday before"),
        ("2026-12", 5, date(2027, 1, 11), "5 January is a holiday and so is every day back to 31 December"),
        ("2026-Q1", 10, date(2026, 4, 10), "quarterly by the 10th"),
        ("2026-Q4", 10, date(2027, 1, 11), "the 10th is a Sunday; the working day before is in the holidays"),
        ("2026-03", None, date(2026, 4, 1), "no 'by': the first working day after"),
        ("2026-W10", None, date(2026, 3, 10), "8 March (Sunday) moves the holiday to Monday 9 March"),
        ("2026-03-06", None, date(2026, 3, 10), "a day report: the next working day"),
    ],
)
def test_due_dates(period: str, by: int | None, due: date, why: str) -> None:
    assert due_date(parse_period(period), by, CAL) == due, why


def test_last_completed_period() -> None:
    assert last_completed("month", date(2026, 4, 3)).key == "2026-03"
    assert last_completed("quarter", date(2026, 4, 10)).key == "2026-Q1"
    assert last_completed("week", date(2026, 3, 9)).key == "2026-W10"
    assert last_completed("day", date(2026, 3, 10)).key == "2026-03-09"
    # With the calendar a day report covers the last working day: Friday, on a Tuesday after a holiday.
    assert last_completed("day", date(2026, 3, 10), CAL).key == "2026-03-06"
    assert last_completed("day", date(2026, 3, 16), CAL).key == "2026-03-13"


def _entry(kind: str, subject: str, period: str, value: int | str, indicator: str = "calls") -> PlanEntry:
    return PlanEntry(kind, subject, indicator, parse_period(period), Decimal(str(value)))


def test_cascade_splits_a_month_over_its_working_days() -> None:
    # March 2026 has 21 working days (8 March moved to Monday the 9th).
    book = PlanBook([_entry(PERSON, "11", "2026-03", 840)], CAL, TEAMS)
    assert book.person("11", "calls", parse_period("2026-03")) == 840
    assert book.person("11", "calls", parse_period("2026-03-02")) == 40
    assert book.person("11", "calls", parse_period("2026-03-07")) == 0  # Saturday
    assert book.person("11", "calls", parse_period("2026-W10")) == 5 * 40
    assert book.person("11", "calls", parse_period("2026-W11")) == 4 * 40  # Monday 9 March is off
    assert book.person("11", "calls", parse_period("2026-04")) is None


def test_finer_plans_take_their_part_and_the_rest_is_spread() -> None:
    entries = [
        _entry(PERSON, "11", "2026", 12000),
        _entry(PERSON, "11", "2026-03", 1050),
        _entry(PERSON, "11", "2026-03-02", 90),
    ]
    book = PlanBook(entries, CAL, TEAMS)
    # 1050 - 90 over the 20 other working days of March.
    assert book.person("11", "calls", parse_period("2026-03-03")) == 48
    assert book.person("11", "calls", parse_period("2026-03-02")) == 90
    # The year's other months share 12000 - 1050 over their working days (247 - 21); April has 22.
    assert len(working_days(parse_period("2026"), CAL)) == 247
    assert book.person("11", "calls", parse_period("2026-04")) == (Decimal(10950) / 226 * 22).quantize(
        Decimal("0.0001")
    )
    assert book.person("11", "calls", parse_period("2026")) == 12000


def test_team_is_its_own_plan_or_the_sum_of_its_members() -> None:
    entries = [
        _entry(PERSON, "11", "2026-03", 100),
        _entry(PERSON, "12", "2026-03", 50),
        _entry(TEAM, "south", "2026-03", 70),
    ]
    book = PlanBook(entries, CAL, TEAMS)
    march = parse_period("2026-03")
    assert book.team("north", "calls", march) == 150
    assert book.team("south", "calls", march) == 70
    assert book.everyone("calls", march) == 220


PLAN_CSV = """period,person,team,indicator,plan
2026-03,11,,calls,840
2026-03,,north,turnover,"1500000"
2026-Q5,11,,calls,1
2026-03,11,north,calls,1
2026-03,12,,call,3
2026-03,,west,calls,3
2026-03,12,,calls,-4
2026-03,11,,calls,840
"""


def test_plan_file_problems_each_with_its_line() -> None:
    entries, problems = parse_plan_file(PLAN_CSV, fmt="csv", indicators=["calls", "turnover"], teams=TEAMS)
    assert [e.key for e in entries] == [("person", "11", "calls", "2026-03"), ("team", "north", "turnover", "2026-03")]
    rendered = [p.render("plans.csv") for p in problems]
    assert rendered == [
        "plans.csv:4: '2026-Q5' is not a period; write 2026, 2026-Q1, 2026-03, 2026-W10 or 2026-03-02",
        "plans.csv:5: give either a person or a team",
        "plans.csv:6: unknown indicator 'call'; known: calls, turnover",
        "plans.csv:7: no team 'west' under org.teams; known: north, south",
        "plans.csv:8: plan '-4' is not a number of zero or more",
        "plans.csv:9: the same plan is already on line 2",
    ]


def test_yaml_plan_file_lines() -> None:
    text = (
        "plans:\n"
        "  - {period: 2026-03, person: 11, indicator: calls, plan: 840}\n"
        "  - period: 2026-03\n    team: north\n    indicator: calls\n    plan: x\n"
    )
    entries, problems = parse_plan_file(text, fmt="yaml", indicators=["calls"], teams=TEAMS)
    assert [(e.subject, e.value, e.line) for e in entries] == [("11", Decimal(840), 2)]
    assert [(p.line, p.message) for p in problems] == [(3, "plan 'x' is not a number of zero or more")]


def test_corrections_only_upward() -> None:
    stored = [_entry(PERSON, "11", "2026-04", 800), _entry(PERSON, "12", "2026-04", 800)]
    loaded = [
        PlanEntry(PERSON, "11", "calls", parse_period("2026-04"), Decimal(900), line=2),
        PlanEntry(PERSON, "12", "calls", parse_period("2026-04"), Decimal(700), line=3),
    ]
    assert [(p.line, p.message) for p in lowered(stored, loaded)] == [
        (
            3,
            "person 12 calls 2026-04: plan lowered from 800 to 700; plans may only be raised "
            "(--allow-lower to override)",
        )
    ]


def _at(day: int, hour: int = 12, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


FACTS = [
    Fact("activity", "a1", "11", at=_at(2), type="call"),
    Fact("activity", "a2", "11", at=_at(2), type="call"),
    Fact("activity", "a3", "11", at=_at(3), type="meeting"),
    Fact("activity", "a4", "12", at=_at(3), type="call"),
    Fact("activity", "a5", "12", at=_at(1, month=4), type="call"),  # the next month
    Fact(
        "deal",
        "d1",
        "11",
        at=_at(20),
        created_at=_at(2),
        status="won",
        amount=Decimal(1000),
        fields={"SEG": "SMB", "KP_SENT": "2026-03-04T12:00:00+00:00", "SCORE": "4"},
    ),
    Fact("deal", "d2", "12", at=_at(25), created_at=_at(5), status="won", amount=Decimal(500), fields={"SEG": "ENT"}),
    Fact("deal", "d3", "12", at=_at(26), created_at=_at(10), status="lost"),
    Fact("deal", "d4", "21", created_at=_at(11), status="open", amount=Decimal(70)),
    Fact("stage", "s1", "11", at=_at(25, month=2), stage="KP", deal_id="d1"),  # entered in February
    Fact("stage", "s2", "11", at=_at(4), stage="KP", deal_id="d1"),  # and again in March
    Fact("stage", "s3", "11", at=_at(6), stage="MEET", deal_id="d1"),
    Fact("stage", "s4", "12", at=_at(2), stage="KP", deal_id="d2"),
    Fact("stage", "s5", "12", at=_at(12), stage="MEET", deal_id="d2"),
    Fact("stage", "s6", "12", at=_at(1, month=4), stage="MEET", deal_id="d3"),  # April
]
INDICATORS = {
    name: parse_indicator(name, spec)
    for name, spec in {
        "calls": {"count": "activities", "type": "call", "title": "Calls"},
        "meetings": {"count": "activities", "type": ["meeting"]},
        "won": {"count": "won_deals"},
        "won_smb": {"count": "won_deals", "where": {"SEG": "SMB"}},
        "turnover": {"sum": "amount", "of": "won_deals"},
        "score": {"average": "SCORE", "of": "won_deals"},
        "new": {"count": "new_deals"},
        "lost": {"count": "lost_deals"},
        "open": {"count": "open_deals"},
        "call_to_meeting": {"ratio": ["meetings", "calls"]},
        "days_to_win": {"average_days": ["created_at", "at"], "of": "won_deals"},
        "days_to_proposal": {"average_days": ["created_at", "KP_SENT"], "of": "won_deals"},
        "proposals": {"count": "stage_entries", "where": {"stage": "KP"}},
        "meetings_held": {"count": "stage_entries", "where": {"stage": ["MEET"]}},
        "kp_to_meeting": {"ratio": ["meetings_held", "proposals"]},
        "kp_days": {"stage_days": ["KP", "MEET"]},
    }.items()
}


@pytest.mark.parametrize(
    ("indicator", "expected"),
    [
        ("calls", Decimal(3)),
        ("meetings", Decimal(1)),
        ("won", Decimal(2)),
        ("won_smb", Decimal(1)),
        ("turnover", Decimal(1500)),
        ("score", Decimal("4.00")),  # the deal without a score is not a zero
        ("new", Decimal(4)),
        ("lost", Decimal(1)),
        ("open", Decimal(1)),
        ("call_to_meeting", Decimal("33.3")),
        ("days_to_win", Decimal("19.0")),
        ("days_to_proposal", Decimal("2.0")),  # only the deal with the field set counts
        ("proposals", Decimal(2)),  # entries in March; d1's February entry is another period's
        ("meetings_held", Decimal(2)),
        ("kp_to_meeting", Decimal("100.0")),
        ("kp_days", Decimal("6.0")),  # d1 from its latest entry: 2 days; d2: 10 days
    ],
)
def test_indicators_over_facts(indicator: str, expected: Decimal) -> None:
    assert figure(INDICATORS[indicator], FACTS, parse_period("2026-03"), CAL.tz, INDICATORS) == expected


# Deals followed step by step (seed 003: cold meetings that led to a working one, call-meeting
# iterations per deal) and deals placed in a period by a date field (non-standard situations).
DEAL_STEPS = [
    # d1: call, call, meeting (cycle 1) in February; call, meeting (cycle 2) in March; a cold
    # meeting in March followed by a working one.
    Fact("activity", "s1", "11", at=_at(20, month=2), type="call", deal_id="d1"),
    Fact("activity", "s2", "11", at=_at(21, month=2), type="call", deal_id="d1"),
    Fact("activity", "s3", "11", at=_at(24, month=2), type="meeting", deal_id="d1"),
    Fact("activity", "s4", "11", at=_at(2), type="call", deal_id="d1"),
    Fact("activity", "s5", "11", at=_at(3), type="cold_meeting", deal_id="d1"),
    Fact("activity", "s6", "11", at=_at(10), type="needs_meeting", deal_id="d1"),
    # d2: a call in March and nothing after it; a cold meeting whose working meeting came first.
    Fact("activity", "s7", "12", at=_at(4), type="needs_meeting", deal_id="d2"),
    Fact("activity", "s8", "12", at=_at(5), type="call", deal_id="d2"),
    Fact("activity", "s9", "12", at=_at(6), type="cold_meeting", deal_id="d2"),
    # d3: only February's steps, none in March: not among March's deals.
    Fact("activity", "s10", "12", at=_at(2, month=2), type="call", deal_id="d3"),
    Fact("activity", "s11", "12", at=_at(3, month=2), type="cold_meeting", deal_id="d3"),
    # d4: its cold meeting in March, the working meeting only in April (after the period).
    Fact("activity", "s12", "21", at=_at(30), type="cold_meeting", deal_id="d4"),
    Fact("activity", "s13", "21", at=_at(2, month=4), type="needs_meeting", deal_id="d4"),
    Fact("deal", "d1", "11", status="open", fields={"FLAGGED_AT": "2026-03-31"}),  # a date-only field
    Fact("deal", "d2", "12", status="won", at=_at(9), fields={"FLAGGED_AT": "2026-03-31T22:30:00+00:00"}),  # 1 April
    Fact("deal", "d3", "12", status="lost", at=_at(9), fields={"FLAGGED_AT": "2026-03-09T10:00:00+03:00"}),
    Fact("deal", "d4", "21", status="open", fields={"FLAGGED_AT": ""}),
]
STEP_INDICATORS = {
    name: parse_indicator(name, spec)
    for name, spec in {
        "calls": {"count": "activities", "type": "call"},
        "meetings": {"count": "activities", "type": ["meeting", "cold_meeting", "needs_meeting"]},
        "cold": {"count": "activities", "type": "cold_meeting"},
        "working": {"count": "activities", "type": ["needs_meeting", "terms_meeting"]},
        "cold_to_working": {"followed": ["cold", "working"]},
        "cycles": {"cycles": ["calls", "meetings"]},
        "flagged": {"count": "deals", "at": "FLAGGED_AT"},
        "flagged_won": {"count": "won_deals", "at": "FLAGGED_AT"},
    }.items()
}


@pytest.mark.parametrize(
    ("indicator", "facts", "expected"),
    [
        # d1's cold meeting was followed by a working one; d2's working meeting came before its
        # cold one; d4's came after March; d3's cold meeting was in February.
        ("cold_to_working", DEAL_STEPS, Decimal("33.3")),
        ("cold_to_working", DEAL_STEPS[:6], Decimal("100.0")),
        ("cold_to_working", DEAL_STEPS[6:8], None),  # no cold meeting in March
        # d1: two cycles (February's counts: the deal had steps in March); d2: one; d4: none.
        ("cycles", DEAL_STEPS, Decimal("1.0")),
        ("cycles", DEAL_STEPS[:6], Decimal("2.0")),
        ("cycles", DEAL_STEPS[9:11], None),  # d3 had no step in March
        # d1 (a plain date, 31 March) and d3; d2's moment is 1 April in Moscow; d4 has none.
        ("flagged", DEAL_STEPS, Decimal(2)),
        ("flagged_won", DEAL_STEPS, Decimal(0)),
    ],
)
def test_deals_followed_step_by_step_and_placed_by_a_date_field(
    indicator: str, facts: list[Fact], expected: Decimal | None
) -> None:
    march = parse_period("2026-03")
    assert figure(STEP_INDICATORS[indicator], facts, march, CAL.tz, STEP_INDICATORS) == expected


def test_deals_open_at_the_start_of_a_period_and_a_share_lost_of_them() -> None:
    facts = [
        Fact("deal", "c1", "11", status="open", created_at=_at(1, month=2), fields={"COMPANY": "5"}),
        Fact("deal", "c2", "11", status="open", created_at=_at(2, month=2), fields={"COMPANY": "5"}),  # 5 again
        Fact("deal", "c3", "11", status="lost", at=_at(10), created_at=_at(1, month=2), fields={"COMPANY": "6"}),
        Fact("deal", "c4", "12", status="lost", at=_at(20), created_at=_at(5), fields={"COMPANY": "7"}),  # new in March
        Fact(
            "deal", "c5", "12", status="lost", at=_at(20, month=2), created_at=_at(2, month=1), fields={"COMPANY": "8"}
        ),
        Fact("deal", "c6", "12", status="won", at=_at(2, month=4), created_at=_at(3, month=1), fields={"COMPANY": "9"}),
        Fact(
            "deal", "c7", "12", status="open", created_at=datetime(2026, 2, 28, 21, 30, tzinfo=UTC)
        ),  # 1 March, Moscow
    ]
    indicators = {
        name: parse_indicator(name, spec)
        for name, spec in {
            "at_start": {"count": "open_at_start", "distinct": "COMPANY"},
            "lost": {"count": "lost_deals", "distinct": "COMPANY"},
            "lost_share": {"ratio": ["lost", "at_start"]},
        }.items()
    }
    march = parse_period("2026-03")
    # Companies 5, 6 and 9 were in work on 1 March; 7 and c7 came later, 8 was lost before.
    assert figure(indicators["at_start"], facts, march, CAL.tz, indicators) == 3
    assert figure(indicators["lost_share"], facts, march, CAL.tz, indicators) == Decimal("66.7")
    with pytest.raises(IndicatorError, match="at: does not apply to open_at_start"):
        parse_indicator("x", {"count": "open_at_start", "at": "CLOSEDATE"})


def test_activities_filtered_by_their_deals_field() -> None:
    deals = [
        Fact("deal", "n1", "11", status="open", fields={"KIND": "new"}),
        Fact("deal", "c1", "11", status="open", fields={"KIND": "current"}),
    ]
    calls = [
        Fact("activity", "a1", "11", at=_at(2), type="call", deal_id="n1"),
        Fact("activity", "a2", "11", at=_at(3), type="call", deal_id="n1"),
        Fact("activity", "a3", "11", at=_at(3), type="call", deal_id="c1"),  # a current client
        Fact("activity", "a4", "11", at=_at(4), type="call"),  # on no deal
        Fact("activity", "a5", "11", at=_at(4), type="call", deal_id="gone"),  # a deal not read
    ]
    indicators = {
        name: parse_indicator(name, spec)
        for name, spec in {
            "cold": {"count": "activities", "type": "call", "where": {"deal.KIND": "new"}},
            "calls": {"count": "activities", "type": "call"},
            "cold_share": {"ratio": ["cold", "calls"]},
        }.items()
    }
    assert deal_fields(indicators, ["cold_share"]) == {"KIND"}
    assert deal_fields(indicators, ["calls"]) == set()
    facts = with_deals([*deals, *calls], deals, {"KIND"})
    assert figure(indicators["cold"], facts, parse_period("2026-03"), CAL.tz, indicators) == 2
    assert figure(indicators["cold_share"], facts, parse_period("2026-03"), CAL.tz, indicators) == Decimal("40.0")
    with pytest.raises(IndicatorError, match="deal.FIELD filters activities and stage_entries"):
        parse_indicator("x", {"count": "won_deals", "where": {"deal.KIND": "new"}})


def test_distinct_counts_each_value_once_and_each_record_without_one_alone() -> None:
    facts = [
        Fact("deal", "d1", "11", status="open", fields={"COMPANY": "5"}),
        Fact("deal", "d2", "11", status="open", fields={"COMPANY": "5"}),
        Fact("deal", "d3", "12", status="open", fields={"COMPANY": "7"}),
        Fact("deal", "d4", "12", status="open", fields={"COMPANY": None}),
        Fact("deal", "d5", "12", status="open", fields={}),
        Fact("deal", "d6", "12", status="won", at=_at(3), fields={"COMPANY": "9"}),  # not in work
    ]
    companies = parse_indicator("companies", {"count": "open_deals", "distinct": "COMPANY"})
    assert figure(companies, facts, parse_period("2026-03"), CAL.tz, {}) == 4


def test_deal_steps_name_counts_of_activities_or_stage_entries() -> None:
    from rules.indicators import check_references

    indicators = dict(STEP_INDICATORS)
    indicators["bad"] = parse_indicator("bad", {"cycles": ["calls", "flagged"]})
    indicators["worse"] = parse_indicator("worse", {"followed": ["calls", "nothing"]})
    assert check_references(indicators) == {
        "bad": "cycles: 'flagged' is no count of activities or stage_entries (without at:) under indicators",
        "worse": "followed: 'nothing' is no count of activities or stage_entries (without at:) under indicators",
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"count": "calls"}, "'calls' is not one of activities"),
        ({"count": "won_deals", "type": "call"}, "type filters activities only"),
        ({"count": "activities", "sum": "amount"}, "exactly one of"),
        ({"ratio": ["a"]}, "two indicator names"),
        ({"stage_days": "KP"}, "two stage ids"),
        ({"count": "activities", "per": "day"}, "unknown key"),
        ({"cycles": ["calls"]}, "cycles is \\[first, then\\], two indicator names"),
        ({"followed": ["a", "b"], "where": {"X": "1"}}, "followed takes no where"),
        ({"count": "deals"}, "give at: FIELD"),
        ({"sum": "amount", "of": "open_deals", "distinct": "COMPANY"}, "distinct counts distinct values"),
        ({"count": "open_deals", "at": "X"}, "at: does not apply to open_deals"),
    ],
)
def test_bad_indicators(spec: dict[str, object], message: str) -> None:
    with pytest.raises(IndicatorError, match=message):
        parse_indicator("x", spec)


def test_plan_vs_fact_rows_recipients_and_missed() -> None:
    march = parse_period("2026-03")
    book = PlanBook(
        [_entry(PERSON, "11", "2026-03", 2), _entry(PERSON, "12", "2026-03", 5), _entry(TEAM, "south", "2026-03", 1)],
        CAL,
        TEAMS,
    )
    rows = plan_vs_fact(march, ["calls"], INDICATORS, FACTS, book, TEAMS, CAL.tz)
    got = [(r.scope, r.name, r.cells["calls"].plan, r.cells["calls"].fact) for r in rows]
    assert got == [
        ("person", "11", 2, 2),
        ("person", "12", 5, 1),
        ("team", "north", 7, 3),
        ("person", "21", None, 0),
        ("team", "south", 1, 0),
        ("all", "", 8, 3),
    ]
    assert {u: [r.name for r in rs] for u, rs in split_by_recipient("team_lead", rows, TEAMS).items()} == {
        "7": ["11", "12", "north"],
        "8": ["21", "south"],
    }
    assert list(split_by_recipient("head", rows, TEAMS)) == ["1"]
    assert list(split_by_recipient("person", rows, TEAMS)) == ["11", "12", "21"]
    assert list(split_by_recipient("ceo", rows, TEAMS)) == ["2"]  # a person of org.people
    assert list(split_by_recipient("role(directors)", rows, TEAMS)) == ["2", "3"]
    assert list(split_by_recipient("99", rows, TEAMS)) == ["99"]
    assert {lead: [r.name for r in rs] for lead, rs in missed_by(rows, TEAMS).items()} == {"7": ["12"]}
    assert table(rows[:2], INDICATORS) == "user 11 (north): Calls 2/2 (100%)\nuser 12 (north): Calls 5/1 (20%)"
    assert to_csv(rows[:1], march).splitlines() == [
        "period,scope,name,team,indicator,plan,fact,percent",
        "2026-03,person,11,north,calls,2,2,100",
    ]


def test_finer_plans_that_do_not_add_up_are_warned_about() -> None:
    def entry(period: str, value: int, line: int) -> PlanEntry:
        return PlanEntry(TEAM, "north", "turnover", parse_period(period), Decimal(value), line)

    year = [entry("2026", 1000, 2)]
    quarters = [entry(f"2026-Q{q}", 240, 3 + q) for q in range(1, 5)]  # 960 in all
    months = [entry("2026-01", 90, 8), entry("2026-02", 90, 9)]  # 180 < 240: fine, March gets the rest
    assert [(w.line, w.message) for w in mismatches(year + quarters + months)] == [
        (2, "warning: team north turnover: the quarter plans inside 2026 add up to 960, not its 1000")
    ]
    over = [entry("2026-Q1", 300, 4), entry("2026-01", 200, 8), entry("2026-02", 150, 9)]
    assert [(w.line, w.message) for w in mismatches(over)] == [
        (4, "warning: team north turnover: the month plans inside 2026-Q1 add up to 350, more than its 300")
    ]
