"""Messages through the outbox to the Telegram simulator: each posted once, despite its faults."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from connector.config import load_config_text
from connector.dispatcher import Dispatcher
from connector.runtime import Runtime
from connector.storage.models import OutboxRow
from connector.storage.outbox import Outbox
from connector.storage.store import Store
from domain import OutboxStatus, SendMessage
from simulators import FaultKnobs, SimulatorServer
from simulators.telegram import TelegramSimulator
from tests.helpers import Clock

pytestmark = pytest.mark.slow  # real HTTP to a simulator in a thread

TOKEN = "7012345678:AAH-test-token-0123456789abcdef"
CHAT = "-1001234567890"
CONFIG = """
storage: {url: "@DB@"}
dispatcher: {backoff: 1s, reconcile_after: 2s, concurrency: 1, max_attempts: 30}
crms: {b24: {type: bitrix24, webhook_url: "https://p.bitrix24.ru/rest/1/c/", application_token: "tok-12345678"}}
channels:
  sales_chat:
    type: telegram
    token: "${TG_TOKEN}"
    chat_id: @CHAT@
    api_url: "@URL@"
    on_lost_answer: @POLICY@
    timeout: 0.4s
    backoff_initial: 0.01s
    backoff_max: 1s
    max_attempts: 3
    rate: 30
    burst: 30
"""


@pytest.fixture
def telegram() -> Iterator[tuple[TelegramSimulator, SimulatorServer]]:
    sim = TelegramSimulator(TOKEN, chats=(CHAT,), chat_burst=1000)
    server = sim.serve()
    yield sim, server
    server.stop()


def _runtime(db_url: str, url: str, policy: str, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setenv("TG_TOKEN", TOKEN)
    text = CONFIG.replace("@DB@", db_url).replace("@URL@", url).replace("@CHAT@", CHAT).replace("@POLICY@", policy)
    return Runtime(load_config_text(text), clock=clock)


def _queue(store: Store, texts: list[str], now: datetime) -> None:
    with store.sessions() as session, session.begin():
        for i, text in enumerate(texts):
            command = SendMessage(str(i), channel="sales_chat", text=text)
            Outbox.stage(session, key=f"msg-{i}", crm="sales_chat", command=command, rule="r", now=now, trigger="t")


def _drain(dispatcher: Dispatcher, store: Store, clock: Clock, rounds: int = 60) -> list[OutboxRow]:
    for _ in range(rounds):
        dispatcher.tick()
        with store.sessions() as session:
            rows = list(session.scalars(select(OutboxRow).order_by(OutboxRow.id)))
        if all(r.status in (OutboxStatus.DONE, OutboxStatus.DEAD) for r in rows):
            return rows
        clock.now += timedelta(seconds=30)  # past any backoff and the reconcile wait
    raise AssertionError("the outbox did not drain")


def test_each_message_is_posted_once_through_a_20_percent_fault_simulator(
    telegram: tuple[TelegramSimulator, SimulatorServer], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, server = telegram
    # 20 % of calls fail before anything is posted: 5xx, flood control (429 retry_after), timeouts.
    sim.faults = FaultKnobs(
        error_rate=0.08, limit_rate=0.06, timeout_rate=0.06, timeout_stall=0.6, stall_takes_effect=False, seed=7
    )
    clock = Clock()
    rt = _runtime(db_url, server.base_url, "resend", clock, monkeypatch)
    try:
        texts = [f"Оплата получена по сделке {i}" for i in range(25)]
        _queue(rt.store, texts, clock.now)
        rows = _drain(rt.dispatcher, rt.store, clock)
    finally:
        rt.stop()
    assert sorted(sim.texts(CHAT)) == sorted(texts)  # every one, none twice
    assert all(r.status == OutboxStatus.DONE for r in rows)
    injected = sim.faults.injected
    assert injected["server_error"] and injected["rate_limited"] and injected["timeout"], injected


@pytest.mark.parametrize(("policy", "posted", "remote_id"), [("resend", 2, "2"), ("drop", 1, "answer-lost:not-resent")])
def test_a_lost_answer_is_settled_by_the_channel_policy(
    telegram: tuple[TelegramSimulator, SimulatorServer],
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    policy: str,
    posted: int,
    remote_id: str,
) -> None:
    sim, server = telegram
    sim.faults = FaultKnobs(error_after_effect_rate=1.0)  # posted, then the answer is a 500
    clock = Clock()
    rt = _runtime(db_url, server.base_url, policy, clock, monkeypatch)
    try:
        _queue(rt.store, ["Счёт оплачен"], clock.now)
        rt.dispatcher.tick()
        sim.faults.error_after_effect_rate = 0.0
        rows = _drain(rt.dispatcher, rt.store, clock)
    finally:
        rt.stop()
    # resend: the message arrives twice (the documented duplicate); drop: once, here, but a
    # lost answer of a call that posted nothing would mean no message at all.
    assert sim.texts(CHAT) == ["Счёт оплачен"] * posted
    assert rows[0].status == OutboxStatus.DONE and rows[0].remote_id == remote_id


# --- the whole path: a rule's message, from a CRM event to the chat ------------------------------

RULE_AND_CHANNEL = """
  - name: won-to-chat
    crm: b24
    on: [deal.updated]
    when: {{outcome: won}}
    do:
      - message: {{channel: sales_chat, text: "Оплата получена: {{{{ deal.title }}}}"}}
channels:
  sales_chat:
    type: telegram
    token: "${{TG_TOKEN}}"
    chat_id: "{chat}"
    api_url: "{tg_url}"
    timeout: 0.4s
    backoff_initial: 0.01s
    backoff_max: 1s
    max_attempts: 3
    rate: 30
    burst: 30
"""


def test_a_rule_posts_to_the_chat_once_through_the_whole_path(
    telegram: tuple[TelegramSimulator, SimulatorServer], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simulators.bitrix24 import Bitrix24Simulator
    from tests.helpers import CONFIG as B24_CONFIG
    from tests.helpers import TOKEN as B24_TOKEN
    from tests.helpers import wait_for

    sim, tg_server = telegram
    sim.faults = FaultKnobs(
        error_rate=0.1, limit_rate=0.05, timeout_rate=0.05, timeout_stall=0.6, stall_takes_effect=False, seed=3
    )
    b24 = Bitrix24Simulator(application_token=B24_TOKEN, rate=50, burst=50)
    b24_server = b24.serve()
    monkeypatch.setenv("B24_TOKEN", B24_TOKEN)
    monkeypatch.setenv("TG_TOKEN", TOKEN)
    text = (B24_CONFIG + RULE_AND_CHANNEL).format(
        db_url=db_url, b24_url=b24_server.base_url + b24.webhook_base, chat=CHAT, tg_url=tg_server.base_url
    )
    rt = Runtime(load_config_text(text))
    try:
        rt.start()
        b24.handler_url = f"{rt.intake_url}/hooks/bitrix24/b24"
        deals = [b24.add_deal({"TITLE": f"Ромашка {i}", "CATEGORY_ID": "0", "STAGE_ID": "NEW"}) for i in range(5)]
        for deal in deals:
            b24.update_deal(deal, {"STAGE_ID": "WON"})
        b24.update_deal(deals[0], {"COMMENTS": "ещё одно изменение"})  # the rule fired once per deal already
        assert wait_for(lambda: len(sim.texts(CHAT)) >= 5, timeout=30)
        time.sleep(1.0)  # a second message would have arrived by now
    finally:
        rt.stop()
        b24_server.stop()
        b24.close()
    assert sorted(sim.texts(CHAT)) == sorted(f"Оплата получена: Ромашка {i}" for i in range(5))
