"""End to end on the Pipedrive simulator: March's plan-vs-fact report, from the calls, meetings
and won deals logged in the CRM against the plans loaded from a CSV, delivered once on its due
day (5 April 2026 is a Sunday: Friday the 3rd) as tasks to the head and the team lead and as a
CSV file."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from connector.config import load_config_text
from connector.runtime import Runtime
from connector.storage.cursors import Cursors
from jobs.plans import load_plans
from simulators import SimulatorServer
from simulators.pipedrive import PipedriveSimulator
from tests.helpers import Clock

# On the simulator in real threads: the full suite runs it, the fast tier does not.
pytestmark = pytest.mark.slow

TOKEN = "pd-test-token-0123456789"

CONFIG = """
storage: {url: "@DB@"}
server: {host: 127.0.0.1, port: 0}
crms:
  pd:
    type: pipedrive
    base_url: "@PD@"
    api_token: "${PD_TOKEN}"
    webhook_user: hooks
    webhook_password: hook-password-123
    backoff_initial: 0.05s
indicators:
  calls: {title: Звонки, count: activities, type: call}
  meetings: {title: Встречи, count: activities, type: meeting}
  contracts: {title: Договоры, count: won_deals}
  turnover: {title: Оборот, sum: amount, of: won_deals}
  call_to_meeting: {title: Конверсия звонок-встреча, ratio: [meetings, calls]}
org:
  people: {admin: 10001, ivan: 10002, oleg: 10003, lena: 10004}
  teams:
    sales: {head: admin}
    north: {parent: sales, lead: lena, members: [ivan, oleg]}
reports:
  - name: month-plan-fact
    crm: pd
    schedule: "0 9 * * *"
    period: month
    by: 5
    to: head
    indicators: [calls, meetings, contracts, turnover, call_to_meeting]
    file: "@OUT@/{{ report }}-{{ period }}.csv"
  - name: month-team
    crm: pd
    schedule: "0 9 * * *"
    period: month
    by: 5
    to: team_lead
    indicators: [calls, contracts]
