"""One pipeline: the same recorded history through the worker (on the CRM's simulator -- Bitrix24
or Pipedrive, as the example's CRM is --, with the dispatcher writing to it and the deadline scan
and scheduled runs at their moments) and through the dry-run gives the same decisions, under the
same keys, and the same CRM state. Every example in examples/ has its script."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import func, select

from adapters.bitrix24.mapping import deal_from_b24
from adapters.contracts import DealSource
from adapters.pipedrive.mapping import deal_from_pd, flatten
from connector.config import Config, load_config_text
from connector.dryrun.replay import HistoryItem, Replay
from connector.runtime import Runtime, build_calendar
from connector.storage.models import AuditRow, InboxRow, OutboxRow, TimerRow
from domain import Deal, EventKind, EventSource
from domain.commands import command_from_payload
from domain.events import Event
from domain.keys import replay_key
from domain.statuses import TIMER_RUNNING, OutboxStatus
from jobs.timers import fire_due_timers
from simulators.bitrix24 import Bitrix24Simulator
from simulators.pipedrive import PipedriveSimulator
from simulators.telegram import TelegramSimulator
from tests.helpers import Clock

pytestmark = pytest.mark.slow

MSK = ZoneInfo("Europe/Moscow")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOKEN = "pipeline-token"
TG_TOKEN, TG_CHAT, TG_CARE = "7012345678:AAH-pipeline-token-0123456789abc", "-1001234567890", "-1001234567891"
WRITE_COMMANDS = ("update_deal", "close_deal")


@dataclass(frozen=True)
class Edit:
    """What a person does in the CRM at a moment: create the deal ``ref`` or change its fields."""

    at: datetime
    ref: str
    fields: dict[str, Any] = field(default_factory=dict)
    document: EventKind | None = None  # or: a document of the accounting system for the deal
    data: dict[str, Any] = field(default_factory=dict)


def _at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=MSK)


ISP = [
    Edit(
        _at(23, 10),
        "a",
        {
            "TITLE": "Заявка А",
            "CATEGORY_ID": "1",
            "STAGE_ID": "C1:NEW",
            "ASSIGNED_BY_ID": "1",
            "UF_CRM_ADDRESS": "Казань, Советский район, ул. Мира, 1",
            "UF_CRM_SOURCE": "agent",
        },
    ),
    Edit(
        _at(23, 10, 30),
        "b",
        {
            "TITLE": "Заявка Б",
            "CATEGORY_ID": "1",
            "STAGE_ID": "C1:NEW",
            "ASSIGNED_BY_ID": "1",
            "UF_CRM_ADDRESS": "Казань, ул. Гвардейская, 8, 420111",
        },
    ),
    Edit(_at(23, 15), "a", {"STAGE_ID": "C1:ROUTE"}),
    Edit(_at(24, 11), "a", {"STAGE_ID": "C1:ENGINEERS"}),
    Edit(_at(24, 12), "b", {"STAGE_ID": "C1:ROUTE"}),
    Edit(_at(25, 9, 30), "a", {"STAGE_ID": "C1:VISIT"}),
    Edit(_at(25, 16), "a", {"UF_CRM_VISIT_RESULT": "подключен", "STAGE_ID": "C1:WON"}),
    Edit(
        _at(26, 10),
        "c",
        {
            "TITLE": "Заявка В",
            "CATEGORY_ID": "1",
            "STAGE_ID": "C1:NEW",
            "ASSIGNED_BY_ID": "1",
            "UF_CRM_ADDRESS": "Москва, ул. Тверская, 1",
        },
    ),
    Edit(_at(27, 12), "c", {"STAGE_ID": "C1:LOSE", "UF_CRM_LOST_REASON": "нет технической возможности"}),
]

B2B = [
    Edit(
        _at(23, 10), "a", {"TITLE": "Кружки с логотипом", "CATEGORY_ID": "0", "STAGE_ID": "NEW", "ASSIGNED_BY_ID": "3"}
    ),
    Edit(_at(23, 11), "b", {"TITLE": "Ручки 500 шт", "CATEGORY_ID": "0", "STAGE_ID": "NEW", "ASSIGNED_BY_ID": "5"}),
    Edit(_at(23, 12), "a", {"UF_CRM_FIRST_CALL": "Y"}),
    Edit(_at(24, 10), "a", {"STAGE_ID": "PREPARATION"}),
    Edit(_at(25, 15), "a", {"STAGE_ID": "WON", "OPPORTUNITY": "120000"}),
    Edit(_at(26, 17), "b", {"STAGE_ID": "LOSE"}),
]

MONEY = [
    Edit(_at(23, 10), "a", {"TITLE": "Поставка бумаги", "CATEGORY_ID": "0", "STAGE_ID": "NEW", "ASSIGNED_BY_ID": "3"}),
    Edit(
        _at(23, 12),
        "a",
        document=EventKind.INVOICE_ISSUED,
        data={"number": "СЧ-101", "amount": 50000.0, "currency": "RUB"},
    ),
    Edit(
        _at(24, 15),
        "a",
        document=EventKind.PAYMENT_RECEIVED,
        data={
            "number": "ПП-7",
            "amount": 20000.0,
            "currency": "RUB",
            "invoice_number": "СЧ-101",
            "invoice_amount": 50000.0,
            "paid_total": 20000.0,
            "paid_in_full": False,
            "first_payment": True,
        },
    ),
    Edit(
        _at(25, 11),
        "a",
        document=EventKind.ORDER_STATUS_CHANGED,
        data={"number": "ЗК-3", "status": "К отгрузке", "paid": False, "shipment_requested": True},
    ),
    Edit(_at(25, 16), "b", {"TITLE": "Картриджи", "CATEGORY_ID": "0", "STAGE_ID": "NEW", "ASSIGNED_BY_ID": "4"}),
    Edit(
        _at(26, 10),
        "b",
        document=EventKind.INVOICE_ISSUED,
        data={"number": "СЧ-102", "amount": 9000.0, "currency": "RUB"},
    ),
    Edit(
        _at(26, 14),
        "a",
        document=EventKind.PAYMENT_RECEIVED,
        data={
            "number": "ПП-8",
            "amount": 30000.0,
            "currency": "RUB",
            "invoice_number": "СЧ-101",
            "invoice_amount": 50000.0,
            "paid_total": 50000.0,
            "paid_in_full": True,
            "first_payment": False,
        },
    ),
]

# Pipedrive's custom deal fields of the example: position, phone, e-mail, delivery city, care
# manager, the care team's note of a new sale.
PD_KEYS = {
    name: "a" * 36 + f"000{n}" for n, name in enumerate(("position", "phone", "email", "city", "care", "sale"), 1)
}
PD_CARD = {PD_KEYS[k]: v for k, v in (("position", "закупщик"), ("phone", "+380 44 000 0000"), ("email", "p@x.ua"))}

B2B_PIPEDRIVE = [
    # A complete card: the proposal deadline and a call for the next working day.
    Edit(
        _at(23, 10),
        "a",
        {
            "title": "Кружки с логотипом",
            "stage_id": 1,
            "owner_id": 10031,
            "value": 50000,
            "currency": "UAH",
            "org_id": 1,
            "person_id": 1,
            "custom_fields": {**PD_CARD, PD_KEYS["city"]: "Киев"},
        },
    ),
    # An incomplete card: asked to fill it; its proposal deadline is breached the next day.
    Edit(_at(23, 11), "b", {"title": "Ручки 500 шт", "stage_id": 1, "owner_id": 10032}),
    Edit(_at(24, 12), "a", {"stage_id": 3}),  # the demo, with no payment date yet
    Edit(_at(25, 10), "b", {"status": "lost", "lost_reason": "дорого"}),  # too short: reopened
    Edit(_at(25, 15), "a", {"custom_fields": {PD_KEYS["sale"]: "Ещё 200 кружек к Новому году"}}),
    Edit(_at(26, 12), "a", {"status": "won"}),  # paid: handed to customer care
]

SALES_PLANNING = [
    Edit(_at(23, 10), "a", {"TITLE": "Станки", "CATEGORY_ID": "2", "STAGE_ID": "C2:COLD", "ASSIGNED_BY_ID": "11"}),
    Edit(_at(23, 11), "b", {"TITLE": "Фрезы", "CATEGORY_ID": "2", "STAGE_ID": "C2:COLD", "ASSIGNED_BY_ID": "21"}),
    Edit(_at(23, 12), "a", {"STAGE_ID": "C2:LPR"}),  # without the decision maker's contacts: returned
    Edit(_at(23, 15), "a", {"UF_CRM_LPR_NAME": "Петров И. И.", "UF_CRM_LPR_PHONE": "+7 900 1", "STAGE_ID": "C2:LPR"}),
    Edit(_at(24, 10), "a", {"STAGE_ID": "C2:MEETING"}),
    Edit(_at(24, 16), "a", {"STAGE_ID": "C2:PLAN"}),  # without the meeting's protocol: returned
    Edit(_at(25, 11), "a", {"UF_CRM_PROTOCOL": "Y", "STAGE_ID": "C2:WON"}),  # without the contract: returned
    Edit(_at(26, 17), "b", {"STAGE_ID": "C2:LOSE"}),
]

SCRIPTS = {
    "isp-field-service.yaml": ISP,
    "b2b-sales.yaml": B2B,
    "money-in-1c.yaml": MONEY,
    "b2b-sales-pipedrive.yaml": B2B_PIPEDRIVE,
    "sales-planning.yaml": SALES_PLANNING,
}
END = _at(30, 20)


def _config_text(example: str, db: Path) -> str:
    text = (EXAMPLES / example).read_text(encoding="utf-8")
    text = re.sub(r"(?m)^storage:.*$", f'storage: {{url: "sqlite:///{db}"}}', text)
    if "type: pipedrive" in text:
        # The simulator numbers its users from 10001: the example's 20, 21, 22, 31, 32 are made real.
        text = re.sub(r"\b(20|21|22|31|32)\b(?=[,}\]])", r"100\1", text)
    return text


@dataclass
class World:
    """One CRM's simulator, as the script's person and the test's judge see it."""

    crm: str
    sim: Bitrix24Simulator | PipedriveSimulator
    create: Callable[[dict[str, Any]], str]
    update: Callable[[str, dict[str, Any]], None]
    recorded: Callable[[Deal, dict[str, Any]], Deal]  # the deal as history shows it
    kept: Callable[[str], tuple[str, str, str]]  # (responsible, stage, outcome) in the CRM
    tasks: Callable[[str], list[tuple[str, str]]]  # (title, responsible) of the deal's tasks


