"""End to end over loopback HTTP: 1C OData simulator -> document poller -> inbox -> worker ->
rules -> dispatcher -> Bitrix24 simulator, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.bitrix24.settings import Bitrix24Settings
from adapters.onec.adapter import OneCAdapter
from adapters.onec.settings import OneCSettings
from connector.config import load_config_text
from connector.runtime import Runtime
from connector.status import gather
from connector.storage.models import AuditRow, InboxRow, OutboxRow
from connector.storage.store import Store
from jobs.poll_documents import poll_documents
from simulators import SimulatorServer
from simulators.bitrix24 import Bitrix24Simulator
from simulators.onec import OneCSimulator
from tests.helpers import TOKEN, wait_for

# End to end against the simulators in real threads: the full suite runs them, the fast tier does not.
pytestmark = pytest.mark.slow

MSK = ZoneInfo("Europe/Moscow")
LOGIN, PASSWORD = "Интеграция", "secret"
INVOICES = "Document_СчетНаОплатуКлиенту"
PAYMENTS = "Document_ПоступлениеБезналичныхДенежныхСредств"
ORDERS = "Document_ЗаказКлиента"
PARTIES = "Catalog_Контрагенты"

CONFIG = """
storage: {{url: "{db_url}"}}
server: {{host: 127.0.0.1, port: 0}}
worker: {{every: 0.1s}}
dispatcher: {{every: 0.1s, backoff: 0.2s, lease: 2s, reconcile_after: 0.5s}}
crms:
  b24:
    type: bitrix24
    webhook_url: "{b24_url}"
    application_token: "${{B24_TOKEN}}"
    backoff_initial: 0.05s
    rate: 50
    burst: 50
    max_attempts: 3
  onec:
    type: onec
    base_url: "{onec_url}"
    username: "${{ONEC_USER}}"
    password: "${{ONEC_PASSWORD}}"
    deal_crm: b24
    poll_every: 1h
    profile: trade_11
    backoff_initial: 0.05s
    max_attempts: 3
    link:
      - {{by: comment, pattern: "(?:сделка|deal)\\\\s*#?(\\\\d+)"}}
      - {{by: deal_field, field: UF_CRM_1C_REF}}
      - {{by: inn, field: UF_CRM_INN}}
rules:
  - name: onec-document-comment
    crm: b24
    on: [invoice.issued, payment.received]
    once_per: event
    when: {{event_field: number, empty: false}}  # a rule without when: crashes the worker (shared bug)
    do:
      - add_comment:
          text: "1С {{{{ event.data.document }}}} № {{{{ event.data.number }}}}: \\
                 {{{{ event.data.amount }}}} {{{{ event.data.currency }}}}"
  - name: paid-hand-off
    crm: b24
    on: [payment.received]
    once_per: deal
    when: {{event_field: paid_in_full, equals: true}}
    do:
      - create_task:
          title: "Счёт {{{{ event.data.invoice_number }}}} оплачен: передать заказ ({{{{ deal.title }}}})"
          responsible: responsible
          due: 24h
"""


def msk_wall() -> datetime:
    """The 1C base's wall clock (Moscow), as 1C stamps documents."""
    return datetime.now(MSK).replace(tzinfo=None, microsecond=0)


@pytest.fixture
def onec() -> Iterator[tuple[OneCSimulator, SimulatorServer]]:
    sim = OneCSimulator(clock=msk_wall)
    server = sim.serve()
    yield sim, server
    server.stop()


@pytest.fixture
def b24() -> Iterator[tuple[Bitrix24Simulator, SimulatorServer]]:
    sim = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50)
    for name in ("Иван", "Олег"):
        sim.add_user(name)
    server = sim.serve()
    yield sim, server
    server.stop()
    sim.close()


def onec_url(onec: tuple[OneCSimulator, SimulatorServer]) -> str:
    sim, server = onec
    return f"{server.base_url}{sim.base_path}/"


@pytest.fixture
def runtime(onec, b24, db_url, monkeypatch) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    sim, server = b24
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    monkeypatch.setenv("ONEC_USER", LOGIN)  # Cyrillic: the client must send UTF-8 Basic credentials
    monkeypatch.setenv("ONEC_PASSWORD", PASSWORD)
    cfg = load_config_text(
        CONFIG.format(db_url=db_url, b24_url=server.base_url + sim.webhook_base, onec_url=onec_url(onec))
    )
    rt = Runtime(cfg)
    yield rt
    rt.stop()