"""

PLANS = """period,person,team,indicator,plan
2026-03,10002,,calls,4
2026-03,10003,,calls,2
2026-03,10002,,meetings,1
2026-03,10003,,meetings,1
2026-Q1,,north,contracts,6
2026-03,,north,turnover,5000
"""


@pytest.fixture
def world(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[PipedriveSimulator, Runtime, Clock]]:
    clock = Clock(datetime(2026, 3, 2, 7, tzinfo=UTC))
    simulator = PipedriveSimulator(api_token=TOKEN, clock=clock)
    for name in ("Ivan", "Oleg", "Lead Lena"):  # 10002, 10003, 10004
        simulator.add_user(name)
    server: SimulatorServer = simulator.serve()
    monkeypatch.setenv("PD_TOKEN", TOKEN)
    text = CONFIG.replace("@DB@", db_url).replace("@PD@", server.base_url).replace("@OUT@", str(tmp_path / "out"))
    rt = Runtime(load_config_text(text), clock=clock)
    try:
        yield simulator, rt, clock
    finally:
        rt.stop()
        server.stop()
        simulator.close()


def _activity(base: str, owner: int, kind: str, *, done: bool = True) -> None:
    answer = requests.post(
        f"{base}/api/v2/activities",
        headers={"x-api-token": TOKEN},
        json={"subject": kind, "type": kind, "owner_id": owner, "done": done},
        timeout=10,
    )
    answer.raise_for_status()


def _march_in_the_crm(simulator: PipedriveSimulator, base: str, clock: Clock) -> None:
    clock.now = datetime(2026, 3, 2, 8, tzinfo=UTC)
    for _ in range(3):
        _activity(base, 10002, "call")
    _activity(base, 10002, "meeting")
    _activity(base, 10003, "call")
    _activity(base, 10003, "call", done=False)  # planned, never made: not a fact
    won = simulator.add_deal({"title": "Pilot", "owner_id": 10002, "value": 3000})
    other = simulator.add_deal({"title": "Supply", "owner_id": 10003, "value": 1500})
    clock.now = datetime(2026, 3, 20, 12, tzinfo=UTC)
    simulator.update_deal(won, {"status": "won"})
    simulator.update_deal(other, {"status": "won"})
    clock.now = datetime(2026, 2, 27, 12, tzinfo=UTC)
    _activity(base, 10002, "call")  # February: another period
    clock.now = datetime(2026, 4, 1, 8, tzinfo=UTC)
    _activity(base, 10003, "meeting")  # April: another period


def test_monthly_plan_vs_fact_delivered_once_on_its_due_day(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    simulator, rt, clock = world
    base = rt.config.crms["pd"].base_url
    _march_in_the_crm(simulator, base, clock)
    plan_file = tmp_path / "plans.csv"
    plan_file.write_text(PLANS, encoding="utf-8")
    loaded = load_plans(rt.store, plan_file, rt.config, clock.now)
    assert (loaded.problems, loaded.added) == ([], 6)

    clock.now = datetime(2026, 4, 2, 6, tzinfo=UTC)  # Thursday: not due yet
    assert rt.run_report("month-plan-fact") == 0
    clock.now = datetime(2026, 4, 3, 6, tzinfo=UTC)  # Friday 09:00 in Moscow: due (the 5th is a Sunday)
    assert rt.run_report("month-plan-fact") == 1
    assert rt.run_report("month-team") == 1
    assert rt.run_report("month-plan-fact") == 0  # once per period
    with rt.store.reading() as session:  # what the report remembers is no poll's bookmark (status)
        assert Cursors.latest_bookmark(session, "pd") is None
    clock.now = datetime(2026, 4, 6, 6, tzinfo=UTC)
    assert rt.run_report("month-plan-fact") == 0
    while rt.dispatcher.tick():
        pass

    tasks = {
        (a["owner_id"], a["subject"]): a for a in simulator.activities.values() if a["subject"].startswith("План/факт")
    }
    assert set(tasks) == {(10001, "План/факт 2026-03: all"), (10004, "План/факт 2026-03: team north")}
    head = tasks[(10001, "План/факт 2026-03: all")]
    note = head["note"]
    # Only the team has a contracts plan: 6 for the quarter, March's share 6 × 21 / 55 working days.
    assert "user 10002 (north): Звонки 4/3 (75%); Встречи 1/1 (100%); Договоры —/1; Оборот —/3000" in note
    assert "user 10003 (north): Звонки 2/1 (50%); Встречи 1/0 (0%); Договоры —/1; Оборот —/1500" in note
    assert "team north: Звонки 6/4 (67%); Встречи 2/1 (50%); Договоры 2.29/2 (87%); Оборот 5000/4500 (90%)" in note
    assert "Конверсия звонок-встреча —/25" in note
    lead_note = tasks[(10004, "План/факт 2026-03: team north")]["note"]
    assert "team north: Звонки 6/4 (67%); Договоры 2.29/2 (87%)" in lead_note and "Встречи" not in lead_note
    # Due at the end of the working day on Friday 3 April (18:00 Moscow).
    assert (head["due_date"], head["due_time"]) == ("2026-04-03", "15:00")

    with (tmp_path / "out" / "month-plan-fact-2026-03.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    turnover = next(r for r in rows if r["scope"] == "team" and r["indicator"] == "turnover")
    assert (turnover["plan"], turnover["fact"], turnover["percent"]) == ("5000", "4500", "90")
    calls = next(r for r in rows if r["name"] == "10002" and r["indicator"] == "calls")
    assert (calls["plan"], calls["fact"]) == ("4", "3")


def test_planned_activities_are_read_by_their_due_day(world) -> None:  # type: ignore[no-untyped-def]
    """What an ``ahead`` report counts on Pipedrive: activities not done, due in the window (due
    time in UTC; an all-day one on its date), never done ones or another day's."""
    simulator, rt, clock = world
    base = rt.adapters["pd"].settings.base_url

    def post(subject: str, **fields: object) -> None:
        body = {"subject": subject, "type": "call", "owner_id": 10002, "done": False, **fields}
        answer = requests.post(f"{base}/api/v2/activities", headers={"x-api-token": TOKEN}, json=body, timeout=10)
        answer.raise_for_status()

    post("morning", due_date="2026-03-10", due_time="07:00")
    post("all day", due_date="2026-03-10", type="meeting")
    post("made", due_date="2026-03-10", due_time="08:00", done=True)
    post("tomorrow", due_date="2026-03-11", due_time="07:00")
    post("late evening in UTC, the 11th in Moscow", due_date="2026-03-10", due_time="22:00")
    since, until = datetime(2026, 3, 9, 21, tzinfo=UTC), datetime(2026, 3, 10, 21, tzinfo=UTC)  # 10 March, Moscow
    got = sorted((f.fields["subject"], f.type, f.status, f.at) for f in rt.adapters["pd"].read_planned(since, until))
    assert got == [
        ("all day", "meeting", "planned", datetime(2026, 3, 10, 12, tzinfo=UTC)),
        ("morning", "call", "planned", datetime(2026, 3, 10, 7, tzinfo=UTC)),
    ]
