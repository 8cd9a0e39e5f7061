"""Seed 000's plans and management report end to end: examples/isp-field-service.yaml and its
plan file on the Bitrix24 simulator, on a fake clock. The month's applications and connections
are counted for the agent named on each application (the deal's responsible is the captain),
against the plans per agent and per supervisor's team, with the conversion applications →
feasible → connected → paid, and the connection deadlines breached (the connector's own records);
the management gets it by the 5th, the supervisor their team's week."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from connector.runtime import Runtime
from jobs.plans import load_plans
from simulators.bitrix24 import Bitrix24Simulator
from tests.example_world import EXAMPLES, MSK, Clock, example_runtime, settle
from tests.helpers import TOKEN

USERS = (1, 3, 7, 8, 9, 11, 12, 17, 19, 23, 29, 31, 37, 41, 42, 43)


@pytest.fixture
def world(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Bitrix24Simulator, Runtime, Clock]]:
    monkeypatch.chdir(tmp_path)  # the report's CSV file lands under reports/
    clock = Clock(datetime(2026, 11, 2, 9, 0, tzinfo=MSK))  # Monday
    sim = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50, clock=clock)
    for uid in USERS:
        sim.add_user(f"user{uid}", user_id=str(uid))
    server = sim.serve()
    environ = {"B24_WEBHOOK_URL": server.base_url + sim.webhook_base, "B24_APP_TOKEN": TOKEN}
    rt = example_runtime("isp-field-service.yaml", db_url, environ, clock)
    sim.handler_url = f"{rt.intake_url}/hooks/bitrix24/b24"  # the rules run too: deadlines, breaches
    try:
        yield sim, rt, clock
    finally:
        rt.stop()
        server.stop()
        sim.close()


def _application(sim: Bitrix24Simulator, agent: str, n: int) -> str:
    return sim.add_deal(
        {"TITLE": f"Заявка {agent}-{n}", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW", "ASSIGNED_BY_ID": "17",
         "UF_CRM_AGENT": agent}
    )  # fmt: skip


def test_month_plan_vs_fact_per_agent_and_team_with_the_conversion(world) -> None:  # type: ignore[no-untyped-def]
    sim, rt, clock = world
    assert load_plans(rt.store, EXAMPLES / "isp-field-service-plans.csv", rt.config, clock.utc()).problems == []

    # November: agent 41 brings four applications, agent 42 two; the deal's responsible is the captain.
    clock.set(3, 11, 10)
    a41 = [_application(sim, "41", n) for n in range(4)]
    a42 = [_application(sim, "42", n) for n in range(2)]
    sim.add_deal({"TITLE": "Продажа", "CATEGORY_ID": "0", "STAGE_ID": "NEW", "UF_CRM_AGENT": "41"})  # no application
    settle(rt, clock, [sim.webhooks])
    assert {sim.deals[d]["ASSIGNED_BY_ID"] for d in [*a41, *a42]} == {"1"}  # the fallback captain, not the agent
    clock.set(4, 11, 12)
    for deal in [*a41[:3], a42[0]]:
        sim.update_deal(deal, {"STAGE_ID": "C1:ROUTE", "UF_CRM_TECH_RESULT": "Есть"})
    sim.update_deal(a41[3], {"UF_CRM_TECH_RESULT": "Нет опор"})  # closed lost by the rules
    settle(rt, clock, [sim.webhooks])
    clock.set(6, 11, 15)
    for deal in [a41[0], a41[1], a42[0]]:
        sim.update_deal(deal, {"STAGE_ID": "C1:WON"})
    settle(rt, clock, [sim.webhooks])
    clock.set(6, 11, 17)
    sim.update_deal(a41[0], {"UF_CRM_PAID": "Y"})
    settle(rt, clock, [sim.webhooks])
    assert sim.deals[a41[3]]["STAGE_ID"] == "C1:LOSE"

    # The supervisor's week 45 (2–8 November, four working days: the 4th is a holiday), on Monday 9
    # November: November's plan is spread over its 20 working days.
    clock.set(9, 11, 9)
    assert rt.run_report("isp-weekly-to-supervisors") == 1
    _dispatch(rt)
    week = _report(sim, "План/факт команды за неделю 2026-W45", "7")
    assert "user 41 (supervisor-7): Заявки 24/4 (17%); Подключения 18/2 (11%); Подключены и оплатили —/1" in week
    assert "team supervisor-7: Заявки 66/6 (9%)" in week and "user 17" not in week  # the captain is not the agent

    # A41-2 (feasible) and A42-1 are not connected within 3 working days: breaches on 9 November.
    clock.set(9, 11, 12)
    settle(rt, clock, [sim.webhooks])

    # The management's month, due by the 5th: Friday 4 December (the 5th is a Saturday).
    clock.set(3, 12, 9)
    assert rt.run_report("isp-monthly-to-management") == 0
    clock.set(4, 12, 9)
    assert rt.run_report("isp-monthly-to-management") == 1
    _dispatch(rt)
    month = _report(sim, "Отчёт руководству за 2026-11", "3")
    assert (
        "user 41 (supervisor-7): Заявки 120/4 (3%); Подключения 90/2 (2%); Подключены и оплатили —/1; "
        "Просрочки подключения —/1;"
    ) in month
    assert (
        "Есть техвозможность —/3; Подключено из заявок —/2; Оплачено из заявок —/1; "
        "Заявка → техвозможность —/75; Техвозможность → подключение —/66.7; Подключение → оплата —/50;"
    ) in month
    assert "user 42 (supervisor-7): Заявки 110/2 (2%); Подключения 85/1 (1%); Подключены и оплатили —/0; " in month
    assert "Просрочки подключения —/1;" in month.split("user 42")[1].split("\n")[0]
    assert "team supervisor-7: Заявки 330/6 (2%); Подключения 250/3 (1%); Подключены и оплатили —/1; " in month
    assert "Просрочки подключения —/2;" in month.split("team supervisor-7")[1].split("\n")[0]
    text = Path("reports/isp-monthly-to-management-2026-11.csv").read_text(encoding="utf-8")
    kept = list(csv.DictReader(text.splitlines()))
    to_feasible = {(r["scope"], r["name"]): r["fact"] for r in kept if r["indicator"] == "to_feasible"}
    assert to_feasible[("person", "41")] == "75" and to_feasible[("team", "supervisor-7")] == "66.7"


def _dispatch(rt: Runtime) -> None:
    while rt.dispatcher.tick():
        pass


def _report(sim: Bitrix24Simulator, title: str, user: str) -> str:
    """The text of the one report task with this title, which must be the user's."""
    (task,) = [t for t in sim.tasks.values() if t["TITLE"].startswith(title)]
    assert task["RESPONSIBLE_ID"] == user
    return str(task["DESCRIPTION"])