def _bitrix24(sim: Bitrix24Simulator, location: dict[str, str]) -> World:
    def recorded(now_in_crm: Deal, person: dict[str, Any]) -> Deal:
        raw = {**now_in_crm.fields, **{k: str(v) for k, v in person.items()}}
        return deal_from_b24("b24", {**raw, "DATE_MODIFY": now_in_crm.fields.get("DATE_MODIFY")}, location)

    def kept(deal_id: str) -> tuple[str, str, str]:
        deal = sim.deals[deal_id]
        return str(deal["ASSIGNED_BY_ID"]), str(deal["STAGE_ID"]), ""

    return World(
        "b24",
        sim,
        lambda fields: sim.add_deal(dict(fields)),
        lambda deal_id, fields: sim.update_deal(deal_id, dict(fields)),
        recorded,
        kept,
        lambda deal_id: sorted((t["TITLE"], str(t["RESPONSIBLE_ID"])) for t in sim.tasks_for_deal(deal_id)),
    )


def _pipedrive(sim: PipedriveSimulator, location: dict[str, str]) -> World:
    def recorded(now_in_crm: Deal, person: dict[str, Any]) -> Deal:
        return deal_from_pd("pd", {**now_in_crm.fields, **flatten(person)}, location)

    def kept(deal_id: str) -> tuple[str, str, str]:
        deal = sim.deals[int(deal_id)]
        return str(deal["owner_id"]), str(deal["stage_id"]), str(deal["status"])

    return World(
        "pd",
        sim,
        lambda fields: str(sim.add_deal(dict(fields))),
        lambda deal_id, fields: sim.update_deal(int(deal_id), dict(fields)),
        recorded,
        kept,
        lambda deal_id: sorted((a["subject"], str(a["owner_id"])) for a in sim.activities_for_deal(int(deal_id))),
    )


