"""examples/money-in-1c.yaml end to end: a scripted week of money in 1C (seeds 000, 001, 004)
on the 1C and Bitrix24 simulators — deal webhooks in, 1C documents polled, deadlines on a
fake clock, tasks, fields, comments and a counterparty out — with the end state checked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from connector.runtime import Runtime
from connector.storage.models import BreachRow, TimerRow
from simulators.bitrix24 import Bitrix24Simulator
from simulators.onec import OneCSimulator
from tests.example_world import MSK, Clock, example_runtime, settle
from tests.helpers import TOKEN

INVOICES = "Document_СчетНаОплатуКлиенту"
PAYMENTS = "Document_ПоступлениеБезналичныхДенежныхСредств"
ORDERS = "Document_ЗаказКлиента"
PARTIES = "Catalog_Контрагенты"
LOGIN, PASSWORD = "Интеграция", "secret"
USERS = (1, 2, 5, 7, 8, 41)  # 2 the sales manager, 5 head of sales, 8 accountant, 41 an agent, 7 supervisor


@pytest.fixture
def world(db_url) -> Iterator[tuple[Bitrix24Simulator, OneCSimulator, Runtime, Clock]]:  # type: ignore[no-untyped-def]
    clock = Clock(datetime(2026, 11, 23, 9, 0, tzinfo=MSK))  # Monday
    b24 = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50, clock=clock)
    for uid in USERS:
        b24.add_user(f"user{uid}", user_id=str(uid))
    onec = OneCSimulator(clock=lambda: clock.now.replace(tzinfo=None, microsecond=0))
    b24_server, onec_server = b24.serve(), onec.serve()
    environ = {
        "B24_WEBHOOK_URL": b24_server.base_url + b24.webhook_base,
        "B24_APP_TOKEN": TOKEN,
        "ONEC_URL": f"{onec_server.base_url}{onec.base_path}/",
        "ONEC_USER": LOGIN,
        "ONEC_PASSWORD": PASSWORD,
    }
    rt = example_runtime("money-in-1c.yaml", db_url, environ, clock)
    b24.handler_url = f"{rt.intake_url}/hooks/bitrix24/b24"
    yield b24, onec, rt, clock
    rt.stop()
    onec_server.stop()
    b24_server.stop()
    b24.close()


def posted(onec: OneCSimulator, entity_set: str, fields: dict[str, Any]) -> dict[str, Any]:
    doc = onec.insert(entity_set, fields)
    return onec.set_posted(entity_set, doc["Ref_Key"])


def comments(b24: Bitrix24Simulator, deal: str) -> list[str]:
    return [c["COMMENT"].split("\n[crmc:")[0] for c in b24.comments.values() if str(c["ENTITY_ID"]) == deal]


def tasks(b24: Bitrix24Simulator, deal: str) -> list[tuple[str, str, str]]:
    return [(t["TITLE"], t["RESPONSIBLE_ID"], t["PRIORITY"]) for t in b24.tasks_for_deal(deal)]


def test_a_week_of_money_in_1c(world) -> None:  # type: ignore[no-untyped-def]
    b24, onec, rt, clock = world

    def at(day: int, hour: int, minute: int = 0) -> None:
        clock.set(day, 11, hour, minute)
        settle(rt, clock, [b24.webhooks], poll=["onec"])

    # Monday: a sales deal reaches "invoice issued" with its client's card filled in; the
    # assistant no longer types the client into 1C.
    clock.set(23, 11, 10)
    sale = b24.add_deal(
        {
            "TITLE": "Кружки с логотипом",
            "CATEGORY_ID": "0",
            "STAGE_ID": "NEW",
            "ASSIGNED_BY_ID": "2",
            "UF_CRM_COMPANY": "Ромашка ООО",
            "UF_CRM_INN": "7701234567",
            "UF_CRM_PHONE": "+7 495 000-00-00",
            "UF_CRM_DELIVERY_CITY": "Тверь",
            "OPPORTUNITY": "120000",
        }
    )
    unpaid = b24.add_deal({"TITLE": "Ручки", "CATEGORY_ID": "0", "STAGE_ID": "NEW", "ASSIGNED_BY_ID": "2"})
    connection = b24.add_deal(
        {
            "TITLE": "Подключение Петрова",
            "CATEGORY_ID": "1",
            "STAGE_ID": "C1:WON",
            "ASSIGNED_BY_ID": "2",
            "UF_CRM_AGENT": "41",
            "UF_CRM_SUPERVISOR": "7",
        }
    )
    at(23, 10)
    b24.update_deal(sale, {"STAGE_ID": "PREPAYMENT_INVOICE"})
    at(23, 11)
    [party] = [p for p in onec.data[PARTIES].values() if p.get("ИНН") == "7701234567"]
    assert party["Description"] == "Ромашка ООО"
    # Nor does the manager retype the order: it is created from the card, for that counterparty.
    [draft] = onec.data[ORDERS].values()
    assert (draft["Контрагент_Key"], draft["СуммаДокумента"]) == (party["Ref_Key"], 120000)
    assert draft["Комментарий"].startswith(f"Сделка #{sale}: Кружки с логотипом. Город доставки: Тверь. Телефон:")
    # Once 1C agrees and posts it, the order finds its way back to the deal.
    onec.set_posted(ORDERS, draft["Ref_Key"])
    at(23, 11, 30)
    assert b24.deals[sale]["UF_CRM_1C_ORDER"] == draft["Number"]
    assert b24.deals[sale]["UF_CRM_1C_ORDER_STATUS"] == "НеСогласован"

    # Monday 12:00: invoices raised in 1C reach their deals.
    clock.set(23, 11, 12)
    invoice = posted(
        onec,
        INVOICES,
        {"Контрагент_Key": party["Ref_Key"], "СуммаДокумента": 120000, "Комментарий": f"Сделка #{sale}"},
    )
    other = posted(onec, INVOICES, {"СуммаДокумента": 3000, "Комментарий": f"сделка {unpaid}"})
    fee = posted(onec, INVOICES, {"СуммаДокумента": 600, "Комментарий": f"сделка {connection}"})
    at(23, 12, 5)
    assert b24.deals[sale]["UF_CRM_INVOICE"] == invoice["Number"]
    assert b24.deals[sale]["UF_CRM_INVOICE_AMOUNT"] == "120000.0"
    assert comments(b24, sale) == [
        f"1С: заказ № {draft['Number']} — статус «НеСогласован»",
        f"1С: выставлен счёт № {invoice['Number']} на 120000.0 RUB",
    ]
    with rt.store.sessions() as s:
        running = {r.deal_id for r in s.scalars(select(TimerRow).where(TimerRow.name == "invoice-payment"))}
    assert running == {sale, unpaid, connection}

    # Tuesday: the first part of the sale is paid; the connection's fee is paid in full.
    clock.set(24, 11, 11)
    posted(
        onec,
        PAYMENTS,
        {
            "Контрагент_Key": party["Ref_Key"],
            "СуммаДокумента": 50000,
            "РасшифровкаПлатежа": [{"ОснованиеПлатежа": invoice["Ref_Key"], "Сумма": 50000}],
        },
    )
    posted(
        onec,
        PAYMENTS,
        {"СуммаДокумента": 600, "РасшифровкаПлатежа": [{"ОснованиеПлатежа": fee["Ref_Key"], "Сумма": 600}]},
    )
    at(24, 11, 5)
    assert b24.deals[sale]["UF_CRM_PAID_TOTAL"] == "50000.0"
    assert b24.deals[sale]["STAGE_ID"] == "PREPAYMENT_INVOICE"  # a part payment moves nothing
    assert tasks(b24, sale) == [("Первая оплата получена: передать клиента в работу (Кружки с логотипом)", "2", "1")]
    # The connection's first payment names the agent and the supervisor for the 80/20 bonus.
    assert (b24.deals[connection]["UF_CRM_BONUS_AGENT"], b24.deals[connection]["UF_CRM_BONUS_SUPERVISOR"]) == (
        "41: 80 %",
        "7: 20 %",
    )
    assert tasks(b24, connection) == [("Бонус за подключение: Подключение Петрова", "8", "1")]
    assert b24.deals[connection]["STAGE_ID"] == "C1:WON"  # no sales stage on a connection

    # Thursday morning: three working days before the month's end, the unpaid are chased.
    at(25, 18, 1)
    assert not [t for t in tasks(b24, unpaid) if "напомнить клиенту" in t[0]]
    at(26, 9, 1)
    reminders = [t for t in tasks(b24, unpaid) if "напомнить клиенту" in t[0]]
    assert reminders == [(f"Счёт {other['Number']} не оплачен: напомнить клиенту до конца месяца", "2", "1")]

    # Thursday: the unpaid order is marked for shipment in 1C and stopped.
    clock.set(26, 11, 10)
    order = posted(onec, ORDERS, {"Статус": "КОбеспечению", "СуммаДокумента": 3000, "Комментарий": f"сделка {unpaid}"})
    at(26, 10, 5)
    clock.set(26, 11, 11)
    onec.update(ORDERS, order["Ref_Key"], {"Статус": "КОтгрузке"})
    at(26, 11, 5)
    assert (b24.deals[unpaid]["UF_CRM_1C_ORDER"], b24.deals[unpaid]["UF_CRM_1C_ORDER_STATUS"]) == (
        order["Number"],
        "КОтгрузке",
    )
    assert f"1С: заказ № {order['Number']} — статус «КОбеспечению»" in comments(b24, unpaid)
    stop = [t for t in tasks(b24, unpaid) if t[0].startswith("Не отгружать")]
    assert stop == [(f"Не отгружать: заказ {order['Number']} не оплачен", "2", "2")]
    assert f"Заказ {order['Number']} помечен к отгрузке без оплаты — отгрузка остановлена." in comments(b24, unpaid)
    # The deal is still a new lead while 1C has its order to supply and then to ship: flagged at
    # each status.
    mismatch = [t for t in tasks(b24, unpaid) if t[0].startswith("Статус заказа в 1С не совпадает")]
    assert mismatch == [("Статус заказа в 1С не совпадает с этапом сделки: Ручки", "2", "1")] * 2

    # Friday: the rest of the sale is paid: in full, the deal moves to "invoice paid".
    clock.set(27, 11, 10)
    posted(
        onec,
        PAYMENTS,
        {
            "Контрагент_Key": party["Ref_Key"],
            "СуммаДокумента": 70000,
            "РасшифровкаПлатежа": [{"ОснованиеПлатежа": invoice["Ref_Key"], "Сумма": 70000}],
        },
    )
    at(27, 10, 5)
    assert b24.deals[sale]["STAGE_ID"] == "EXECUTING"
    assert b24.deals[sale]["UF_CRM_PAID_IN_FULL"] == "Y"
    # The hand-off came once, at the first payment; the part-paid invoice was chased on Thursday;
    # the deal is paid while 1C has not yet agreed its order: the two disagree, so the manager is told.
    assert sorted(t[0] for t in tasks(b24, sale)) == [
        "Первая оплата получена: передать клиента в работу (Кружки с логотипом)",
        "Статус заказа в 1С не совпадает с этапом сделки: Кружки с логотипом",
        f"Счёт {invoice['Number']} не оплачен: напомнить клиенту до конца месяца",
    ]

    # Monday 30th, 18:00 passes: the month is over; the still unpaid invoice is escalated.
    at(30, 18, 1)
    assert ("Счёт не оплачен в срок: Ручки", "5", "2") in tasks(b24, unpaid)
    with rt.store.sessions() as s:
        breached = {(b.deal_id, b.deadline) for b in s.scalars(select(BreachRow))}
        states = {r.deal_id: r.status for r in s.scalars(select(TimerRow).where(TimerRow.name == "invoice-payment"))}
    assert (unpaid, "invoice-payment") in breached and (sale, "invoice-payment") not in breached
    assert states[sale] == "done" and states[unpaid] == "breached"
