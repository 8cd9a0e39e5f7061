"""examples/b2b-sales.yaml end to end: a scripted week of the B2B sales department (seeds
001, 002, 004) on the Bitrix24 simulator, with an ISP pipeline beside it that the sales
rules must leave alone — webhooks in, deadlines on a fake clock, tasks and a report out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy import select

from connector.runtime import Runtime
from connector.storage.models import BreachRow
from simulators.bitrix24 import Bitrix24Simulator
from tests.example_world import MSK, Clock, example_runtime, settle
from tests.helpers import TOKEN

USERS = (1, 2, 5, 6, 17, 18, 19, 20, 21, 22)
# 1 a call-centre operator, 2 a sales manager, 5 head of sales, 6 the assistant, 17 and 18 the
# sales managers call-centre applications are distributed to, 19 and 20 account managers, 21
# and 22 customer care.
FULL = {
    "UF_CRM_COMPANY": "ООО Ромашка",
    "UF_CRM_CONTACT_NAME": "Пётр Сидоров",
    "UF_CRM_POSITION": "закупщик",
    "UF_CRM_PHONE": "+7 900 000-00-00",
    "UF_CRM_EMAIL": "p@romashka.ru",
    "UF_CRM_DELIVERY_CITY": "Казань",
    "UF_CRM_SUBJECT": "кружки с логотипом",
    "UF_CRM_DEMAND_TYPE": "сувенирная продукция",
}


@pytest.fixture
def world(db_url) -> Iterator[tuple[Bitrix24Simulator, Runtime, Clock]]:  # type: ignore[no-untyped-def]
    clock = Clock(datetime(2026, 11, 23, 9, 0, tzinfo=MSK))  # Monday
    sim = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50, clock=clock)
    for uid in USERS:
        sim.add_user(f"user{uid}", user_id=str(uid))
    server = sim.serve()
    environ = {"B24_WEBHOOK_URL": server.base_url + sim.webhook_base, "B24_APP_TOKEN": TOKEN}
    rt = example_runtime("b2b-sales.yaml", db_url, environ, clock)
    sim.handler_url = f"{rt.intake_url}/hooks/bitrix24/b24"
    yield sim, rt, clock
    rt.stop()
    server.stop()
    sim.close()


def titles(sim: Bitrix24Simulator, deal: str) -> list[tuple[str, str]]:
    return sorted((t["TITLE"].rsplit(":", 1)[0], t["RESPONSIBLE_ID"]) for t in sim.tasks_for_deal(deal))


def test_a_week_of_b2b_sales(world) -> None:  # type: ignore[no-untyped-def]
    sim, rt, clock = world

    def at(day: int, hour: int, minute: int = 0, **changes: dict[str, str]) -> None:
        clock.set(day, 11, hour, minute)
        for key, fields in changes.items():
            sim.update_deal(ids[key], fields)
        settle(rt, clock, [sim.webhooks])

    clock.set(23, 11, 10)
    ids = {
        "a": sim.add_deal({"TITLE": "Кружки", "CATEGORY_ID": "0", "STAGE_ID": "NEW", "ASSIGNED_BY_ID": "2", **FULL}),
        "b": sim.add_deal(
            {
                "TITLE": "Ручки",
                "CATEGORY_ID": "0",
                "STAGE_ID": "NEW",
                "ASSIGNED_BY_ID": "2",
                **FULL,
                "UF_CRM_POSITION": "",
                "UF_CRM_EMAIL": "",
            }
        ),
        # A call-centre application without its subject: back to the operator who took it; the
        # application itself goes round-robin to a sales manager, not to whoever picks it.
        "cc": sim.add_deal(
            {
                "TITLE": "Кирпич",
                "CATEGORY_ID": "0",
                "STAGE_ID": "NEW",
                "ASSIGNED_BY_ID": "2",
                **FULL,
                "UF_CRM_SUBJECT": "",
                "UF_CRM_OPERATOR": "1",
            }
        ),
        # A connection application of the same portal: not a sales card.
        "isp": sim.add_deal({"TITLE": "Подключение", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW", "ASSIGNED_BY_ID": "1"}),
    }
    settle(rt, clock, [sim.webhooks])
    assert titles(sim, ids["a"]) == [("Позвонить клиенту", "2")]
    assert titles(sim, ids["b"]) == [("Заполните карточку сделки", "2"), ("Позвонить клиенту", "2")]
    assert ("Дооформите заявку КЦ (тема, тип спроса, город доставки)", "1") in titles(sim, ids["cc"])
    assert sim.deals[ids["cc"]]["ASSIGNED_BY_ID"] == "17"
    assert ("Позвонить клиенту", "17") in titles(sim, ids["cc"])
    [call] = [t for t in sim.tasks_for_deal(ids["a"]) if t["TITLE"].startswith("Позвонить")]
    assert call["DEADLINE"].startswith("2026-11-24T10:00")  # the next working day

    # A is called within the hour and gets its proposal the same afternoon; B is neither.
    at(23, 11, a={"UF_CRM_FIRST_CALL": "Y"})
    stamped = datetime.fromisoformat(sim.deals[ids["a"]]["UF_CRM_FIRST_RESPONSE_AT"])  # for the reaction times
    assert datetime(2026, 11, 23, 11, 0, tzinfo=MSK) <= stamped < datetime(2026, 11, 23, 11, 1, tzinfo=MSK)
    at(23, 12, 1)
    at(23, 15, a={"STAGE_ID": "PREPARATION"})
    at(23, 17, 1)  # two working hours before the proposal is due
    assert ("Нарушен срок (first-response)", "5") in titles(sim, ids["b"])
    assert ("Отправить КП сегодня", "2") in titles(sim, ids["b"])
    assert titles(sim, ids["a"]) == [("Контрольный звонок: пришло ли КП", "2"), ("Позвонить клиенту", "2")]

    # Monday 19:00: the day's report to the manager.
    clock.set(23, 11, 19)
    rt.run_report("daily-per-manager")
    settle(rt, clock, [sim.webhooks])
    reports = {t["RESPONSIBLE_ID"]: t for t in sim.tasks.values() if t["TITLE"] == "Итоги дня 23.11.2026"}
    report = reports["2"]  # each user their own figures (the head of sales too)
    assert "Новых сделок: 2" in report["DESCRIPTION"] and "звонков: 3" in report["DESCRIPTION"]
    # The distributed call-centre application is the day's work of the manager who got it.
    assert "Новых сделок: 1" in reports["17"]["DESCRIPTION"] and "звонков: 1" in reports["17"]["DESCRIPTION"]

    # Monday 21:30: the call centre takes an application after hours. It goes to the next manager
    # in turn, who calls first thing on Tuesday; he answers it on Tuesday morning.
    clock.set(23, 11, 21, 30)
    ids["night"] = sim.add_deal(
        {
            "TITLE": "Плитка",
            "CATEGORY_ID": "0",
            "STAGE_ID": "NEW",
            "ASSIGNED_BY_ID": "1",
            **FULL,
            "UF_CRM_OPERATOR": "1",
        }
    )
    settle(rt, clock, [sim.webhooks])
    assert sim.deals[ids["night"]]["ASSIGNED_BY_ID"] == "18"
    night = {t["TITLE"].rsplit(":", 1)[0]: t for t in sim.tasks_for_deal(ids["night"])}
    morning = night["Перезвонить утром (заявка в нерабочее время)"]
    assert (morning["RESPONSIBLE_ID"], morning["DEADLINE"][:16]) == ("18", "2026-11-24T10:00")
    assert night["Позвонить клиенту"]["RESPONSIBLE_ID"] == "18"
    assert not [t for t in night.values() if t["RESPONSIBLE_ID"] == "1" and t["TITLE"].startswith("Перезвонить")]
    at(24, 9, 30, night={"UF_CRM_FIRST_CALL": "Y", "STAGE_ID": "PREPARATION"})

    # Tuesday: B's proposal deadline is breached; B is then lost with a vague reason and
    # reopened; the ISP deal lost the same way is left alone.
    at(24, 10, 1)
    assert ("Нарушен срок (proposal)", "5") in titles(sim, ids["b"])
    at(24, 11, b={"STAGE_ID": "LOSE", "UF_CRM_LOST_REASON": "дорого"})
    assert sim.deals[ids["b"]]["STAGE_ID"] == "NEW"
    assert ("Подробно опишите причину отказа", "2") in titles(sim, ids["b"])
    at(24, 12, isp={"STAGE_ID": "C1:LOSE", "UF_CRM_LOST_REASON": "дорого"})
    assert sim.deals[ids["isp"]]["STAGE_ID"] == "C1:LOSE"
    assert titles(sim, ids["isp"]) == []

    # Wednesday and Thursday: A is invoiced and paid; the client goes to customer care.
    at(25, 11, a={"STAGE_ID": "PREPAYMENT_INVOICE"})
    at(26, 11, a={"STAGE_ID": "EXECUTING"})
    assert sim.deals[ids["a"]]["UF_CRM_CARE_MANAGER"] == "21"
    assert titles(sim, ids["a"]) == [
        ("Выставить счёт и завести проект в 1С", "6"),
        ("Запросить и проверить дизайн-макеты", "2"),
        ("Контрольный звонок: пришло ли КП", "2"),
        ("Новый клиент отдела заботы", "21"),
        ("Передать клиента в отдел заботы", "2"),
        ("Позвонить клиенту", "2"),
    ]
    # Thursday noon: B's client complains; unanswered for a working day, it reaches the head.
    at(26, 12, b={"UF_CRM_COMPLAINT": "Не перезвонили"})
    assert ("Претензия клиента: ответить в течение рабочего дня", "2") in titles(sim, ids["b"])
    at(27, 12, 1)
    assert ("Претензия без ответа", "5") in titles(sim, ids["b"])
    with rt.store.sessions() as s:
        breaches = sorted((b.deal_id, b.deadline, b.responsible_id) for b in s.scalars(select(BreachRow)))
    assert breaches == sorted(
        [(ids["b"], name, "2") for name in ("first-response", "proposal", "complaint-answer")]
        + [(ids["cc"], name, "17") for name in ("first-response", "proposal")]
    )

    # Friday: A goes to «Заказ товара» without its sum: supply and logistics do not get it.
    at(27, 13, a={"STAGE_ID": "FINAL_INVOICE"})
    assert sim.deals[ids["a"]]["STAGE_ID"] == "EXECUTING"
    assert ("Дополните контакты и данные заказа", "2") in titles(sim, ids["a"])
    assert not sim.deals[ids["a"]].get("UF_CRM_ACCOUNT_MANAGER")
    # With the sum: the client goes to an account manager, the assistant prepares the supplier's
    # payment request.
    at(27, 14, a={"OPPORTUNITY": "120000", "STAGE_ID": "FINAL_INVOICE"})
    assert sim.deals[ids["a"]]["STAGE_ID"] == "FINAL_INVOICE"
    assert sim.deals[ids["a"]]["UF_CRM_ACCOUNT_MANAGER"] == "19"
    handed = titles(sim, ids["a"])
    assert ("Принять клиента и заказать товар по проекту", "19") in handed
    assert ("Сформировать заявку на оплату поставщику", "6") in handed
    # The goods reach the warehouse at 16:30, past Minilogist's 16:00: transport is booked by
    # Monday 16:00, and the client is told the pickup or delivery date.
    at(27, 16, 30, a={"UF_CRM_GOODS_RECEIVED": "Y"})
    new = {t["TITLE"].rsplit(":", 1)[0]: t for t in sim.tasks_for_deal(ids["a"]) if t["RESPONSIBLE_ID"] == "19"}
    transport = new["Заказать транспорт/курьера: счёт на доставку и заявка в Минилогисте до 16:00"]
    assert transport["DEADLINE"].startswith("2026-11-30T16:00")
    assert "Товар на складе: сообщить клиенту дату самовывоза или доставки" in new