@pytest.fixture
def world(request, monkeypatch) -> Iterator[tuple[Callable[[Config], World], Clock, TelegramSimulator]]:  # type: ignore[no-untyped-def]
    """The example's CRM simulator, serving; its world is made once the config is read."""
    clock = Clock(_at(23, 9))
    pipedrive = "type: pipedrive" in (EXAMPLES / request.param).read_text(encoding="utf-8")
    sim: Bitrix24Simulator | PipedriveSimulator
    if pipedrive:
        sim = PipedriveSimulator(api_token=TOKEN, burst_limit=1000, clock=lambda: clock.now.astimezone(UTC))
        for n in range(31):  # ids 10002..10032
            sim.add_user(f"Сотрудник {n}")
        for key in PD_KEYS.values():
            sim.add_deal_field(key[-4:], "varchar", key=key)
        server = sim.serve()
        for name, value in (("PD_BASE_URL", server.base_url), ("PD_API_TOKEN", TOKEN)):
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("PD_WEBHOOK_USER", "hooks")
        monkeypatch.setenv("PD_WEBHOOK_PASSWORD", "hook-password")
    else:
        sim = Bitrix24Simulator(application_token=TOKEN, rate=1000, burst=1000, clock=lambda: clock.now.astimezone(MSK))
        for n in range(40):
            sim.add_user(f"Сотрудник {n}")
        server = sim.serve()
        monkeypatch.setenv("B24_WEBHOOK_URL", server.base_url + sim.webhook_base)
        monkeypatch.setenv("B24_APP_TOKEN", TOKEN)
        for name, value in (("ONEC_URL", "http://127.0.0.1:9/base/odata/standard.odata"), ("ONEC_USER", "u")):
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("ONEC_PASSWORD", "p")

    chat = TelegramSimulator(TG_TOKEN, chats=(TG_CHAT, TG_CARE), chat_burst=1000)
    chat_server = chat.serve()
    # The example's Telegram chats, on the Telegram simulator.
    monkeypatch.setenv("TG_API_URL", chat_server.base_url)
    monkeypatch.setenv("TG_BOT_TOKEN", TG_TOKEN)
    monkeypatch.setenv("TG_SHARED_CHAT_ID", TG_CHAT)
    monkeypatch.setenv("TG_CARE_CHAT_ID", TG_CARE)

    def made(config: Config) -> World:
        crm = "pd" if pipedrive else "b24"
        location = dict(getattr(config.crms[crm], "location_fields", {}) or {})
        return _pipedrive(sim, location) if isinstance(sim, PipedriveSimulator) else _bitrix24(sim, location)

    yield made, clock, chat
    chat_server.stop()
    chat.close()
    server.stop()
    sim.close()


