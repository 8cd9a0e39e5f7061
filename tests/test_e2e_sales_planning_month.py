"""End to end on the Bitrix24 simulator: examples/sales-planning.yaml over a scripted March of
seed 003's sales ladder. The monthly report to the CEO, for the indicators that follow meetings by
their kind, deals step by step, a deal's non-standard situation and the contract stage; and the
start-of-day check that the activities each manager planned cover the day's plan."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.config import load_config_text
from connector.runtime import Runtime
from jobs.plans import load_plans
from simulators import SimulatorServer
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import TOKEN, Clock

# On the simulator in real threads: the full suite runs it, the fast tier does not.
pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sales-planning.yaml"


@pytest.fixture
def world(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[Bitrix24Simulator, Runtime, Clock]]:
    clock = Clock(datetime(2026, 2, 20, 7, tzinfo=UTC))
    simulator = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50, clock=clock)
    for i in range(1, 24):  # users 1 … 23: the example's CEO, head, team leads and managers
        simulator.add_user(f"User {i}")
    for name in ("UF_CRM_NONSTANDARD_AT", "UF_CRM_CLIENT_KIND", "UF_CRM_PILOT_STARTED_AT"):
        simulator.add_deal_user_field(name)
    server: SimulatorServer = simulator.serve()
    monkeypatch.setenv("B24_WEBHOOK_URL", server.base_url + simulator.webhook_base)
    monkeypatch.setenv("B24_APP_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)  # the report's CSV file lands under reports/
    text = EXAMPLE.read_text(encoding="utf-8").replace("sqlite:///data/sales-planning.db", db_url)
    rt = Runtime(load_config_text(text), clock=clock)
    try:
        yield simulator, rt, clock
    finally:
        rt.stop()
        server.stop()
        simulator.close()


def _log(simulator: Bitrix24Simulator, deal: str, user: str, when: str, kind: str) -> None:
    """An activity logged as done on the deal: a call, a plain meeting, or a meeting of the
    portal's own type (PROVIDER_ID REST_APP, as crm.activity.type.add registers them)."""
    fields = {"OWNER_TYPE_ID": "2", "OWNER_ID": deal, "RESPONSIBLE_ID": user, "COMPLETED": "Y", "END_TIME": when}
    if kind == "call":
        fields["TYPE_ID"] = "2"
    elif kind == "meeting":
        fields["TYPE_ID"] = "1"
    else:
        fields |= {"PROVIDER_ID": "REST_APP", "PROVIDER_TYPE_ID": kind}
    simulator.add_activity(fields)