def comments_for(sim: Bitrix24Simulator, deal_id: str) -> list[str]:
    return [c["COMMENT"] for c in sim.comments.values() if c["ENTITY_ID"] == deal_id]


def _count(store: Store, model: Any) -> int:
    with store.sessions() as s:
        return int(s.scalar(select(func.count(model.id))) or 0)


def _posted(sim: OneCSimulator, entity_set: str, fields: dict[str, Any]) -> dict[str, Any]:
    doc = sim.insert(entity_set, fields)
    return sim.set_posted(entity_set, doc["Ref_Key"])


def test_invoice_partial_and_full_payment_reach_the_deal(onec, b24, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    sim1c, _ = onec
    sim24, _ = b24
    deal_id = sim24.add_deal(
        {"TITLE": "Кружки с логотипом", "CATEGORY_ID": "0", "STAGE_ID": "NEW", "ASSIGNED_BY_ID": "2"}
    )
    other = sim24.add_deal({"TITLE": "Другая сделка", "ASSIGNED_BY_ID": "2"})
    runtime.start()
    party = sim1c.insert(PARTIES, {"Description": "Ромашка ООО", "ИНН": "7701234567", "КПП": "770101001"})
    invoice = _posted(
        sim1c,
        INVOICES,
        {
            "Контрагент_Key": party["Ref_Key"],
            "СуммаДокумента": 120000,
            "Комментарий": f"Сделка #{deal_id}, макет согласован",
        },
    )
    draft = sim1c.insert(
        INVOICES, {"Контрагент_Key": party["Ref_Key"], "СуммаДокумента": 5, "Комментарий": f"сделка {other}"}
    )  # never posted: counts for nothing

    assert runtime.poll("onec") == 1
    assert wait_for(lambda: len(comments_for(sim24, deal_id)) == 1)

    _posted(
        sim1c,
        PAYMENTS,
        {
            "Контрагент_Key": party["Ref_Key"],
            "СуммаДокумента": 60000,
            "НазначениеПлатежа": "Оплата по счету, часть 1",
            "РасшифровкаПлатежа": [{"ОснованиеПлатежа": invoice["Ref_Key"], "Сумма": 60000}],
        },
    )
    assert runtime.poll("onec") == 1
    assert wait_for(lambda: len(comments_for(sim24, deal_id)) == 2)
    assert sim24.tasks_for_deal(deal_id) == []  # a part payment is no hand-off

    _posted(
        sim1c,
        PAYMENTS,
        {
            "Контрагент_Key": party["Ref_Key"],
            "СуммаДокумента": 60000,
            "РасшифровкаПлатежа": [{"ОснованиеПлатежа": invoice["Ref_Key"], "Сумма": 60000}],
        },
    )
    assert runtime.poll("onec") == 1
    ok = wait_for(lambda: len(comments_for(sim24, deal_id)) == 3 and len(sim24.tasks_for_deal(deal_id)) == 1)
    assert ok, _debug(runtime)
    assert runtime.poll("onec") == 0  # the rolling window re-reads; nothing is filed twice

    texts = comments_for(sim24, deal_id)
    assert texts[0].startswith(f"1С invoice № {invoice['Number']}: 120000.0 RUB")
    assert all(t.startswith("1С payment") for t in texts[1:])
    task = sim24.tasks_for_deal(deal_id)[0]
    assert task["TITLE"] == f"Счёт {invoice['Number']} оплачен: передать заказ (Кружки с логотипом)"
    assert task["RESPONSIBLE_ID"] == "2"
    assert comments_for(sim24, other) == [] and draft["Posted"] is False

    with runtime.store.sessions() as s:
        events = list(s.scalars(select(InboxRow).where(InboxRow.kind == "payment.received").order_by(InboxRow.id)))
    data = [e.payload["data"] for e in events]
    assert [(d["paid_total"], d["partial"], d["paid_in_full"], d["first_payment"]) for d in data] == [
        (60000.0, True, False, True),
        (120000.0, False, True, False),
    ]
    assert all(e.crm == "b24" and e.deal_id == deal_id and e.source == "document" for e in events)
    assert data[0]["counterparty"] == "Ромашка ООО" and data[0]["inn"] == "7701234567"
    assert data[0]["invoice_amount"] == 120000.0 and data[0]["linked_by"] == "comment"
    assert events[0].occurred_at.replace(tzinfo=UTC) <= datetime.now(UTC)
    wait_for(lambda: _outbox_states(runtime) == {"done"})
    assert _outbox_states(runtime) == {"done"}


def _debug(rt: Runtime) -> str:
    with rt.store.sessions() as s:
        inbox = [
            (r.kind, r.status, r.last_error, r.payload["data"].get("paid_in_full")) for r in s.scalars(select(InboxRow))
        ]
        outbox = [(r.command, r.status, r.last_error) for r in s.scalars(select(OutboxRow))]
        audit = [(r.action, r.rule, r.message) for r in s.scalars(select(AuditRow))]
    return f"inbox={inbox} outbox={outbox} audit={audit}"


def _outbox_states(rt: Runtime) -> set[str]:
    with rt.store.sessions() as s:
        return set(s.scalars(select(OutboxRow.status)))


def test_unlinkable_documents_are_audited_and_nothing_is_written(onec, b24, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    sim1c, _ = onec
    sim24, _ = b24
    # Two deals of one client carry its INN: an invoice of that client is ambiguous by INN.
    deals = [sim24.add_deal({"TITLE": f"Сделка {i}", "UF_CRM_INN": "7809876543"}) for i in range(2)]
    runtime.start()
    twice = sim1c.insert(PARTIES, {"Description": "Лютик", "ИНН": "7809876543"})
    nobody = sim1c.insert(PARTIES, {"Description": "Незнакомец", "ИНН": "5001112223"})
    ambiguous = _posted(sim1c, INVOICES, {"Контрагент_Key": twice["Ref_Key"], "СуммаДокумента": 700})
    unknown = _posted(sim1c, INVOICES, {"Контрагент_Key": nobody["Ref_Key"], "СуммаДокумента": 800})
    missing = _posted(
        sim1c, INVOICES, {"Контрагент_Key": nobody["Ref_Key"], "СуммаДокумента": 900, "Комментарий": "сделка 999"}
    )  # a deal that does not exist

    assert runtime.poll("onec") == 0
    assert runtime.poll("onec") == 0  # re-read: the audit line is not repeated
    with runtime.store.sessions() as s:
        lines = list(s.scalars(select(AuditRow).where(AuditRow.action == "unlinked").order_by(AuditRow.id)))
    by_number = {line.message.split(":")[0]: line for line in lines}
    assert len(lines) == 3
    assert "ambiguous by inn:UF_CRM_INN" in by_number[f"invoice {ambiguous['Number']}"].message
    assert all(d in by_number[f"invoice {ambiguous['Number']}"].message for d in deals)
    assert "no deal found" in by_number[f"invoice {unknown['Number']}"].message
    assert "deal 999" in by_number[f"invoice {missing['Number']}"].message
    assert all(line.crm == "onec" and line.deal_id is None and line.trigger == "poll" for line in lines)
    assert _count(runtime.store, InboxRow) == 0 and _count(runtime.store, OutboxRow) == 0
    assert sim24.comments == {} and sim24.tasks == {}
    state = gather(runtime.store, runtime.config, datetime.now(UTC))  # what `connector status` lists
    assert len(state.unlinked) == 3 and state.crms[1].unlinked == 3 and not state.healthy

    # Linking is retried: once a manager fills the deal field, the next poll files the invoice.
    sim24.update_deal(deals[1], {"UF_CRM_1C_REF": unknown["Ref_Key"]})
    assert runtime.poll("onec") == 1
    assert wait_for(lambda: len(comments_for(sim24, deals[1])) == 1)
    state = gather(runtime.store, runtime.config, datetime.now(UTC))
    assert sorted(u["what"].split(":")[0] for u in state.unlinked) == sorted(
        [f"invoice {ambiguous['Number']}", f"invoice {missing['Number']}"]
    )  # the linked one is off the list


# --- the poller driven directly -------------------------------------------------------------------


class Boom(Exception):
    """Stands for the process dying in the middle of a run."""


@pytest.fixture
def direct(onec, b24, db_url) -> Iterator[tuple[Store, OneCAdapter, Bitrix24Adapter]]:  # type: ignore[no-untyped-def]
    sim24, server24 = b24
    store = Store(db_url)
    # Pages of two: a few documents span several pages.
    settings = OneCSettings(
        base_url=onec_url(onec), username=LOGIN, password=PASSWORD, deal_crm="b24", backoff_initial=0.05, page_size=2
    )
    src = OneCAdapter("onec", settings)
    deal_crm = Bitrix24Adapter(
        "b24",
        Bitrix24Settings(
            webhook_url=server24.base_url + sim24.webhook_base, rate=50, burst=50, application_token=TOKEN
        ),
    )
    yield store, src, deal_crm
    src.close()
    deal_crm.close()
    store.close()


def _dedup_keys(store: Store) -> list[str]:
    with store.sessions() as s:
        return list(s.scalars(select(InboxRow.dedup_key).order_by(InboxRow.id)))


@pytest.mark.parametrize("crash", ["between_pages", "mid_page", "after_event"])
@pytest.mark.parametrize("same_date", [True, False])
def test_restart_in_the_middle_neither_loses_nor_repeats(
    onec,
    b24,
    direct,
    monkeypatch,  # type: ignore[no-untyped-def]
    crash: str,
    same_date: bool,
) -> None:
    sim1c, _ = onec
    sim24, _ = b24
    store, src, deal_crm = direct
    deal_id = sim24.add_deal({"TITLE": "Много счетов"})
    start = msk_wall() - timedelta(hours=1)
    refs = []
    for i in range(5):  # five invoices, pages of two; same_date: all stamped within one second
        date = start if same_date else start + timedelta(minutes=i)
        refs.append(
            _posted(sim1c, INVOICES, {"Date": date, "СуммаДокумента": 100 + i, "Комментарий": f"deal {deal_id}"})[
                "Ref_Key"
            ]
        )
    now = datetime.now(UTC)
    if crash == "between_pages":
        real_page = src.documents_page
        calls: list[int] = []

        def page(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 2:
                raise Boom()
            return real_page(*args, **kwargs)

        monkeypatch.setattr(src, "documents_page", page)
    elif crash == "after_event":  # the event is stored, the memory of it is not
        real_remember = store.cursors.remember
        remembered: list[int] = []

        def remember(crm: str, stream: str, memory: Any, at: datetime) -> None:
            if len(remembered) == 2:
                raise Boom()
            remembered.append(1)
            real_remember(crm, stream, memory, at)

        monkeypatch.setattr(store.cursors, "remember", remember)
    else:
        real_add = store.inbox.add
        added: list[int] = []

        def add(*args: Any, **kwargs: Any) -> bool:
            if len(added) == 3:  # dies on the second page's second document
                raise Boom()
            added.append(1)
            return real_add(*args, **kwargs)

        monkeypatch.setattr(store.inbox, "add", add)
    with pytest.raises(Boom):
        poll_documents(store, src, deal_crm, now=now)
    filed = _dedup_keys(store)
    assert len(filed) == (2 if crash == "between_pages" else 3)  # after_event: the third is in the inbox
    monkeypatch.undo()
    assert poll_documents(store, src, deal_crm, now=now + timedelta(minutes=1)) == 5 - len(filed)
    keys = _dedup_keys(store)
    assert len(keys) == len(set(keys)) == 5
    assert {k.split(":")[3] for k in keys} == set(refs)
    assert poll_documents(store, src, deal_crm, now=now + timedelta(minutes=2)) == 0


def test_order_status_flow_and_drafts(onec, b24, direct) -> None:  # type: ignore[no-untyped-def]
    sim1c, _ = onec
    sim24, _ = b24
    store, src, deal_crm = direct
    deal_id = sim24.add_deal({"TITLE": "Заказ кирпича"})
    now = datetime.now(UTC)

    def poll(minutes: int) -> int:
        return poll_documents(store, src, deal_crm, now=now + timedelta(minutes=minutes))

    order = sim1c.insert(ORDERS, {"Статус": "КОбеспечению", "СуммаДокумента": 5000, "Комментарий": f"сделка {deal_id}"})
    assert poll(0) == 0  # a draft is nothing yet
    sim1c.set_posted(ORDERS, order["Ref_Key"])
    assert poll(1) == 1
    sim1c.update(ORDERS, order["Ref_Key"], {"Комментарий": f"сделка {deal_id}, звонил клиент"})
    assert poll(2) == 0  # edited, status unchanged: nothing new
    sim1c.update(ORDERS, order["Ref_Key"], {"Статус": "КОтгрузке"})
    sim1c.insert("InformationRegister_СостоянияЗаказовКлиентов", {"Заказ": order["Ref_Key"], "ПроцентОплаты": 100})
    assert poll(3) == 1
    sim1c.update(ORDERS, order["Ref_Key"], {"DeletionMark": True})  # marking unposts it: ignored
    assert poll(4) == 0
    with store.sessions() as s:
        rows = list(s.scalars(select(InboxRow).order_by(InboxRow.id)))
    assert [r.kind for r in rows] == ["order.status_changed"] * 2
    first, second = (r.payload["data"] for r in rows)
    assert (first["status"], first["previous_status"], first["shipment_requested"], first["paid"]) == (
        "КОбеспечению",
        None,
        False,
        False,
    )
    assert (second["status"], second["previous_status"], second["shipment_requested"], second["paid"]) == (
        "КОтгрузке",
        "КОбеспечению",
        True,
        True,
    )
    assert rows[0].deal_id == rows[1].deal_id == deal_id and rows[0].crm == "b24"


def test_late_posted_and_back_dated_documents_inside_the_recheck_window(onec, b24, direct) -> None:  # type: ignore[no-untyped-def]
    """1C's Date is not a modification time: a draft posted days later keeps its old date."""
    sim1c, _ = onec
    sim24, _ = b24
    store, src, deal_crm = direct
    deal_id = sim24.add_deal({"TITLE": "Поздняя выписка"})
    now = datetime.now(UTC)
    assert poll_documents(store, src, deal_crm, now=now) == 0  # cursor: now
    two_days_ago = msk_wall() - timedelta(days=2)
    draft = sim1c.insert(INVOICES, {"Date": two_days_ago, "СуммаДокумента": 10, "Комментарий": f"deal {deal_id}"})
    assert poll_documents(store, src, deal_crm, now=now + timedelta(minutes=1)) == 0
    sim1c.set_posted(INVOICES, draft["Ref_Key"])  # posted today, dated two days ago
    _posted(
        sim1c,
        INVOICES,
        {"Date": msk_wall() - timedelta(days=1), "СуммаДокумента": 20, "Комментарий": f"deal {deal_id}"},
    )  # a bank statement loaded a day late
    assert poll_documents(store, src, deal_crm, now=now + timedelta(minutes=2)) == 2
    # Outside the window (default recheck: 3 days) nothing is re-read.
    old = _posted(sim1c, INVOICES, {"Date": msk_wall() - timedelta(days=5), "Комментарий": f"deal {deal_id}"})
    assert poll_documents(store, src, deal_crm, now=now + timedelta(minutes=3)) == 0
    assert old["Posted"] is True


def test_a_set_the_base_does_not_publish_does_not_stop_the_others(b24, db_url) -> None:  # type: ignore[no-untyped-def]
    sim24, server24 = b24
    sim1c = OneCSimulator(clock=msk_wall, entity_sets=[PARTIES, INVOICES, PAYMENTS])  # no cash desk, no orders
    server = sim1c.serve()
    try:
        store = Store(db_url)
        src = OneCAdapter(
            "onec",
            OneCSettings(
                base_url=f"{server.base_url}{sim1c.base_path}/", username=LOGIN, password=PASSWORD, deal_crm="b24"
            ),
        )
        deal_crm = Bitrix24Adapter(
            "b24",
            Bitrix24Settings(
                webhook_url=server24.base_url + sim24.webhook_base, rate=50, burst=50, application_token=TOKEN
            ),
        )
        deal_id = sim24.add_deal({"TITLE": "Без кассы"})
        invoice = _posted(sim1c, INVOICES, {"СуммаДокумента": 100, "Комментарий": f"сделка {deal_id}"})
        _posted(
            sim1c,
            PAYMENTS,
            {"СуммаДокумента": 100, "РасшифровкаПлатежа": [{"ОснованиеПлатежа": invoice["Ref_Key"], "Сумма": 100}]},
        )
        assert poll_documents(store, src, deal_crm, now=datetime.now(UTC)) == 2
        with store.sessions() as s:
            paid = [
                r.payload["data"]["paid_in_full"] for r in s.scalars(select(InboxRow)) if r.kind == "payment.received"
            ]
        assert paid == [True]
        store.close()
    finally:
        server.stop()


def test_demo_scenario_runs_and_reports_one_hand_off() -> None:
    import io

    from rich.console import Console

    from connector.demo.onec_scenario import run_onec_scenario

    out = io.StringIO()
    assert run_onec_scenario(Console(file=out, width=200), timeout=30) is True
    text = out.getvalue()
    assert "hand-off tasks: 1 (expected 1) -> OK" in text and "1С: счёт №" in text
    assert "demo-1c-password" not in text  # the password never reaches the output


def test_deal_without_a_counterparty_creates_one_in_1c_once(onec, b24, db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sim1c, _ = onec
    sim24, server24 = b24
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    monkeypatch.setenv("ONEC_USER", LOGIN)
    monkeypatch.setenv("ONEC_PASSWORD", PASSWORD)
    rule = """
  - name: counterparty-from-card
    crm: b24
    on: [deal.created]
    when: {{field: UF_CRM_1C_REF, empty: true}}
    do:
      - create_counterparty:
          in: onec
          name: "{{{{ deal.fields.UF_CRM_COMPANY }}}}"
          inn: "{{{{ deal.fields.UF_CRM_INN }}}}"
          phone: "{{{{ deal.fields.UF_CRM_PHONE }}}}"
"""
    cfg = load_config_text(
        (CONFIG + rule).format(db_url=db_url, b24_url=server24.base_url + sim24.webhook_base, onec_url=onec_url(onec))
    )
    rt = Runtime(cfg)
    try:
        rt.start()
        sim24.handler_url = f"{rt.intake_url}/hooks/bitrix24/b24"
        sim24.faults.duplicate_webhooks = 3  # the same event three times: still one counterparty
        sim24.add_deal(
            {
                "TITLE": "Кружки",
                "UF_CRM_COMPANY": "Лютик ООО",
                "UF_CRM_INN": "7809876543",
                "UF_CRM_PHONE": "+7 812 000-00-00",
            }
        )
        sim24.add_deal({"TITLE": "Уже в 1С", "UF_CRM_COMPANY": "Ромашка", "UF_CRM_1C_REF": "known-ref"})

        def created() -> list[dict[str, Any]]:
            return [p for p in sim1c.data[PARTIES].values() if p.get("ИНН") == "7809876543"]

        assert wait_for(lambda: len(created()) == 1)
        assert wait_for(lambda: _count(rt.store, OutboxRow) >= 1)
        time.sleep(0.5)  # a second write would show now
        assert len(created()) == 1 and created()[0]["Description"] == "Лютик ООО"
        assert not [p for p in sim1c.data[PARTIES].values() if p.get("Description") == "Ромашка"]
        with rt.store.sessions() as s:
            rows = list(s.scalars(select(OutboxRow).where(OutboxRow.command == "create_counterparty")))
        assert [(r.crm, r.status) for r in rows] == [("onec", "done")]
    finally:
        rt.stop()


def test_create_counterparty_must_name_a_1c_base(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from connector.config import ConfigError

    monkeypatch.setenv("B24_TOKEN", TOKEN)
    monkeypatch.setenv("ONEC_USER", LOGIN)
    monkeypatch.setenv("ONEC_PASSWORD", PASSWORD)
    rule = """
  - name: wrong-target
    crm: b24
    on: [deal.created]
    do: [{{create_counterparty: {{in: b24, name: "x"}}}}]
"""
    with pytest.raises(ConfigError, match="cannot carry out create_counterparty"):
        load_config_text(
            (CONFIG + rule).format(
                db_url="sqlite://",
                b24_url="https://p.bitrix24.ru/rest/1/c/",
                onec_url="http://1c.local/base/odata/standard.odata/",
            )
        )
