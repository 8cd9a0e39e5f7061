"""examples/isp-field-service.yaml end to end: a scripted week of the ISP's field service
(seed 000) on the Bitrix24 simulator — webhooks in, a poll, deadlines on a fake clock,
tasks out — with the CRM's state checked at the end."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy import select

from connector.runtime import Runtime
from connector.storage.models import TimerRow
from rules.penalties import penalties, penalty_deadlines
from simulators.bitrix24 import Bitrix24Simulator
from tests.example_world import MSK, Clock, example_runtime, settle
from tests.helpers import TOKEN

# A few seconds per database: in the fast tier.

# The example's users: head of service, supervisor, legal, cartographers, captains and backups.
USERS = (1, 7, 8, 9, 11, 12, 17, 19, 23, 29, 31, 37)


@pytest.fixture
def world(db_url) -> Iterator[tuple[Bitrix24Simulator, Runtime, Clock]]:  # type: ignore[no-untyped-def]
    clock = Clock(datetime(2026, 11, 23, 9, 0, tzinfo=MSK))  # Monday
    sim = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50, clock=clock)
    for uid in USERS:
        sim.add_user(f"user{uid}", user_id=str(uid))
    server = sim.serve()
    environ = {"B24_WEBHOOK_URL": server.base_url + sim.webhook_base, "B24_APP_TOKEN": TOKEN}
    rt = example_runtime("isp-field-service.yaml", db_url, environ, clock)
    sim.handler_url = f"{rt.intake_url}/hooks/bitrix24/b24"
    yield sim, rt, clock
    rt.stop()
    server.stop()
    sim.close()


def tasks(sim: Bitrix24Simulator, deal: str) -> list[tuple[str, str]]:
    return sorted((t["TITLE"].rsplit(":", 1)[0], t["RESPONSIBLE_ID"]) for t in sim.tasks_for_deal(deal))


def timers(rt: Runtime, deal: str) -> dict[str, tuple[str, datetime]]:
    with rt.store.sessions() as s:
        rows = s.scalars(select(TimerRow).where(TimerRow.deal_id == deal)).all()
        return {r.name: (r.status, r.due_at.astimezone(MSK)) for r in rows}


def test_a_week_of_the_field_service(world) -> None:  # type: ignore[no-untyped-def]
    sim, rt, clock = world

    def step(day: int, hour: int, minute: int = 0, **changes: dict[str, str]) -> None:
        clock.set(day, 11, hour, minute)
        for deal, fields in changes.items():
            sim.update_deal(ids[deal], fields)
        settle(rt, clock, [sim.webhooks])

    # Monday 10:00: four applications handed over, by webhook.
    clock.set(23, 11, 10)
    places = {
        "a": ("Казань, Советский район, ул. Мира, 1", "agent"),
        "b": ("Казань, Приволжский район, ул. Победы, 12", "site"),
        "c": ("Казань, Вахитовский район, ул. Баумана, 5", "call"),
        "d": ("Зеленодольск, ул. Ленина, 3", "agent"),
    }
    ids = {
        key: sim.add_deal(
            {
                "TITLE": f"Заявка {key.upper()}",
                "CATEGORY_ID": "1",
                "STAGE_ID": "C1:NEW",
                "ASSIGNED_BY_ID": "1",
                "UF_CRM_ADDRESS": address,
                "UF_CRM_SOURCE": source,
            }
        )
        for key, (address, source) in places.items()
    }
    settle(rt, clock, [sim.webhooks])
    captains = {"a": "17", "b": "29", "c": "19", "d": "37"}
    cartographers = {key: sim.deals[ids[key]]["UF_CRM_CARTOGRAPHER"] for key in ids}
    assert sorted(cartographers.values()) == ["11", "11", "12", "12"]  # in turn
    for key, captain in captains.items():
        assert sim.deals[ids[key]]["ASSIGNED_BY_ID"] == captain
        assert tasks(sim, ids[key]) == [("Проверить техническую возможность", cartographers[key])]
        assert {n: s for n, (s, _) in timers(rt, ids[key]).items()} == {
            "connection": "open",
            "supervisor-control": "open",
        }

    # No poles in Zelenodolsk: closed lost at once, with the reason.
    step(23, 11, d={"UF_CRM_TECH_RESULT": "Нет опор"})
    assert sim.deals[ids["d"]]["STAGE_ID"] == "C1:LOSE"
    assert sim.deals[ids["d"]]["UF_CRM_LOST_REASON"] == "Нет технической возможности (нет опор)"
    assert timers(rt, ids["d"])["connection"][0] == "done"

    # Monday 14:00: A and B are feasible; the change reaches the connector by the poll alone.
    clock.set(23, 11, 14)
    sim.handler_url = None
    for key in ("a", "b"):
        sim.update_deal(ids[key], {"STAGE_ID": "C1:ROUTE", "UF_CRM_TECH_RESULT": "Есть"})
    settle(rt, clock, [sim.webhooks], poll=["b24"])
    sim.handler_url = f"{rt.intake_url}/hooks/bitrix24/b24"
    assert sim.deals[ids["a"]]["ASSIGNED_BY_ID"] == "17"  # the captain stays responsible
    [route] = [t for t in sim.tasks_for_deal(ids["a"]) if t["TITLE"].startswith("Начертить")]
    assert route["RESPONSIBLE_ID"] == cartographers["a"]
    assert route["DEADLINE"].startswith("2026-11-24T10:00")  # 24 hours from the application

    # Tuesday: handed to the engineers, then visited.
    step(24, 10, a={"STAGE_ID": "C1:ENGINEERS"}, b={"STAGE_ID": "C1:ENGINEERS"})
    step(24, 15, a={"STAGE_ID": "C1:VISIT"}, b={"STAGE_ID": "C1:VISIT"})
    assert tasks(sim, ids["a"]) == [
        ("Назначить инженеров и дату подключения", "17"),
        ("Начертить маршрут и рассчитать расход кабеля", cartographers["a"]),
        ("Подключить клиента (агентская заявка)", "17"),
        ("Проверить техническую возможность", cartographers["a"]),
    ]
    assert ("Подключить клиента", "29") in tasks(sim, ids["b"])

    # B's client is not at home: one visit on the agreed day, however often the card is edited after.
    step(24, 16, b={"UF_CRM_VISIT_RESULT": "Клиент не дома", "UF_CRM_AGREED_TIME": "2026-11-26T11:00:00+03:00"})
    step(24, 17, b={"COMMENTS": "позвонить за час"})
    step(25, 9, b={"UF_CRM_AGREED_TIME": "2026-11-26T12:00:00+03:00"})
    revisits = [t for t in sim.tasks_for_deal(ids["b"]) if t["TITLE"].startswith("Повторный выезд")]
    assert [t["RESPONSIBLE_ID"] for t in revisits] == ["29"]
    assert revisits[0]["DEADLINE"].startswith("2026-11-26T11:00")
    # The connection deadline counts again from the last rescheduling (Wednesday 9:00).
    assert timers(rt, ids["b"])["connection"][1].replace(second=0) == datetime(2026, 11, 30, 9, 0, tzinfo=MSK)

    # Wednesday: A connected in time.
    step(25, 11, a={"STAGE_ID": "C1:WON", "UF_CRM_VISIT_RESULT": "Подключено"})
    assert timers(rt, ids["a"])["connection"][0] == "done"
    assert timers(rt, ids["a"])["client-payment"][0] == "open"

    # Thursday 10:00 passes: C, never connected, is breached and charged to its captain;
    # B, rescheduled, is not.
    step(26, 10, 1)
    assert timers(rt, ids["c"])["connection"][0] == "breached"
    assert timers(rt, ids["b"])["connection"][0] in ("open", "reminded")
    assert ("Просрочено подключение (более 3 рабочих дней)", "7") in tasks(sim, ids["c"])
    comments = [c["COMMENT"] for c in sim.comments.values() if str(c["ENTITY_ID"]) == ids["c"]]
    assert any(c.startswith("Нарушен срок подключения. Ответственный: 19.") for c in comments)

    step(26, 12, b={"STAGE_ID": "C1:WON", "UF_CRM_VISIT_RESULT": "Подключено"})
    assert timers(rt, ids["b"])["connection"][0] == "done"

    # Next Monday 10:01: C's five working days of supervisors' control are over.
    clock.set(30, 11, 10, 1)
    settle(rt, clock, [sim.webhooks])
    assert ("Контроль: заявка не подключена за 5 рабочих дней", "7") in tasks(sim, ids["c"])
    # A, connected and not yet paid: its payment is the supervisors' to chase before the month ends.
    assert ("Проконтролировать оплату клиента до конца месяца", "7") in tasks(sim, ids["a"])

    # The penalty report: one connection breach, charged to C's captain, none to user 1.
    with rt.store.sessions() as s:
        start, end = datetime(2026, 11, 1, tzinfo=MSK), datetime(2026, 12, 1, tzinfo=MSK)
        rows = rt.store.timers.breaches(s, start, end)
        recorded = {(r.deal_id, r.deadline, r.responsible_id) for r in rows}
    assert recorded == {(ids["c"], "connection", "19"), (ids["c"], "supervisor-control", "19")}
    from rules.penalties import Breach

    charged = penalties(
        [Breach(r.crm, r.deal_id, r.deadline, r.responsible_id, r.due_at, r.rule or "") for r in rows],
        penalty_deadlines(rt.config.deadlines),
    )
    assert [(b.deal_id, b.responsible_id) for b in charged] == [(ids["c"], "19")]
    # Captains kept to the end.
    assert {k: sim.deals[ids[k]]["ASSIGNED_BY_ID"] for k in captains} == captains