def test_meeting_kinds_deal_steps_nonstandard_and_contracts_in_the_monthly_report(world) -> None:  # type: ignore[no-untyped-def]
    simulator, rt, clock = world
    # Manager 11's deal A: a call and a plain meeting in February (one cycle before the month),
    # then in March a call, a cold meeting (cycle two), a needs-identification meeting and one
    # on terms; A's contract is prepared on 20 March.
    new = {"CATEGORY_ID": "2", "STAGE_ID": "C2:COLD", "UF_CRM_CLIENT_KIND": "new"}
    a = simulator.add_deal({"TITLE": "A", "ASSIGNED_BY_ID": "11", "COMPANY_ID": "5"} | new)
    _log(simulator, a, "11", "2026-02-20T11:00:00+03:00", "call")
    _log(simulator, a, "11", "2026-02-24T11:00:00+03:00", "meeting")
    _log(simulator, a, "11", "2026-03-02T11:00:00+03:00", "call")
    _log(simulator, a, "11", "2026-03-03T11:00:00+03:00", "COLD_MEETING")
    _log(simulator, a, "11", "2026-03-10T11:00:00+03:00", "NEEDS_MEETING")
    _log(simulator, a, "11", "2026-03-12T11:00:00+03:00", "TERMS_MEETING")
    clock.now = datetime(2026, 3, 20, 9, tzinfo=UTC)
    simulator.update_deal(a, {"STAGE_ID": "C2:CONTRACT"})
    # Manager 12's deal B: a call and a cold meeting, no working meeting yet; a non-standard
    # situation recorded on 12 March.
    b = simulator.add_deal({"TITLE": "B", "ASSIGNED_BY_ID": "12", "COMPANY_ID": "5"} | new)  # A's company
    _log(simulator, b, "12", "2026-03-05T11:00:00+03:00", "call")
    _log(simulator, b, "12", "2026-03-06T11:00:00+03:00", "COLD_MEETING")
    simulator.update_deal(b, {"UF_CRM_NONSTANDARD_AT": "2026-03-12"})
    # Manager 21's deal C: a cold call with no meeting after it; a working meeting planned, not
    # held: it counts nowhere.
    c = simulator.add_deal({"TITLE": "C", "ASSIGNED_BY_ID": "21"} | new)  # no company
    simulator.add_deal({"TITLE": "D", "ASSIGNED_BY_ID": "21"} | new)  # no company either: another client
    _log(simulator, c, "21", "2026-03-10T11:00:00+03:00", "call")
    simulator.add_activity(
        {"OWNER_TYPE_ID": "2", "OWNER_ID": c, "RESPONSIBLE_ID": "21", "COMPLETED": "N",
         "END_TIME": "2026-03-11T11:00:00+03:00", "PROVIDER_ID": "REST_APP", "PROVIDER_TYPE_ID": "NEEDS_MEETING"}
    )  # fmt: skip

    clock.now = datetime(2026, 4, 3, 6, tzinfo=UTC)  # Friday 3 April, 09:00 Moscow: the report is due
    assert rt.run_report("monthly-to-ceo") == 1
    with open(Path("reports") / "monthly-to-ceo-2026-03.csv", encoding="utf-8") as f:
        facts = {(r["name"] or r["scope"], r["indicator"]): r["fact"] for r in csv.DictReader(f)}
    wanted = ("prospects_in_work", "cold_meetings", "needs_meetings", "terms_meetings", "meetings",
              "call_to_meeting", "meeting_to_terms", "cold_to_working", "call_meeting_cycles", "nonstandard",
              "contracts_prepared")  # fmt: skip
    got = {(who, name): facts[(who, name)] for who in ("11", "12", "21", "group-1", "all") for name in wanted}
    assert got == {
        ("11", "cold_meetings"): "1", ("11", "call_to_meeting"): "100",
        ("11", "prospects_in_work"): "1", ("12", "prospects_in_work"): "1", ("21", "prospects_in_work"): "2",
        ("group-1", "prospects_in_work"): "1", ("all", "prospects_in_work"): "3",  # company 5; C and D alone
        ("11", "terms_meetings"): "1", ("11", "meeting_to_terms"): "100",
        ("11", "needs_meetings"): "1", ("11", "meetings"): "3", ("11", "cold_to_working"): "100",
        ("11", "call_meeting_cycles"): "2", ("11", "nonstandard"): "0", ("11", "contracts_prepared"): "1",
        ("12", "cold_meetings"): "1", ("12", "call_to_meeting"): "100",
        ("12", "terms_meetings"): "0", ("12", "meeting_to_terms"): "",
        ("12", "needs_meetings"): "0", ("12", "meetings"): "1", ("12", "cold_to_working"): "0",
        ("12", "call_meeting_cycles"): "1", ("12", "nonstandard"): "1", ("12", "contracts_prepared"): "0",
        ("21", "cold_meetings"): "0", ("21", "call_to_meeting"): "0",
        ("21", "terms_meetings"): "0", ("21", "meeting_to_terms"): "",
        ("21", "needs_meetings"): "0", ("21", "meetings"): "0", ("21", "cold_to_working"): "",
        ("21", "call_meeting_cycles"): "0", ("21", "nonstandard"): "0", ("21", "contracts_prepared"): "0",
        ("group-1", "cold_meetings"): "2", ("group-1", "call_to_meeting"): "100",
        ("group-1", "terms_meetings"): "1", ("group-1", "meeting_to_terms"): "100",
        ("group-1", "needs_meetings"): "1", ("group-1", "meetings"): "4", ("group-1", "cold_to_working"): "50",
        ("group-1", "call_meeting_cycles"): "1.5", ("group-1", "nonstandard"): "1",
        ("group-1", "contracts_prepared"): "1",
        ("all", "cold_meetings"): "2", ("all", "call_to_meeting"): "66.7",
        ("all", "terms_meetings"): "1", ("all", "meeting_to_terms"): "100",
        ("all", "needs_meetings"): "1", ("all", "meetings"): "4", ("all", "cold_to_working"): "50",
        ("all", "call_meeting_cycles"): "1", ("all", "nonstandard"): "1", ("all", "contracts_prepared"): "1",
    }  # fmt: skip


DAY_PLANS = """period,person,team,indicator,plan
2026-03-10,m11,,cold_calls,3
2026-03-10,m11,,meetings,1
2026-03-10,m12,,cold_calls,3
2026-03-10,m12,,meetings,1
"""