def test_month_conversion_per_territory_the_captain_wrote_on_the_deal(world) -> None:  # type: ignore[no-untyped-def]
    """S000.33: the conversion per territory. The captain rule writes the matched territory's
    name on the application; the management's month has a row per territory (no plan; none is loaded here)."""
    sim, rt, clock = world
    clock.set(3, 11, 10)
    sovetsky = [
        sim.add_deal(
            {
                "TITLE": f"Заявка С-{n}",
                "CATEGORY_ID": "1",
                "STAGE_ID": "C1:NEW",
                "UF_CRM_AGENT": "41",
                "UF_CRM_ADDRESS": f"Казань, Советский район, ул. Академика Сахарова, {n + 1}",
            }
        )  # fmt: skip
        for n in range(3)
    ]
    zelenodolsk = [
        sim.add_deal(
            {
                "TITLE": f"Заявка З-{n}",
                "CATEGORY_ID": "1",
                "STAGE_ID": "C1:NEW",
                "UF_CRM_AGENT": "42",
                "UF_CRM_ADDRESS": f"Зеленодольск, ул. Ленина, {n + 1}",
            }
        )  # fmt: skip
        for n in range(2)
    ]
    nowhere = _application(sim, "42", 9)  # no address: the fallback captain, no territory
    settle(rt, clock, [sim.webhooks])
    assert {sim.deals[d]["UF_CRM_TERRITORY"] for d in sovetsky} == {"Казань, Советский"}
    assert {sim.deals[d]["ASSIGNED_BY_ID"] for d in sovetsky} == {"17"}
    assert {sim.deals[d]["UF_CRM_TERRITORY"] for d in zelenodolsk} == {"Зеленодольск"}
    assert not sim.deals[nowhere].get("UF_CRM_TERRITORY")
    clock.set(4, 11, 12)
    for deal in [*sovetsky[:2], zelenodolsk[0]]:
        sim.update_deal(deal, {"STAGE_ID": "C1:ROUTE", "UF_CRM_TECH_RESULT": "Есть"})
    settle(rt, clock, [sim.webhooks])
    clock.set(6, 11, 15)
    sim.update_deal(sovetsky[0], {"STAGE_ID": "C1:WON"})
    settle(rt, clock, [sim.webhooks])

    clock.set(4, 12, 9)
    assert rt.run_report("isp-monthly-to-management") == 1
    _dispatch(rt)
    month = _report(sim, "Отчёт руководству за 2026-11", "3")
    lines = {line.split(":")[0]: line for line in month.splitlines()}
    sov = lines["UF_CRM_TERRITORY Казань, Советский"]
    assert "Заявки —/3;" in sov and "Есть техвозможность —/2;" in sov and "Подключено из заявок —/1;" in sov
    assert "Заявка → техвозможность —/66.7; Техвозможность → подключение —/50;" in sov
    zel = lines["UF_CRM_TERRITORY Зеленодольск"]
    assert "Заявки —/2;" in zel and "Заявка → техвозможность —/50; Техвозможность → подключение —/0;" in zel
    assert "Заявки —/1;" in lines["UF_CRM_TERRITORY —"]  # the application no territory matched
    # After the teams and before the total, which still counts everyone.
    assert month.index("team supervisor-7") < month.index("UF_CRM_TERRITORY") < month.index("total: Заявки —/6;")
    text = Path("reports/isp-monthly-to-management-2026-11.csv").read_text(encoding="utf-8")
    kept = list(csv.DictReader(text.splitlines()))
    assert {r["name"] for r in kept if r["scope"] == "group"} == {"Казань, Советский", "Зеленодольск", "—"}