class Live:
    """Drives the worker, the dispatcher, the deadline scan and the scheduled rules by hand at
    the script's moments; the CRM's webhooks for our own writes are stored as it would send them."""

    def __init__(self, config: Config, world: World, clock: Clock) -> None:
        self.rt = Runtime(config, clock=clock)
        self.world, self.clock, self.config = world, clock, config
        zone = build_calendar(config).tz
        self.schedules = [
            (
                r,
                CronTrigger.from_crontab(
                    r.schedule, timezone=config.calendars.get(r.calendar).tz if config.calendars else zone
                ),
            )
            for r in config.rules
            if r.schedule and r.enabled
        ]
        self.next_runs = {r.name: t.get_next_fire_time(None, clock.now) for r, t in self.schedules}
        self.echoed: set[int] = set()

    def drain(self) -> None:
        for _ in range(50):
            worked = self.rt.worker.tick() + self.rt.dispatcher.tick() + self._echo_writes()
            if not worked and not self._pending():
                return
        raise AssertionError("the live run did not settle")

    def _pending(self) -> int:
        with self.rt.store.sessions() as s:
            new = s.scalar(select(func.count(InboxRow.id)).where(InboxRow.status == "new")) or 0
            due = s.scalar(select(func.count(OutboxRow.id)).where(OutboxRow.status != OutboxStatus.DONE)) or 0
            return int(new) + int(due)

    def _echo_writes(self) -> int:
        """One change notice per processed event whose writes changed its deal, keyed as the dry-run keys it."""
        notices = []
        with self.rt.store.sessions() as s:
            rows = s.scalars(
                select(OutboxRow).where(OutboxRow.status == OutboxStatus.DONE, OutboxRow.command.in_(WRITE_COMMANDS))
            ).all()
            for row in rows:
                if row.inbox_id is None or row.inbox_id in self.echoed:
                    continue
                self.echoed.add(row.inbox_id)
                cause = s.get(InboxRow, row.inbox_id)
                assert cause is not None
                found = re.search(r":write(\d+)$", cause.dedup_key)
                round_ = int(found.group(1)) + 1 if found else 0
                at = cause.occurred_at.astimezone(MSK)  # the moment as the history gives it
                key = replay_key(row.deal_id or "", at, EventKind.DEAL_UPDATED, f"write{round_}")
                notices.append(
                    Event(
                        self.world.crm,
                        EventKind.DEAL_UPDATED,
                        row.deal_id,
                        cause.occurred_at,
                        key,
                        source=EventSource.WEBHOOK,
                    )
                )
        return sum(int(self.rt.store.inbox.add(event, self.clock())) for event in notices)

    def advance(self, until: datetime) -> None:
        """Deadlines and scheduled runs due before ``until``, each at its own moment."""
        while True:
            with self.rt.store.sessions() as s:
                timer_at = s.scalar(select(func.min(TimerRow.fire_at)).where(TimerRow.status.in_(TIMER_RUNNING)))
            run = min(((t, name) for name, t in self.next_runs.items() if t is not None), default=None)
            moments = [m for m in (timer_at, run[0] if run else None) if m is not None and m <= until]
            if not moments:
                return
            self.clock.now = min(moments)
            if run is not None and run[0] == self.clock.now and (timer_at is None or run[0] < timer_at):
                self.rt.run_schedule(run[1])
                trigger = next(t for r, t in self.schedules if r.name == run[1])
                self.next_runs[run[1]] = trigger.get_next_fire_time(run[0], run[0])
            else:
                fire_due_timers(self.rt.store, self.clock.now)
            self.drain()


