"""End to end on the Bitrix24 simulator: seed 002's daily call norm (40 a day, cascaded from a
week's plan) checked against the calls logged as completed in the CRM; each manager gets the
day's plan vs fact and the team lead a task for each manager below plan, once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from connector.config import load_config_text
from connector.runtime import Runtime
from jobs.plans import load_plans
from simulators import SimulatorServer
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import TOKEN, Clock

# On the simulator in real threads: the full suite runs it, the fast tier does not.
pytestmark = pytest.mark.slow

CONFIG = """
storage: {url: "@DB@"}
server: {host: 127.0.0.1, port: 0}
crms:
  b24: {type: bitrix24, webhook_url: "@B24@", application_token: "${B24_TOKEN}", backoff_initial: 0.05s}
indicators:
  calls: {title: Дозвоны, count: activities, type: call}
  proposals: {title: КП, count: stage_entries, where: {stage: PREPARATION}}
  invoices: {title: Счета, count: stage_entries, where: {stage: PREPAYMENT_INVOICE}}
  proposal_to_invoice: {title: Конверсия КП → счёт, ratio: [invoices, proposals]}
  days_to_invoice: {title: Дней от КП до счёта, stage_days: [PREPARATION, PREPAYMENT_INVOICE]}
org:
  people: {ivan: 2, oleg: 3, lena: 4}
  teams:
    sales: {lead: lena, members: [ivan, oleg]}
reports:
  - name: daily-calls
    crm: b24
    schedule: "0 9 * * 1-5"
    period: day
    to: person
    indicators: [calls]
    missed:
      title: "План на {{ period }} не выполнен"
      text: "{{ table }}"
  - name: weekly-funnel
    crm: b24
    schedule: "0 9 * * 1-5"
    period: week
    to: team_lead
    indicators: [proposals, invoices, proposal_to_invoice, days_to_invoice]
"""

PLANS = "period,person,team,indicator,plan\n2026-W11,2,,calls,160\n2026-W11,3,,calls,160\n"


@pytest.fixture
def world(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Bitrix24Simulator, Runtime, Clock]]:
    clock = Clock(datetime(2026, 3, 10, 6, tzinfo=UTC))
    simulator = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50, clock=clock)
    for name in ("Иван", "Олег", "Лена"):  # users 2, 3, 4
        simulator.add_user(name)
    server: SimulatorServer = simulator.serve()
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    text = CONFIG.replace("@DB@", db_url).replace("@B24@", server.base_url + simulator.webhook_base)
    rt = Runtime(load_config_text(text), clock=clock)
    try:
        yield simulator, rt, clock
    finally:
        rt.stop()
        server.stop()
        simulator.close()


def _calls(simulator: Bitrix24Simulator, user: str, count: int, *, completed: str = "Y") -> None:
    for i in range(count):
        end = f"2026-03-10T{10 + i // 10:02d}:{i % 10 * 5:02d}:00+03:00"
        simulator.add_activity({"TYPE_ID": "2", "RESPONSIBLE_ID": user, "COMPLETED": completed, "END_TIME": end})


def test_missed_daily_plan_sets_a_task_for_the_team_lead_once(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    simulator, rt, clock = world
    _calls(simulator, "2", 40)
    _calls(simulator, "3", 38)
    _calls(simulator, "3", 5, completed="N")  # planned calls not made do not count
    simulator.add_activity(
        {"TYPE_ID": "1", "RESPONSIBLE_ID": "3", "COMPLETED": "Y", "END_TIME": "2026-03-10T15:00:00+03:00"}
    )
    plans = tmp_path / "plans.csv"
    plans.write_text(PLANS, encoding="utf-8")
    assert load_plans(rt.store, plans, rt.config, clock.now).added == 2

    clock.now = datetime(2026, 3, 11, 6, tzinfo=UTC)  # Wednesday 09:00 Moscow: Tuesday's report
    assert rt.run_report("daily-calls") == 3
    assert rt.run_report("daily-calls") == 0
    while rt.dispatcher.tick():
        pass

    tasks = {(t["RESPONSIBLE_ID"], t["TITLE"]): t for t in simulator.tasks.values()}
    assert set(tasks) == {
        ("2", "План/факт 2026-03-10: user 2"),
        ("3", "План/факт 2026-03-10: user 3"),
        ("4", "План на 2026-03-10 не выполнен"),
    }
    assert tasks[("2", "План/факт 2026-03-10: user 2")]["DESCRIPTION"].startswith(
        "user 2 (sales): Дозвоны 40/40 (100%)"
    )
    missed = tasks[("4", "План на 2026-03-10 не выполнен")]["DESCRIPTION"]
    assert missed.startswith("user 3 (sales): Дозвоны 40/38 (95%)") and "user 2" not in missed


def test_weekly_funnel_from_the_stage_history(world) -> None:  # type: ignore[no-untyped-def]
    simulator, rt, clock = world
    deals = []
    clock.now = datetime(2026, 3, 2, 7, tzinfo=UTC)  # the week before: the first proposal
    deals.append(simulator.add_deal({"TITLE": "A", "ASSIGNED_BY_ID": "2"}))
    simulator.update_deal(deals[0], {"STAGE_ID": "PREPARATION"})
    clock.now = datetime(2026, 3, 10, 7, tzinfo=UTC)  # Tuesday of week 11
    for title, owner in (("B", "2"), ("C", "3"), ("D", "3")):
        deal = simulator.add_deal({"TITLE": title, "ASSIGNED_BY_ID": owner})
        simulator.update_deal(deal, {"STAGE_ID": "PREPARATION"})
        deals.append(deal)
    clock.now = datetime(2026, 3, 12, 7, tzinfo=UTC)  # two days later: A (after 10 days) and B move on
    for deal in deals[:2]:
        simulator.update_deal(deal, {"STAGE_ID": "PREPAYMENT_INVOICE"})

    clock.now = datetime(2026, 3, 16, 6, tzinfo=UTC)  # Monday: last week's report to the lead
    assert rt.run_report("weekly-funnel") == 1
    while rt.dispatcher.tick():
        pass
    (task,) = [t for t in simulator.tasks.values() if t["RESPONSIBLE_ID"] == "4"]
    assert task["TITLE"] == "План/факт 2026-W11: team sales"
    lines = task["DESCRIPTION"].splitlines()
    assert lines[0] == "user 2 (sales): КП —/1; Счета —/2; Конверсия КП → счёт —/200; Дней от КП до счёта —/6"
    assert lines[1] == "user 3 (sales): КП —/2; Счета —/0; Конверсия КП → счёт —/0; Дней от КП до счёта —/—"
    assert lines[2] == "team sales: КП —/3; Счета —/2; Конверсия КП → счёт —/66.7; Дней от КП до счёта —/6"