def _plan(simulator: Bitrix24Simulator, user: str, when: str, kind: str, **more: str) -> None:
    """An activity planned (not done), starting at ``when``."""
    fields = {"OWNER_TYPE_ID": "2", "RESPONSIBLE_ID": user, "COMPLETED": "N", "START_TIME": when, "END_TIME": when}
    fields |= {"TYPE_ID": "2"} if kind == "call" else {"PROVIDER_ID": "REST_APP", "PROVIDER_TYPE_ID": kind}
    simulator.add_activity(fields | more)


def test_planned_activities_short_of_the_day_plan_give_the_manager_a_task_at_the_start(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    simulator, rt, clock = world
    plans = tmp_path / "day-plans.csv"
    plans.write_text(DAY_PLANS, encoding="utf-8")
    assert load_plans(rt.store, plans, rt.config, clock.now).added == 4
    # The managers' deals in work: new clients' (cold calls) and a current client's.
    new = {"CATEGORY_ID": "2", "STAGE_ID": "C2:COLD", "UF_CRM_CLIENT_KIND": "new"}
    n11 = simulator.add_deal({"TITLE": "N11", "ASSIGNED_BY_ID": "11"} | new)
    n12 = simulator.add_deal({"TITLE": "N12", "ASSIGNED_BY_ID": "12"} | new)
    c12 = simulator.add_deal({"TITLE": "C12", "ASSIGNED_BY_ID": "12", "UF_CRM_CLIENT_KIND": "current"})
    # Manager 11 planned Tuesday 10 March in full: three outgoing calls and a cold meeting.
    for hour in (10, 11, 12):
        _plan(simulator, "11", f"2026-03-10T{hour}:00:00+03:00", "call", OWNER_ID=n11)
    _plan(simulator, "11", "2026-03-10T15:00:00+03:00", "COLD_MEETING", OWNER_ID=n11)
    # Manager 12: two outgoing calls to a new client, an incoming one and an outgoing one to a
    # current client (no cold calls), a meeting; a call made already and one planned for
    # Wednesday do not count.
    for hour in (10, 11):
        _plan(simulator, "12", f"2026-03-10T{hour}:00:00+03:00", "call", OWNER_ID=n12)
    _plan(simulator, "12", "2026-03-10T12:00:00+03:00", "call", DIRECTION="1", OWNER_ID=n12)
    _plan(simulator, "12", "2026-03-10T13:00:00+03:00", "call", OWNER_ID=c12)
    _plan(simulator, "12", "2026-03-10T14:00:00+03:00", "NEEDS_MEETING", OWNER_ID=n12)
    _plan(simulator, "12", "2026-03-11T10:00:00+03:00", "call", OWNER_ID=n12)
    _plan(simulator, "12", "2026-03-10T09:30:00+03:00", "call", COMPLETED="Y", OWNER_ID=n12)

    clock.now = datetime(2026, 3, 9, 5, 30, tzinfo=UTC)  # Monday 9 March, a public holiday: no check
    assert rt.run_report("planned-today") == 0
    clock.now = datetime(2026, 3, 10, 5, 30, tzinfo=UTC)  # Tuesday 08:30 Moscow: the day begins
    assert rt.run_report("planned-today") == 1
    assert rt.run_report("planned-today") == 0
    while rt.dispatcher.tick():
        pass

    (task,) = simulator.tasks.values()
    assert task["RESPONSIBLE_ID"] == "12"
    assert task["TITLE"] == "Запланировать активности на 2026-03-10: запланировано меньше плана дня"
    assert task["DESCRIPTION"].startswith(
        "План дня / запланировано в CRM:\nuser 12 (group-1): Холодные звонки 3/2 (67%); Встречи 1/1 (100%)\n"
    )


def test_pilots_count_in_the_month_their_pilot_started_won_or_not(world) -> None:  # type: ignore[no-untyped-def]
    simulator, rt, clock = world
    pilot = {"CATEGORY_ID": "0", "STAGE_ID": "EXECUTING"}  # the simulator's own pipeline: WON is won
    # Manager 22: E's pilot starts on 16 March and is still running at the report; F's pilot
    # started in February and F is won in March (a February pilot, not March's).
    e = simulator.add_deal({"TITLE": "E", "ASSIGNED_BY_ID": "22", "OPPORTUNITY": "300000"} | pilot)
    f = simulator.add_deal({"TITLE": "F", "ASSIGNED_BY_ID": "22", "OPPORTUNITY": "50000"} | pilot)
    simulator.update_deal(f, {"UF_CRM_PILOT_STARTED_AT": "2026-02-10"})
    clock.now = datetime(2026, 3, 16, 9, tzinfo=UTC)
    simulator.update_deal(e, {"UF_CRM_PILOT_STARTED_AT": "2026-03-16"})
    # Manager 13: G's pilot starts on 25 March and G is won on the 30th.
    g = simulator.add_deal({"TITLE": "G", "ASSIGNED_BY_ID": "13", "OPPORTUNITY": "100000"} | pilot)
    clock.now = datetime(2026, 3, 25, 9, tzinfo=UTC)
    simulator.update_deal(g, {"UF_CRM_PILOT_STARTED_AT": "2026-03-25"})
    clock.now = datetime(2026, 3, 30, 9, tzinfo=UTC)
    simulator.update_deal(f, {"STAGE_ID": "WON"})
    simulator.update_deal(g, {"STAGE_ID": "WON"})

    clock.now = datetime(2026, 4, 3, 6, tzinfo=UTC)
    assert rt.run_report("monthly-to-ceo") == 1
    with open(Path("reports") / "monthly-to-ceo-2026-03.csv", encoding="utf-8") as fh:
        facts = {(r["name"] or r["scope"], r["indicator"]): r["fact"] for r in csv.DictReader(fh)}
    got = {(who, name): facts[(who, name)] for who in ("13", "22", "all") for name in ("pilots", "pilots_sum")}
    assert got == {
        ("13", "pilots"): "1", ("13", "pilots_sum"): "100000",
        ("22", "pilots"): "1", ("22", "pilots_sum"): "300000",
        ("all", "pilots"): "2", ("all", "pilots_sum"): "400000",
    }  # fmt: skip


def test_lost_clients_are_a_share_of_the_clients_the_quarter_began_with(world) -> None:  # type: ignore[no-untyped-def]
    simulator, rt, clock = world
    current = {"CATEGORY_ID": "0", "STAGE_ID": "EXECUTING", "UF_CRM_CLIENT_KIND": "current", "ASSIGNED_BY_ID": "11"}
    # In December: companies 5 (two deals), 6, 7 and 8 are current clients in work; company 9's
    # deal is lost before the quarter.
    clock.now = datetime(2025, 12, 15, 9, tzinfo=UTC)
    simulator.add_deal({"TITLE": "K1", "COMPANY_ID": "5"} | current)
    simulator.add_deal({"TITLE": "K1b", "COMPANY_ID": "5"} | current)
    k2 = simulator.add_deal({"TITLE": "K2", "COMPANY_ID": "6"} | current)
    simulator.add_deal({"TITLE": "K3", "COMPANY_ID": "7"} | current)
    k4 = simulator.add_deal({"TITLE": "K4", "COMPANY_ID": "8"} | current)
    k5 = simulator.add_deal({"TITLE": "K5", "COMPANY_ID": "9"} | current)
    clock.now = datetime(2025, 12, 20, 9, tzinfo=UTC)
    simulator.update_deal(k5, {"STAGE_ID": "LOSE"})
    # In the quarter: company 6 is lost; company 10 becomes a client and is lost too.
    clock.now = datetime(2026, 2, 25, 9, tzinfo=UTC)
    simulator.update_deal(k2, {"STAGE_ID": "LOSE"})
    k6 = simulator.add_deal({"TITLE": "K6", "COMPANY_ID": "10"} | current)
    clock.now = datetime(2026, 3, 5, 9, tzinfo=UTC)
    simulator.update_deal(k6, {"STAGE_ID": "LOSE"})
    # After the quarter, before the report: company 8's deal is won (it was in work all along).
    clock.now = datetime(2026, 4, 2, 9, tzinfo=UTC)
    simulator.update_deal(k4, {"STAGE_ID": "WON"})

    clock.now = datetime(2026, 4, 10, 6, tzinfo=UTC)  # Friday 10 April, 09:00 Moscow: the quarter's report is due
    assert rt.run_report("quarterly-to-ceo") == 1
    with open(Path("reports") / "quarterly-to-ceo-2026-Q1.csv", encoding="utf-8") as fh:
        facts = {(r["name"] or r["scope"], r["indicator"]): r["fact"] for r in csv.DictReader(fh)}
    # Began with companies 5, 6, 7 and 8; lost 6 and 10: 2 of 4. (Over the clients in work when
    # the report runs, 5 and 7, it would be 100 %.)
    assert facts[("11", "lost_clients_share")] == "50"
    assert facts[("all", "lost_clients_share")] == "50"