def _run_both(example: str, script: list[Edit], made: Callable[[Config], World], clock: Clock, tmp_path: Path):  # type: ignore[no-untyped-def]
    config = load_config_text(_config_text(example, tmp_path / "live.db"))
    world = made(config)
    live = Live(config, world, clock)
    adapter = live.rt.adapters[world.crm]
    assert isinstance(adapter, DealSource)
    ids: dict[str, str] = {}
    person: dict[str, dict[str, Any]] = {}  # each deal as people left it: history recorded without us
    history: list[HistoryItem] = []
    try:
        for edit in script:
            live.advance(edit.at)
            clock.now = edit.at
            if edit.document is not None:
                kind = edit.document
            elif edit.ref not in ids:
                ids[edit.ref] = world.create(edit.fields)
                person[edit.ref] = {}
                kind = EventKind.DEAL_CREATED
            else:
                world.update(ids[edit.ref], edit.fields)
                kind = EventKind.DEAL_UPDATED
            deal_id = ids[edit.ref]
            now_in_crm = adapter.get_deal(deal_id)
            assert now_in_crm is not None
            person[edit.ref] = _merged(person[edit.ref], edit.fields)
            history.append(HistoryItem(edit.at, kind, world.recorded(now_in_crm, person[edit.ref]), dict(edit.data)))
            key = replay_key(deal_id, edit.at, kind)
            source = EventSource.DOCUMENT if edit.document else EventSource.WEBHOOK
            event = Event(world.crm, kind, deal_id, edit.at, key, source=source, data=dict(edit.data))
            assert live.rt.store.inbox.add(event, edit.at)
            live.drain()
        live.advance(END)
        replay = Replay(config, build_calendar(config), adapters=live.rt.adapters)
        result = replay.run(history, until=END)
        return world, live, replay, result, ids
    finally:
        live.rt.stop()


