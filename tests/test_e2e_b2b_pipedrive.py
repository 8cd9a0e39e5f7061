"""The B2B sales rule set (examples/b2b-sales-pipedrive.yaml) end to end on the Pipedrive
simulator: tasks land as activities."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from connector.config import load_config_text
from connector.runtime import Runtime
from connector.storage.models import TimerRow
from simulators.pipedrive import PipedriveSimulator
from simulators.telegram import TelegramSimulator
from tests.helpers import wait_for

# End to end against the simulators in real threads: the full suite runs them, the fast tier does not.
pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "b2b-sales-pipedrive.yaml"
API_TOKEN, HOOK_USER, HOOK_PASSWORD = "pd-b2b-token-0123456789", "hooks", "hook-password-b2b"
TG_TOKEN, SHARED_CHAT, CARE_CHAT = "7012345678:AAH-b2b-token-0123456789abcdef", "-1001234567890", "-1001234567891"
KEYS = {
    name: "a" * 36 + suffix
    for name, suffix in (
        ("position", "0001"),
        ("phone", "0002"),
        ("email", "0003"),
        ("city", "0004"),
        ("care", "0005"),
        ("future", "0007"),
    )
}


@pytest.fixture
def telegram() -> Iterator[TelegramSimulator]:
    chat = TelegramSimulator(TG_TOKEN, chats=(SHARED_CHAT, CARE_CHAT), chat_burst=1000)
    yield chat
    chat.close()


@pytest.fixture
def world(db_url, monkeypatch, telegram) -> Iterator[tuple[PipedriveSimulator, Runtime]]:  # type: ignore[no-untyped-def]
    simulator = PipedriveSimulator(api_token=API_TOKEN, burst_limit=40, webhook_retry_delays=(0.2, 0.5))
    tg_server = telegram.serve()
    for _ in range(23):  # ids 10002.. : the example names users 20, 21, 22 — map them below
        simulator.add_user("user")
    for name, key in KEYS.items():
        simulator.add_deal_field(name, "varchar", key=key)
    server = simulator.serve()
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace(
        'storage: {url: "sqlite:///data/b2b-pipedrive.db"}',
        f'storage: {{url: "{db_url}"}}\nserver: {{host: 127.0.0.1, port: 0}}\n'
        "worker: {every: 0.1s}\ndispatcher: {every: 0.1s, backoff: 0.2s, reconcile_after: 0.5s}",
    )
    # The simulator numbers users from 10001; the example's 20/21/22 become real ids.
    text = text.replace("to: 20,", "to: 10020,").replace("group: [21, 22]", "group: [10021, 10022]")
    environ = {
        "TG_API_URL": tg_server.base_url,
        "TG_BOT_TOKEN": TG_TOKEN,
        "TG_SHARED_CHAT_ID": SHARED_CHAT,
        "TG_CARE_CHAT_ID": CARE_CHAT,
        "PD_BASE_URL": server.base_url,
        "PD_API_TOKEN": API_TOKEN,
        "PD_WEBHOOK_USER": HOOK_USER,
        "PD_WEBHOOK_PASSWORD": HOOK_PASSWORD,
    }
    rt = Runtime(load_config_text(text, environ))
    rt.start()
    simulator.add_webhook(
        f"{rt.intake_url}/hooks/pipedrive/pd",
        event_action="*",
        event_object="deal",
        version="2.0",
        http_auth_user=HOOK_USER,
        http_auth_password=HOOK_PASSWORD,
    )
    yield simulator, rt
    rt.stop()
    server.stop()
    tg_server.stop()
    simulator.close()


def _complete(extra: dict[str, object] | None = None) -> dict[str, object]:
    return {
        "title": "Кружки с логотипом",
        "stage_id": 1,
        "owner_id": 10002,
        "value": 50000,
        "currency": "RUB",
        "org_id": 1,
        "person_id": 1,
        "expected_close_date": "2026-12-15",
        "custom_fields": {
            KEYS["position"]: "закупщик",
            KEYS["phone"]: "+7 900 000-00-00",
            KEYS["email"]: "p@romashka.ru",
            KEYS["city"]: "Казань",
        },
        **(extra or {}),
    }


def _subjects(simulator: PipedriveSimulator, deal: int) -> list[tuple[str, str, int]]:
    return [(a["subject"], a["type"], a["owner_id"]) for a in simulator.activities_for_deal(deal)]


def test_new_lead_gets_a_call_and_a_proposal_deadline(world) -> None:  # type: ignore[no-untyped-def]
    simulator, rt = world
    deal = simulator.add_deal(_complete())
    assert wait_for(lambda: _subjects(simulator, deal) == [("Позвонить клиенту: Кружки с логотипом", "call", 10002)])
    with rt.store.sessions() as s:
        assert s.scalar(select(TimerRow.name).where(TimerRow.deal_id == str(deal))) == "proposal"


def test_missing_card_fields_ask_for_them(world) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = world
    deal = simulator.add_deal({**_complete(), "custom_fields": {}})
    assert wait_for(
        lambda: ("Заполните карточку сделки: Кружки с логотипом", "task", 10002) in _subjects(simulator, deal)
    )


def test_lost_with_a_vague_reason_is_reopened_and_asked(world) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = world
    vague = simulator.add_deal(_complete({"stage_id": 4}))
    detailed = simulator.add_deal(_complete({"stage_id": 4, "title": "Футболки"}))
    assert wait_for(lambda: all(simulator.activities_for_deal(d) == [] for d in (vague, detailed)), timeout=2)
    simulator.update_deal(vague, {"status": "lost", "lost_reason": "дорого"})
    simulator.update_deal(
        detailed,
        {
            "status": "lost",
            "lost_reason": "Выбрали поставщика с доставкой завтра",
            "custom_fields": {KEYS["future"]: "Вернётся к осеннему заказу"},
        },
    )
    assert wait_for(
        lambda: (
            simulator.deals[vague]["status"] == "open"
            and ("Подробно опишите причину проигрыша: Кружки с логотипом", "task", 10002) in _subjects(simulator, vague)
        )
    )
    assert simulator.deals[detailed]["status"] == "lost" and _subjects(simulator, detailed) == []


def test_lost_without_the_clients_answer_on_future_cooperation_is_reopened(world) -> None:  # type: ignore[no-untyped-def]
    """S002.16: a detailed reason is not enough; the client's answer about working together in
    the future is asked for too."""
    simulator, _ = world
    deal = simulator.add_deal(_complete({"stage_id": 4, "title": "Кепки"}))
    assert wait_for(lambda: simulator.activities_for_deal(deal) == [], timeout=2)
    simulator.update_deal(deal, {"status": "lost", "lost_reason": "Выбрали поставщика с доставкой завтра"})
    assert wait_for(
        lambda: (
            simulator.deals[deal]["status"] == "open"
            and ("Подробно опишите причину проигрыша: Кепки", "task", 10002) in _subjects(simulator, deal)
        )
    )


def test_won_deal_is_handed_to_customer_care_in_turn(world) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = world
    deals = [simulator.add_deal(_complete({"stage_id": 5, "title": f"Заказ {i}"})) for i in range(2)]
    for deal in deals:
        simulator.update_deal(deal, {"status": "won"})
    assert wait_for(lambda: all(len(simulator.activities_for_deal(d)) == 1 for d in deals))
    owners = sorted(simulator.activities_for_deal(d)[0]["owner_id"] for d in deals)
    assert owners == [10021, 10022]  # round-robin over the care team
    assert {simulator.deals[d]["custom_fields"][KEYS["care"]] for d in deals} == {"10021", "10022"}


def test_won_deal_is_announced_in_the_care_teams_chat(world, telegram) -> None:  # type: ignore[no-untyped-def]
    """S002.18: the client is handed to the care team (https://t.me/Smart_Maker): one message in
    its Telegram chat naming the deal, the client's number and both managers; not the shared chat's."""
    simulator, _ = world
    paid = simulator.add_deal(_complete({"stage_id": 5, "title": "Блокноты", "value": 9000, "currency": "UAH"}))
    simulator.update_deal(paid, {"status": "won"})
    # The message and the care manager's field are two writes to two services: either may land first.
    assert wait_for(lambda: len(telegram.texts(CARE_CHAT)) == 1)
    assert wait_for(lambda: KEYS["care"] in simulator.deals[paid]["custom_fields"])
    (text,) = telegram.texts(CARE_CHAT)
    care = simulator.deals[paid]["custom_fields"][KEYS["care"]]
    assert text == (
        "Новый клиент отдела заботы: Блокноты — 9000 UAH. Номер клиента: +7 900 000-00-00. "
        f"Менеджер заботы: {care}, менеджер по продажам: 10002."
    )
    assert all(not t.startswith("Новый клиент") for t in telegram.texts(SHARED_CHAT))


def test_payment_is_posted_to_the_shared_chat_with_the_client_number(world, telegram) -> None:  # type: ignore[no-untyped-def]
    """Seed 002, step 5: after payment the shared chat gets the client's number and the payment."""
    simulator, _ = world
    paid = simulator.add_deal(_complete({"stage_id": 5, "title": "Футболки", "value": 18000, "currency": "UAH"}))
    simulator.update_deal(paid, {"status": "won"})
    assert wait_for(lambda: len(telegram.texts(SHARED_CHAT)) == 1)
    (text,) = telegram.texts(SHARED_CHAT)
    assert text.startswith("Оплата: Футболки — 18000 UAH. Номер клиента: +7 900 000-00-00. Менеджер: 10002.")
    simulator.update_deal(paid, {"title": "Футболки (доставка)"})  # a later edit posts nothing more
    assert wait_for(lambda: simulator.deals[paid]["title"] == "Футболки (доставка)")
    assert not wait_for(lambda: len(telegram.texts(SHARED_CHAT)) > 1, timeout=1.5)