def _merged(before: dict[str, Any], edit: dict[str, Any]) -> dict[str, Any]:
    """A person's edits so far (Pipedrive's custom fields are a mapping of their own)."""
    merged = {**before, **edit}
    if isinstance(before.get("custom_fields"), dict) and isinstance(edit.get("custom_fields"), dict):
        merged["custom_fields"] = {**before["custom_fields"], **edit["custom_fields"]}
    return merged


def _task(detail: str) -> tuple[str, str]:
    """(title, responsible) of a planned task, from its one-line description."""
    found = re.fullmatch(r"task '(.*)' for user (\S+) due .*", detail, re.S)
    assert found is not None, detail
    return found.group(1), found.group(2)


def _live_decisions(live: Live) -> set[tuple[str, str, str]]:
    with live.rt.store.sessions() as s:
        writes = {
            (r.idempotency_key, r.command, command_from_payload(r.command, r.payload).describe())
            for r in s.scalars(select(OutboxRow))
        }
        local = {
            (r.key, r.action, r.message)
            for r in s.scalars(select(AuditRow).where(AuditRow.key.is_not(None)))
            if not r.action.startswith("decided:") and r.key and not r.key.endswith("|done")  # the dispatcher's
        }
    return writes | local


@pytest.mark.parametrize("world", sorted(SCRIPTS), indirect=True)
def test_worker_and_dry_run_decide_alike(world, tmp_path: Path, request) -> None:  # type: ignore[no-untyped-def]
    example = request.node.callspec.params["world"]
    made, clock, chat = world
    crm, live, replay, result, ids = _run_both(example, SCRIPTS[example], made, clock, tmp_path)
    # The one documented difference: a dry-run cannot search the CRM for duplicates and says so
    # with a note, where the live run searched (and found none in these scripts).
    dry = {(o.key, o.action, o.detail) for o in result.outcomes if o.key and ":find_duplicates:note" not in o.key}
    decided = _live_decisions(live)
    assert not result.errors
    assert len(decided) > 10, "the script exercises the example's rules"
    only_live, only_dry = sorted(decided - dry), sorted(dry - decided)
    assert (only_live, only_dry) == ([], [])
    # The CRM as the live run left it, and the deals as the dry-run left them.
    for deal_id in ids.values():
        kept = replay._deals[(crm.crm, deal_id)]
        responsible, stage, outcome = crm.kept(deal_id)
        assert (responsible, stage) == (kept.responsible_id, kept.stage)
        if outcome:  # Pipedrive: won and lost are a status, beside the stage
            assert {"won": "won", "lost": "lost"}.get(outcome, "open") == kept.stage_semantic
        planned = sorted(
            _task(o.detail) for o in result.outcomes if o.key and o.action == "create_task" and o.deal_id == deal_id
        )
        assert crm.tasks(deal_id) == planned
    # What the chats were told: as many posts as the dry-run would send.
    posts = [o for o in result.outcomes if o.key and o.action == "send_message"]
    assert len(chat.texts(TG_CHAT)) + len(chat.texts(TG_CARE)) == len(posts)
