"""The regulations catalogue (examples/): each regulation fed a deal and a moment, table-driven.

Every case names the rule it proves, the deal and event it feeds, the moment, and the
actions that rule must take (and no others).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest

from adapters.contracts import FactSource
from connector.config import Config, load_config
from domain import (
    AddComment,
    CloseDeal,
    CreateCounterparty,
    CreateOrder,
    CreateTask,
    Deal,
    Event,
    EventKind,
    Location,
    SendMessage,
    UpdateDeal,
    User,
)
from domain.duplicates import Duplicate
from domain.facts import Fact
from rules.calendar import WorkCalendar
from rules.deadlines import DeadlineDef
from rules.engine import evaluate
from rules.model import CancelDeadline, RecordBreach, RuleContext, StartDeadline

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MSK = ZoneInfo("Europe/Moscow")
ENV = {
    "B24_WEBHOOK_URL": "https://portal.bitrix24.ru/rest/1/code/",
    "B24_APP_TOKEN": "app-token-123",
    "ONEC_URL": "http://1c.local/trade/odata/standard.odata/",
    "ONEC_USER": "Интеграция",
    "ONEC_PASSWORD": "onec-password",
    "PD_BASE_URL": "https://company.pipedrive.com",
    "PD_API_TOKEN": "pd-token-0123456789",
    "PD_WEBHOOK_USER": "hooks",
    "PD_WEBHOOK_PASSWORD": "hook-password",
    "TG_BOT_TOKEN": "7012345678:AAH-example-token-0123456789",
    "TG_SHARED_CHAT_ID": "-1001234567890",
    "TG_CARE_CHAT_ID": "-1001234567891",
}


def msk(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=MSK)


@dataclass
class Case:
    rule: str
    stage: str
    fields: dict[str, Any] = field(default_factory=dict)
    kind: EventKind = EventKind.DEAL_UPDATED
    triggers: tuple[str, ...] = ("deal.updated",)
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    now: datetime = msk(2026, 11, 25, 10, 0)
    created: datetime = msk(2026, 11, 25, 9, 30)
    updated: datetime | None = None  # the deal's last change; the moment itself when None
    outcome: str = "open"
    pipeline: str = "1"
    location: Location | None = None
    crm: str = "b24"
    responsible: str = "17"
    amount: Decimal | None = None
    duplicates: dict[str, list[Duplicate]] | None = None  # what the worker's search found, by key
    currency: str | None = None
    expect: list[tuple[Any, ...]] = field(default_factory=list)


def summarise(action: Any) -> tuple[Any, ...]:
    if isinstance(action, CreateTask):
        due = action.deadline.astimezone(MSK).strftime("%Y-%m-%d %H:%M") if action.deadline else None
        return ("task", action.title, action.responsible_id, due, action.priority)
    if isinstance(action, UpdateDeal):
        return ("update", action.values)
    if isinstance(action, AddComment):
        return ("comment", action.text)
    if isinstance(action, CloseDeal):
        return ("close", action.outcome, action.reason, action.reason_field)
    if isinstance(action, StartDeadline):
        return ("deadline", action.name, action.due_at.astimezone(MSK).strftime("%Y-%m-%d %H:%M"))
    if isinstance(action, CancelDeadline):
        return ("stop", action.name)
    if isinstance(action, CreateCounterparty):
        return ("counterparty", action.target, action.name, action.inn, action.phone)
    if isinstance(action, CreateOrder):
        return ("order", action.target, action.inn, action.counterparty, action.amount, action.ship_by, action.comment)
    if isinstance(action, RecordBreach):
        return ("breach", action.deadline, action.responsible_id)
    if isinstance(action, SendMessage):
        return ("message", action.channel, action.text)
    return ("note",)


def run(cfg: Config, case: Case) -> list[tuple[Any, ...]]:
    deal = Deal(
        crm=case.crm,
        id="42",
        title="Заявка Иванова",
        stage=case.stage,
        stage_semantic=case.outcome,  # type: ignore[arg-type]
        pipeline=case.pipeline,
        responsible_id=case.responsible,
        amount=case.amount,
        created_at=case.created,
        updated_at=case.updated or case.now,
        location=case.location,
        fields=case.fields,
        currency=case.currency,
    )
    event = Event(case.crm, case.kind, "42", case.now, "dedup-1", data=case.data)
    calendar = (
        cfg.calendars.default
        if cfg.calendars is not None
        else WorkCalendar(country="RU", timezone="Europe/Moscow", work_hours="09:00-18:00")
    )
    ctx = RuleContext(
        deal=deal,
        event=event,
        now=case.now,
        triggers=frozenset(case.triggers),
        changes=case.changes,
        users={"17": User("17", "Капитан")},
        territories=cfg.territories,
        calendar=calendar,
        calendars=cfg.calendars,
        org=cfg.org,
        deadlines=cfg.deadlines,
        duplicates=case.duplicates,
    )
    rule = next(r for r in cfg.rules if r.name == case.rule)
    return [summarise(d.action) for d in evaluate([rule], ctx) if summarise(d.action) != ("note",)]


ISP = [
    pytest.param(
        Case(
            "isp-captain-and-feasibility",
            "C1:NEW",
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            location=Location(city="Казань", district="Вахитовский"),
            expect=[
                # The captain of the location, and the territory's name for the reports (S000.33).
                ("update", {"responsible_id": "19", "UF_CRM_TERRITORY": "Казань, Вахитовский"}),
                # Handed to a cartographer, who checks feasibility within 24 hours.
                ("update", {"UF_CRM_CARTOGRAPHER": "11"}),
                ("task", "Проверить техническую возможность: Заявка Иванова", "11", "2026-11-26 10:00", "normal"),
            ],
        ),
        id="captain-by-location-and-feasibility-24h",
    ),
    pytest.param(
        Case(
            "isp-start-deadlines",
            "C1:NEW",
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            created=msk(2026, 12, 29, 15, 0),
            now=msk(2026, 12, 29, 15, 1),
            expect=[
                # 31 Dec 2026 and 1-8 Jan 2027 are days off: 3 working days run to 12 Jan.
                ("deadline", "connection", "2027-01-12 15:00"),
                ("deadline", "supervisor-control", "2027-01-14 15:00"),
            ],
        ),
        id="connection-3-and-control-5-working-days-over-new-year",
    ),
    pytest.param(
        # First seen by the poll a day after it was created: the clocks still count from the application.
        Case(
            "isp-start-deadlines",
            "C1:ROUTE",
            triggers=("deal.stage_changed",),
            created=msk(2026, 11, 24, 10, 0),
            now=msk(2026, 11, 25, 10, 0),
            expect=[
                ("deadline", "connection", "2026-11-27 10:00"),
                ("deadline", "supervisor-control", "2026-12-01 10:00"),
            ],
        ),
        id="deadlines-from-the-application-when-first-seen-late",
    ),
    pytest.param(
        Case(
            "isp-route-estimate",
            "C1:ROUTE",
            {"UF_CRM_CARTOGRAPHER": "12"},
            triggers=("deal.stage_changed",),
            created=msk(2026, 11, 20, 11, 0),
            expect=[
                # The application's cartographer draws it; the captain stays responsible (no update).
                # 24 hours, counted from the application: older applications come first in the queue.
                (
                    "task",
                    "Начертить маршрут и рассчитать расход кабеля: Заявка Иванова",
                    "12",
                    "2026-11-21 11:00",
                    "normal",
                ),
            ],
        ),
        id="route-estimate-24h-older-first-captain-kept",
    ),
    pytest.param(
        Case(
            "isp-handover-engineers",
            "C1:ENGINEERS",
            triggers=("deal.stage_changed",),
            expect=[
                ("task", "Назначить инженеров и дату подключения: Заявка Иванова", "17", "2026-11-26 10:00", "normal")
            ],
        ),
        id="handover-to-engineers-24h",
    ),
    pytest.param(
        Case(
            "isp-connect-agent-first",
            "C1:ENGINEERS",
            {"UF_CRM_SOURCE": "agent"},
            triggers=("deal.stage_changed",),
            expect=[
                ("task", "Подключить клиента (агентская заявка): Заявка Иванова", "17", "2026-11-30 09:30", "high")
            ],
        ),
        id="agent-applications-first",
    ),
    pytest.param(
        Case(
            "isp-connect-agent-first",
            "C1:ENGINEERS",
            {"UF_CRM_SOURCE": "site"},
            triggers=("deal.stage_changed",),
            expect=[],
        ),
        id="site-application-not-prioritised",
    ),
    pytest.param(
        Case(
            "isp-connection-breached",
            "C1:ENGINEERS",
            kind=EventKind.TIMER_DUE,
            triggers=("deadline.breached",),
            data={
                "deadline": "connection",
                "phase": "breached",
                "due_at": "2026-11-25T06:30:00+00:00",
                # Responsible when the deadline started (before the captain was set): not charged.
                "responsible_id": "1",
            },
            expect=[
                # Charged to the captain, responsible at the moment of the breach.
                ("breach", "connection", "17"),
                ("task", "Просрочено подключение (более 3 рабочих дней): Заявка Иванова", "7", None, "high"),
                ("comment", "Нарушен срок подключения. Ответственный: 17."),
            ],
        ),
        id="connection-breach-charged-to-the-responsible-at-the-breach",
    ),
    pytest.param(
        Case(
            "isp-connection-reminder",
            "C1:ENGINEERS",
            kind=EventKind.TIMER_DUE,
            triggers=("deadline.reminder",),
            data={"deadline": "connection", "phase": "reminder", "due_at": "2026-11-27T15:00:00+03:00"},
            expect=[("comment", "Срок подключения истекает 2026-11-27 15:00.")],
        ),
        id="connection-reminder",
    ),
    pytest.param(
        Case(
            "isp-payment-reminder",
            "C1:WON",
            outcome="won",
            kind=EventKind.TIMER_DUE,
            triggers=("deadline.reminder",),
            data={"deadline": "client-payment", "phase": "reminder", "due_at": "2026-11-30T18:00:00+03:00"},
            expect=[
                # Payment control is the sales supervisors' (user 7), not the engineer's.
                (
                    "task",
                    "Проконтролировать оплату клиента до конца месяца: Заявка Иванова",
                    "7",
                    "2026-11-30 18:00",
                    "normal",
                )
            ],
        ),
        id="client-payment-reminder-to-the-supervisors",
    ),
    pytest.param(
        Case(
            "isp-no-poles",
            "C1:ROUTE",
            {"UF_CRM_TECH_RESULT": "Нет опор"},
            expect=[
                ("close", "lost", "Нет технической возможности (нет опор)", "UF_CRM_LOST_REASON"),
                ("comment", "Сделка закрыта без подключения. Причина: Нет технической возможности (нет опор)"),
            ],
        ),
        id="no-poles-closed-at-once-with-reason",
    ),
    pytest.param(
        Case("isp-no-poles", "C1:LOSE", {"UF_CRM_TECH_RESULT": "Нет опор"}, outcome="lost", expect=[]),
        id="no-poles-already-closed",
    ),
    pytest.param(
        Case(
            "isp-lost-without-reason",
            "C1:LOSE",
            outcome="lost",
            triggers=("deal.stage_changed",),
            changes={"stage": ("C1:VISIT", "C1:LOSE")},
            expect=[
                ("update", {"stage": "C1:VISIT"}),
                (
                    "task",
                    "Укажите причину отказа и закройте сделку снова: Заявка Иванова",
                    "17",
                    "2026-11-26 10:00",
                    "normal",
                ),
            ],
        ),
        id="lost-without-reason-reopened-and-asked",
    ),
    pytest.param(
        Case(
            "isp-lost-without-reason",
            "C1:LOSE",
            {"UF_CRM_LOST_REASON": "Дорого"},
            outcome="lost",
            triggers=("deal.stage_changed",),
            expect=[],
        ),
        id="lost-with-reason-stays-lost",
    ),
    pytest.param(
        Case(
            "isp-client-not-home",
            "C1:VISIT",
            {"UF_CRM_VISIT_RESULT": "Клиент не дома", "UF_CRM_AGREED_TIME": "2026-11-27T18:30:00+03:00"},
            changes={"UF_CRM_VISIT_RESULT": ("", "Клиент не дома")},
            expect=[
                ("task", "Повторный выезд (клиент не был дома): Заявка Иванова", "17", "2026-11-27 18:30", "normal")
            ],
        ),
        id="client-not-home-rescheduled-to-agreed-time",
    ),
    pytest.param(
        Case(
            "isp-client-not-home",
            "C1:VISIT",
            {"UF_CRM_VISIT_RESULT": "Клиент не дома", "UF_CRM_AGREED_TIME": "2026-11-27T18:30:00+03:00"},
            changes={"UF_CRM_COMMENTS": ("", "позвонить заранее")},
            expect=[],
        ),
        id="client-not-home-no-task-on-a-later-edit",
    ),
    pytest.param(
        Case(
            "isp-visit-update",
            "C1:VISIT",
            triggers=("deal.stage_changed",),
            expect=[("deadline", "update-after-visit", "2026-11-26 10:00")],
        ),
        id="deal-updated-within-24h-after-visit",
    ),
    pytest.param(
        Case(
            "isp-legal-claim",
            "C1:VISIT",
            {"UF_CRM_VISIT_RESULT": "Юридическая претензия"},
            expect=[
                ("task", "Юридическая претензия по договору: Заявка Иванова", "9", "2026-11-26 10:00", "normal"),
                ("comment", "Сделка передана юридическому отделу."),
            ],
        ),
        id="legal-claim-to-legal-department",
    ),
    pytest.param(
        Case(
            "isp-payment-by-month-end",
            "C1:WON",
            outcome="won",
            triggers=("deal.stage_changed",),
            expect=[("deadline", "client-payment", "2026-11-30 18:00")],
        ),
        id="client-payment-by-month-end",
    ),
]


@pytest.mark.parametrize("case", ISP)
def test_isp_field_service(case: Case) -> None:
    cfg = load_config(EXAMPLES / "isp-field-service.yaml", ENV)
    assert run(cfg, case) == case.expect


B2B_FULL = {
    "UF_CRM_COMPANY": "ООО Ромашка",
    "UF_CRM_CONTACT_NAME": "Пётр Сидоров",
    "UF_CRM_POSITION": "закупщик",
    "UF_CRM_PHONE": "+7 900 000-00-00",
    "UF_CRM_EMAIL": "p@romashka.ru",
    "UF_CRM_DELIVERY_CITY": "Казань",
}

B2B = [
    pytest.param(
        Case(
            "b2b-new-lead",
            "NEW",
            B2B_FULL,
            pipeline="0",
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            now=msk(2026, 11, 27, 17, 0),
            created=msk(2026, 11, 27, 16, 55),
            expect=[
                ("deadline", "proposal", "2026-11-30 16:55"),
                ("deadline", "first-response", "2026-11-30 09:55"),
                # Friday evening: "the next day" is the next working day, Monday.
                ("task", "Позвонить клиенту: Заявка Иванова", "17", "2026-11-30 17:00", "normal"),
            ],
        ),
        id="new-lead-proposal-deadline-and-next-working-day-call",
    ),
    pytest.param(
        Case(
            "b2b-after-hours-lead",
            "NEW",
            B2B_FULL,
            pipeline="0",
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            now=msk(2026, 11, 27, 21, 40),
            created=msk(2026, 11, 27, 21, 40),
            expect=[
                ("comment", "Заявка пришла в нерабочее время; менеджер перезвонит в начале следующего рабочего дня."),
                # Friday night: first thing on Monday, an hour after the work start.
                (
                    "task",
                    "Перезвонить утром (заявка в нерабочее время): Заявка Иванова",
                    "17",
                    "2026-11-30 10:00",
                    "high",
                ),
            ],
        ),
        id="after-hours-lead-called-first-thing-next-working-morning",
    ),
    pytest.param(
        Case(
            "b2b-after-hours-lead",
            "NEW",
            B2B_FULL,
            pipeline="0",
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            now=msk(2026, 11, 27, 17, 0),
            created=msk(2026, 11, 27, 17, 0),
            expect=[],
        ),
        id="lead-in-working-hours-not-after-hours",
    ),
    pytest.param(
        Case(
            "b2b-after-hours-lead",
            "NEW",
            B2B_FULL,
            pipeline="0",
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            now=msk(2027, 1, 4, 11, 0),
            created=msk(2027, 1, 4, 11, 0),
            expect=[
                ("comment", "Заявка пришла в нерабочее время; менеджер перезвонит в начале следующего рабочего дня."),
                # New-year holidays: the next working morning is Monday 11 January.
                (
                    "task",
                    "Перезвонить утром (заявка в нерабочее время): Заявка Иванова",
                    "17",
                    "2027-01-11 10:00",
                    "high",
                ),
            ],
        ),
        id="holiday-lead-waits-for-the-first-working-morning",
    ),
    pytest.param(
        Case(
            "b2b-after-hours-lead",
            "NEW",
            {**B2B_FULL, "UF_CRM_OPERATOR": "41"},
            pipeline="0",
            responsible="41",
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            now=msk(2026, 11, 27, 21, 40),
            created=msk(2026, 11, 27, 21, 40),
            expect=[],
        ),
        id="after-hours-application-waits-for-its-manager",
    ),
    pytest.param(
        Case(
            "b2b-after-hours-application",
            "NEW",
            {**B2B_FULL, "UF_CRM_OPERATOR": "41"},
            pipeline="0",
            responsible="18",
            changes={"responsible_id": ("41", "18")},
            now=msk(2026, 11, 27, 21, 41),
            created=msk(2026, 11, 27, 21, 40),
            expect=[
                ("comment", "Заявка пришла в нерабочее время; менеджер перезвонит в начале следующего рабочего дня."),
                (
                    "task",
                    "Перезвонить утром (заявка в нерабочее время): Заявка Иванова",
                    "18",
                    "2026-11-30 10:00",
                    "high",
                ),
            ],
        ),
        id="after-hours-application-called-by-its-manager-next-working-morning",
    ),
    pytest.param(
        Case(
            "b2b-after-hours-application",
            "NEW",
            {**B2B_FULL, "UF_CRM_OPERATOR": "41"},
            pipeline="0",
            responsible="18",
            changes={"responsible_id": ("41", "18")},
            now=msk(2026, 11, 27, 12, 1),
            created=msk(2026, 11, 27, 12, 0),
            expect=[],
        ),
        id="application-in-working-hours-not-after-hours",
    ),
    pytest.param(
        Case(
            "b2b-undecided-follow-up",
            "NEW",
            B2B_FULL,
            pipeline="0",
            kind=EventKind.SCHEDULE,
            triggers=("schedule",),
            data={"schedule": "b2b-undecided-follow-up"},
            now=msk(2026, 11, 30, 10, 0),
            updated=msk(2026, 11, 24, 15, 0),
            expect=[
                (
                    "task",
                    "Клиент не определился: уточнить потребность: Заявка Иванова",
                    "17",
                    "2026-12-01 10:00",
                    "normal",
                )
            ],
        ),
        id="undecided-lead-followed-up-after-3-working-days",
    ),
    pytest.param(
        Case(
            "b2b-undecided-follow-up",
            "NEW",
            B2B_FULL,
            pipeline="0",
            kind=EventKind.SCHEDULE,
            triggers=("schedule",),
            data={"schedule": "b2b-undecided-follow-up"},
            now=msk(2026, 11, 30, 10, 0),
            updated=msk(2026, 11, 26, 11, 0),
            expect=[],
        ),
        id="lead-changed-within-3-working-days-not-followed-up",
    ),
    pytest.param(
        Case(
            "b2b-production-due-control",
            "EXECUTING",
            {**B2B_FULL, "UF_CRM_PRODUCTION_DUE": "2026-12-04T00:00:00+03:00", "UF_CRM_ACCOUNT_MANAGER": "31"},
            pipeline="0",
            changes={"UF_CRM_PRODUCTION_DUE": (None, "2026-12-04T00:00:00+03:00")},
            expect=[("task", "Контроль срока производства: Заявка Иванова", "31", "2026-12-04 00:00", "normal")],
        ),
        id="production-date-set-control-task-to-the-account-manager",
    ),
    pytest.param(
        Case(
            "b2b-production-due-control",
            "EXECUTING",
            {**B2B_FULL, "UF_CRM_PRODUCTION_DUE": "2026-12-04T00:00:00+03:00"},
            pipeline="0",
            changes={"UF_CRM_PHONE": ("+7 900 000-00-01", "+7 900 000-00-00")},
            expect=[],
        ),
        id="production-date-unchanged-no-task",
    ),
    pytest.param(
        Case(
            "b2b-production-late",
            "EXECUTING",
            {**B2B_FULL, "UF_CRM_PRODUCTION_DUE": "2026-11-23T00:00:00+03:00", "UF_CRM_ACCOUNT_MANAGER": "31"},
            pipeline="0",
            kind=EventKind.SCHEDULE,
            triggers=("schedule",),
            data={"schedule": "b2b-production-late"},
            now=msk(2026, 11, 25, 10, 0),
            expect=[
                (
                    "task",
                    "Срыв срока производства: клиент и поставщик: Заявка Иванова",
                    "31",
                    "2026-11-25 14:00",
                    "high",
                ),
                ("task", "Сорван срок производства: Заявка Иванова", "5", None, "high"),
            ],
        ),
        id="production-late-account-manager-and-head-of-sales",
    ),
    pytest.param(
        Case(
            "b2b-production-late",
            "EXECUTING",
            {**B2B_FULL, "UF_CRM_PRODUCTION_DUE": "2026-11-23T00:00:00+03:00", "UF_CRM_GOODS_RECEIVED": "Y"},
            pipeline="0",
            kind=EventKind.SCHEDULE,
            triggers=("schedule",),
            data={"schedule": "b2b-production-late"},
            now=msk(2026, 11, 25, 10, 0),
            expect=[],
        ),
        id="goods-at-the-warehouse-not-late",
    ),
    pytest.param(
        Case(
            "b2b-production-late",
            "EXECUTING",
            {**B2B_FULL, "UF_CRM_PRODUCTION_DUE": "2026-11-25T00:00:00+03:00"},
            pipeline="0",
            kind=EventKind.SCHEDULE,
            triggers=("schedule",),
            data={"schedule": "b2b-production-late"},
            now=msk(2026, 11, 25, 10, 0),
            expect=[],
        ),
        id="production-due-today-not-late-yet",
    ),
    pytest.param(
        Case(
            "b2b-production-reminder",
            "EXECUTING",
            {**B2B_FULL, "UF_CRM_PRODUCTION_DUE": "2026-11-27T00:00:00+03:00", "UF_CRM_ACCOUNT_MANAGER": "31"},
            pipeline="0",
            kind=EventKind.SCHEDULE,
            triggers=("schedule",),
            data={"schedule": "b2b-production-reminder"},
            now=msk(2026, 11, 25, 10, 0),
            expect=[
                (
                    "task",
                    "Срок производства 2026-11-27: проверить готовность у поставщика: Заявка Иванова",
                    "31",
                    "2026-11-25 14:00",
                    "normal",
                )
            ],
        ),
        id="production-date-two-working-days-away-reminder",
    ),
    pytest.param(
        Case(
            "b2b-production-reminder",
            "EXECUTING",
            {**B2B_FULL, "UF_CRM_PRODUCTION_DUE": "2026-12-01T00:00:00+03:00"},
            pipeline="0",
            kind=EventKind.SCHEDULE,
            triggers=("schedule",),
            data={"schedule": "b2b-production-reminder"},
            now=msk(2026, 11, 25, 10, 0),
            expect=[],
        ),
        id="production-date-far-no-reminder-yet",
    ),
    pytest.param(
        Case(
            "b2b-production-reminder",
            "EXECUTING",
            {**B2B_FULL, "UF_CRM_PRODUCTION_DUE": "2026-11-23T00:00:00+03:00"},
            pipeline="0",
            kind=EventKind.SCHEDULE,
            triggers=("schedule",),
            data={"schedule": "b2b-production-reminder"},
            now=msk(2026, 11, 25, 10, 0),
            expect=[],
        ),
        id="production-date-past-no-reminder-but-late",
    ),
    pytest.param(
        Case(
            "b2b-refused-recontact",
            "LOSE",
            {**B2B_FULL, "UF_CRM_LOST_REASON": "Дорого, выбрали другого поставщика"},
            pipeline="0",
            outcome="lost",
            kind=EventKind.SCHEDULE,
            triggers=("schedule",),
            data={"schedule": "b2b-refused-recontact"},
            now=msk(2026, 11, 30, 11, 0),
            updated=msk(2026, 8, 31, 12, 0),
            expect=[
                (
                    "task",
                    "Повторный контакт с отказавшимся клиентом: Заявка Иванова",
                    "17",
                    "2026-12-02 11:00",
                    "normal",
                )
            ],
        ),
        id="refused-client-recontacted-after-90-days",
    ),
    pytest.param(
        Case(
            "b2b-refused-recontact",
            "LOSE",
            {**B2B_FULL, "UF_CRM_LOST_REASON": "Дорого, выбрали другого поставщика"},
            pipeline="0",
            outcome="lost",
            kind=EventKind.SCHEDULE,
            triggers=("schedule",),
            data={"schedule": "b2b-refused-recontact"},
            now=msk(2026, 11, 30, 11, 0),
            updated=msk(2026, 9, 15, 12, 0),
            expect=[],
        ),
        id="refused-client-not-yet-90-days",
    ),
    pytest.param(
        Case(
            "b2b-repeat-client",
            "NEW",
            B2B_FULL,
            pipeline="0",
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            duplicates={
                "phone": [
                    Duplicate("contact", "12", "phone", "+79000000000"),
                    Duplicate("deal", "7", "phone", "+79000000000"),
                ],
                "email": [],
            },
            expect=[
                ("comment", "Повторный клиент: contact 12, deal 7"),
                (
                    "task",
                    "Повторное обращение: проверить историю клиента: Заявка Иванова",
                    "17",
                    "2026-11-25 12:00",
                    "normal",
                ),
                ("update", {"UF_CRM_DUPLICATES": "contact 12, deal 7"}),
            ],
        ),
        id="repeat-client-linked-with-a-comment-and-a-task",
    ),
    pytest.param(
        Case(
            "b2b-repeat-client",
            "NEW",
            {**B2B_FULL, "UF_CRM_PHONE": "8 (916) 123-45-6", "UF_CRM_OPERATOR": "41"},
            pipeline="0",
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            duplicates={"phone": [], "email": []},
            expect=[
                ("comment", "Ошибка в контактах от КЦ: «8 (916) 123-45-6» is not a valid phone number: no such number"),
                (
                    "task",
                    "Уточнить телефон клиента (ошибка при передаче из КЦ): Заявка Иванова",
                    "41",
                    "2026-11-25 12:00",
                    "normal",
                ),
            ],
        ),
        id="bad-phone-back-to-the-call-centre-operator",
    ),
    pytest.param(
        Case(
            "b2b-stage-order",
            "PREPAYMENT_INVOICE",
            B2B_FULL,
            pipeline="0",
            triggers=("deal.stage_changed",),
            changes={"stage": ("NEW", "PREPAYMENT_INVOICE")},
            expect=[
                ("update", {"stage": "NEW"}),
                ("comment", "Сделка возвращена на этап NEW: пропущены этапы: PREPARATION."),
                ("task", "Пройти пропущенный этап: Заявка Иванова", "17", "2026-11-26 10:00", "normal"),
            ],
        ),
        id="skipped-proposal-stage-returned",
    ),
    pytest.param(
        Case(
            "b2b-stage-order",
            "PREPAYMENT_INVOICE",
            B2B_FULL,
            pipeline="0",
            triggers=("deal.stage_changed",),
            changes={"stage": ("PREPARATION", "PREPAYMENT_INVOICE")},
            expect=[],
        ),
        id="stages-in-order-pass",
    ),
    pytest.param(
        Case(
            "b2b-project-checkboxes",
            "WON",
            {**B2B_FULL, "UF_CRM_SUPPLIER_INVOICE": "Y"},
            pipeline="0",
            outcome="won",
            triggers=("deal.stage_changed",),
            changes={"stage": ("EXECUTING", "WON")},
            expect=[
                ("update", {"stage": "EXECUTING"}),
                ("comment", "Сделка возвращена на этап EXECUTING: в проекте не заполнено: UF_CRM_UPD_SIGNED."),
                (
                    "task",
                    "Заполнить проект (счёт поставщика, подписанный УПД): Заявка Иванова",
                    "6",
                    "2026-11-26 10:00",
                    "normal",
                ),
            ],
        ),
        id="won-without-signed-upd-returned-assistant-told",
    ),
    pytest.param(
        Case(
            "b2b-project-checkboxes",
            "WON",
            {**B2B_FULL, "UF_CRM_SUPPLIER_INVOICE": "Y", "UF_CRM_UPD_SIGNED": "Y"},
            pipeline="0",
            outcome="won",
            triggers=("deal.stage_changed",),
            changes={"stage": ("EXECUTING", "WON")},
            expect=[],
        ),
        id="project-complete-won",
    ),
    pytest.param(
        Case(
            "b2b-required-fields",
            "NEW",
            {**B2B_FULL, "UF_CRM_POSITION": "", "UF_CRM_EMAIL": None},
            pipeline="0",
            triggers=("deal.created",),
            expect=[("task", "Заполните карточку сделки: Заявка Иванова", "17", "2026-11-25 14:00", "normal")],
        ),
        id="required-fields-missing",
    ),
    pytest.param(
        Case("b2b-required-fields", "NEW", B2B_FULL, pipeline="0", triggers=("deal.created",), expect=[]),
        id="required-fields-complete",
    ),
    pytest.param(
        # A connection application on the ISP pipeline is not a sales card.
        Case("b2b-required-fields", "C1:NEW", {}, pipeline="1", triggers=("deal.created",), expect=[]),
        id="required-fields-not-on-the-isp-pipeline",
    ),
    pytest.param(
        Case(
            "b2b-application-complete",
            "NEW",
            {**B2B_FULL, "UF_CRM_DEMAND_TYPE": "кирпич", "UF_CRM_OPERATOR": "31"},
            pipeline="0",
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            expect=[
                (
                    "task",
                    "Дооформите заявку КЦ (тема, тип спроса, город доставки): Заявка Иванова",
                    "31",
                    "2026-11-25 12:00",
                    "normal",
                )
            ],
        ),
        id="application-without-a-subject-back-to-the-operator",
    ),
    pytest.param(
        Case(
            "b2b-application-complete",
            "NEW",
            {**B2B_FULL, "UF_CRM_SUBJECT": "кирпич М150", "UF_CRM_DEMAND_TYPE": "кирпич", "UF_CRM_OPERATOR": "31"},
            pipeline="0",
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            expect=[],
        ),
        id="application-complete",
    ),
    pytest.param(
        Case(
            "b2b-proposal-control-call",
            "PREPARATION",
            pipeline="0",
            triggers=("deal.stage_changed",),
            changes={"stage": ("NEW", "PREPARATION")},
            expect=[("task", "Контрольный звонок: пришло ли КП: Заявка Иванова", "17", "2026-11-26 10:00", "normal")],
        ),
        id="proposal-sent-control-call-next-working-day",
    ),
    pytest.param(
        Case(
            "b2b-invoice-by-assistant",
            "PREPAYMENT_INVOICE",
            pipeline="0",
            triggers=("deal.stage_changed",),
            changes={"stage": ("PREPARATION", "PREPAYMENT_INVOICE")},
            expect=[
                ("task", "Выставить счёт и завести проект в 1С: Заявка Иванова", "6", "2026-11-25 14:00", "normal")
            ],
        ),
        id="invoice-stage-task-to-the-assistant",
    ),
    pytest.param(
        Case(
            "b2b-design-layouts",
            "EXECUTING",
            pipeline="0",
            triggers=("deal.stage_changed",),
            changes={"stage": ("PREPAYMENT_INVOICE", "EXECUTING")},
            expect=[
                ("task", "Запросить и проверить дизайн-макеты: Заявка Иванова", "17", "2026-11-26 10:00", "normal")
            ],
        ),
        id="invoice-paid-design-layouts",
    ),
    pytest.param(
        Case(
            "b2b-complaint",
            "PREPARATION",
            {"UF_CRM_COMPLAINT": "Привезли не тот тираж"},
            pipeline="0",
            changes={"UF_CRM_COMPLAINT": ("", "Привезли не тот тираж")},
            expect=[
                ("deadline", "complaint-answer", "2026-11-26 10:00"),
                (
                    "task",
                    "Претензия клиента: ответить в течение рабочего дня: Заявка Иванова",
                    "17",
                    "2026-11-26 10:00",
                    "high",
                ),
            ],
        ),
        id="complaint-answer-deadline-and-task",
    ),
    pytest.param(
        Case(
            "b2b-complaint",
            "PREPARATION",
            {"UF_CRM_COMPLAINT": "Привезли не тот тираж"},
            pipeline="0",
            changes={"UF_CRM_PHONE": ("", "+7 900")},
            expect=[],
        ),
        id="complaint-once-not-on-later-edits",
    ),
    pytest.param(
        Case(
            "b2b-complaint-breached",
            "PREPARATION",
            pipeline="0",
            kind=EventKind.TIMER_DUE,
            triggers=("deadline.breached",),
            data={"deadline": "complaint-answer", "phase": "breached", "due_at": "2026-11-25T10:00:00+03:00"},
            expect=[
                ("breach", "complaint-answer", "17"),
                ("task", "Претензия без ответа: Заявка Иванова", "5", None, "high"),
            ],
        ),
        id="complaint-unanswered-escalated",
    ),
    pytest.param(
        Case(
            "b2b-sla-escalation",
            "NEW",
            pipeline="0",
            kind=EventKind.TIMER_DUE,
            triggers=("deadline.breached",),
            data={"deadline": "first-response", "phase": "breached", "due_at": "2026-11-25T11:30:00+03:00"},
            expect=[
                ("breach", "first-response", "17"),
                ("task", "Нарушен срок (first-response): Заявка Иванова", "5", None, "high"),
                ("comment", "Срок «first-response» истёк 2026-11-25 11:30."),
            ],
        ),
        id="response-sla-escalated",
    ),
    pytest.param(
        Case(
            "b2b-lost-needs-detailed-reason",
            "LOSE",
            {"UF_CRM_LOST_REASON": "дорого"},
            pipeline="0",
            outcome="lost",
            triggers=("deal.stage_changed",),
            changes={"stage": ("PREPAYMENT_INVOICE", "LOSE")},
            expect=[
                ("update", {"stage": "PREPAYMENT_INVOICE"}),
                ("task", "Подробно опишите причину отказа: Заявка Иванова", "17", "2026-11-25 14:00", "normal"),
            ],
        ),
        id="lost-with-a-vague-reason-reopened",
    ),
    pytest.param(
        Case(
            "b2b-lost-needs-detailed-reason",
            "LOSE",
            {"UF_CRM_LOST_REASON": "Выбрали поставщика с доставкой в тот же день"},
            pipeline="0",
            outcome="lost",
            triggers=("deal.stage_changed",),
            expect=[],
        ),
        id="lost-with-a-detailed-reason-stays-lost",
    ),
    pytest.param(
        Case(
            "b2b-lost-needs-detailed-reason",
            "C1:LOSE",
            {"UF_CRM_LOST_REASON": "дорого"},
            pipeline="1",
            outcome="lost",
            triggers=("deal.stage_changed",),
            changes={"stage": ("C1:VISIT", "C1:LOSE")},
            expect=[],
        ),
        id="lost-reason-not-judged-on-the-isp-pipeline",
    ),
    pytest.param(
        Case(
            "b2b-after-payment",
            "EXECUTING",
            pipeline="0",
            triggers=("deal.stage_changed",),
            expect=[
                ("task", "Передать клиента в отдел заботы: Заявка Иванова", "17", "2026-11-26 10:00", "normal"),
                ("update", {"UF_CRM_CARE_MANAGER": "21"}),
                ("task", "Новый клиент отдела заботы: Заявка Иванова", "21", "2026-11-26 10:00", "normal"),
            ],
        ),
        id="after-payment-hand-off-to-customer-care",
    ),
    pytest.param(
        Case(
            "b2b-reactivation-before-holidays",
            "WON",
            pipeline="0",
            outcome="won",
            kind=EventKind.SCHEDULE,
            triggers=("schedule",),
            data={"schedule": "b2b-reactivation-before-holidays"},
            now=msk(2027, 2, 17, 10, 0),
            expect=[
                (
                    "task",
                    "Поздравить клиента и отправить подборку к празднику «День защитника Отечества»: Заявка Иванова",
                    "17",
                    "2027-02-18 10:00",
                    "normal",
                )
            ],
        ),
        id="reactivation-a-week-before-a-holiday",
    ),
    pytest.param(
        Case(
            "b2b-reactivation-before-holidays",
            "WON",
            pipeline="0",
            outcome="won",
            kind=EventKind.SCHEDULE,
            triggers=("schedule",),
            data={"schedule": "b2b-reactivation-before-holidays"},
            now=msk(2027, 2, 10, 10, 0),
            expect=[],
        ),
        id="no-reactivation-without-a-holiday-near",
    ),
    pytest.param(
        Case(
            "b2b-lead-distribution",
            "NEW",
            {**B2B_FULL, "UF_CRM_OPERATOR": "41"},
            pipeline="0",
            responsible="41",
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            expect=[
                ("update", {"responsible_id": "17"}),
                ("deadline", "proposal", "2026-11-26 09:30"),
                ("deadline", "first-response", "2026-11-25 11:30"),
                ("comment", "Заявка КЦ распределена по очереди: менеджер 17."),
                ("task", "Позвонить клиенту: Заявка Иванова", "17", "2026-11-26 10:00", "normal"),
            ],
        ),
        id="call-centre-application-distributed-round-robin",
    ),
    pytest.param(
        Case(
            "b2b-lead-distribution",
            "NEW",
            dict(B2B_FULL),
            pipeline="0",
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            expect=[],
        ),
        id="manager-own-lead-not-distributed",
    ),
    pytest.param(
        Case(
            "b2b-new-lead",
            "NEW",
            {**B2B_FULL, "UF_CRM_OPERATOR": "41"},
            pipeline="0",
            responsible="41",
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            expect=[],
        ),
        id="call-centre-application-not-a-manager-own-lead",
    ),
    pytest.param(
        Case(
            "b2b-order-to-account-manager",
            "FINAL_INVOICE",
            {**B2B_FULL, "UF_CRM_SUBJECT": "кружки с логотипом"},
            pipeline="0",
            amount=Decimal("120000"),
            triggers=("deal.stage_changed",),
            changes={"stage": ("EXECUTING", "FINAL_INVOICE")},
            expect=[
                ("update", {"UF_CRM_ACCOUNT_MANAGER": "19"}),
                ("comment", "Клиент передан аккаунт-менеджеру 19."),
                (
                    "task",
                    "Принять клиента и заказать товар по проекту: Заявка Иванова",
                    "19",
                    "2026-11-26 10:00",
                    "normal",
                ),
            ],
        ),
        id="order-stage-client-to-an-account-manager",
    ),
    pytest.param(
        Case(
            "b2b-order-to-account-manager",
            "FINAL_INVOICE",
            {**B2B_FULL, "UF_CRM_SUBJECT": "кружки с логотипом", "UF_CRM_ACCOUNT_MANAGER": "20"},
            pipeline="0",
            amount=Decimal("120000"),
            triggers=("deal.stage_changed",),
            changes={"stage": ("EXECUTING", "FINAL_INVOICE")},
            expect=[],
        ),
        id="named-account-manager-not-replaced-in-turn",
    ),
    pytest.param(
        Case(
            "b2b-order-to-named-account-manager",
            "FINAL_INVOICE",
            {**B2B_FULL, "UF_CRM_SUBJECT": "кружки с логотипом", "UF_CRM_ACCOUNT_MANAGER": "20"},
            pipeline="0",
            amount=Decimal("120000"),
            triggers=("deal.stage_changed",),
            changes={"stage": ("EXECUTING", "FINAL_INVOICE")},
            expect=[
                ("comment", "Клиент передан аккаунт-менеджеру 20."),
                (
                    "task",
                    "Принять клиента и заказать товар по проекту: Заявка Иванова",
                    "20",
                    "2026-11-26 10:00",
                    "normal",
                ),
            ],
        ),
        id="order-stage-client-to-its-named-account-manager",
    ),
    pytest.param(
        Case(
            "b2b-order-to-named-account-manager",
            "FINAL_INVOICE",
            {**B2B_FULL, "UF_CRM_SUBJECT": "кружки с логотипом"},
            pipeline="0",
            amount=Decimal("120000"),
            triggers=("deal.stage_changed",),
            changes={"stage": ("EXECUTING", "FINAL_INVOICE")},
            expect=[],
        ),
        id="no-named-account-manager-drawn-in-turn-instead",
    ),
    pytest.param(
        Case(
            "b2b-order-to-account-manager",
            "FINAL_INVOICE",
            dict(B2B_FULL),
            pipeline="0",
            amount=Decimal("120000"),
            triggers=("deal.stage_changed",),
            changes={"stage": ("EXECUTING", "FINAL_INVOICE")},
            expect=[],
        ),
        id="incomplete-order-not-handed-to-an-account-manager",
    ),
    pytest.param(
        Case(
            "b2b-supplier-payment-request",
            "FINAL_INVOICE",
            {**B2B_FULL, "UF_CRM_SUBJECT": "кружки с логотипом"},
            pipeline="0",
            amount=Decimal("120000"),
            triggers=("deal.stage_changed",),
            changes={"stage": ("EXECUTING", "FINAL_INVOICE")},
            expect=[
                ("task", "Сформировать заявку на оплату поставщику: Заявка Иванова", "6", "2026-11-26 10:00", "normal"),
            ],
        ),
        id="order-stage-payment-request-task-to-the-assistant",
    ),
    pytest.param(
        Case(
            "b2b-order-data-complete",
            "FINAL_INVOICE",
            {**B2B_FULL, "UF_CRM_PHONE": ""},
            pipeline="0",
            triggers=("deal.stage_changed",),
            changes={"stage": ("EXECUTING", "FINAL_INVOICE")},
            expect=[
                ("update", {"stage": "EXECUTING"}),
                (
                    "comment",
                    "Сделка возвращена на этап EXECUTING: в снабжение и логистику не передать, "
                    "не заполнено: UF_CRM_PHONE, UF_CRM_SUBJECT, amount.",
                ),
                ("task", "Дополните контакты и данные заказа: Заявка Иванова", "17", "2026-11-25 14:00", "normal"),
            ],
        ),
        id="order-without-phone-subject-and-sum-not-handed-to-logistics",
    ),
    pytest.param(
        Case(
            "b2b-order-data-complete",
            "FINAL_INVOICE",
            {**B2B_FULL, "UF_CRM_SUBJECT": "кружки с логотипом"},
            pipeline="0",
            amount=Decimal("120000"),
            triggers=("deal.stage_changed",),
            changes={"stage": ("EXECUTING", "FINAL_INVOICE")},
            expect=[],
        ),
        id="complete-order-handed-to-logistics",
    ),
    pytest.param(
        Case(
            "b2b-goods-received",
            "FINAL_INVOICE",
            {**B2B_FULL, "UF_CRM_GOODS_RECEIVED": "Y", "UF_CRM_ACCOUNT_MANAGER": "19"},
            pipeline="0",
            changes={"UF_CRM_GOODS_RECEIVED": ("", "Y")},
            expect=[
                ("comment", "Товар поступил на склад."),
                (
                    "task",
                    "Товар на складе: сообщить клиенту дату самовывоза или доставки: Заявка Иванова",
                    "19",
                    "2026-11-26 10:00",
                    "normal",
                ),
            ],
        ),
        id="goods-received-account-manager-tells-the-client",
    ),
    pytest.param(
        Case(
            "b2b-goods-received",
            "FINAL_INVOICE",
            {**B2B_FULL, "UF_CRM_GOODS_RECEIVED": "Y", "UF_CRM_ACCOUNT_MANAGER": "19"},
            pipeline="0",
            changes={"UF_CRM_PHONE": ("", "+7 900")},
            expect=[],
        ),
        id="goods-already-received-no-new-task",
    ),
    pytest.param(
        Case(
            "b2b-order-transport",
            "FINAL_INVOICE",
            {**B2B_FULL, "UF_CRM_GOODS_RECEIVED": "Y", "UF_CRM_ACCOUNT_MANAGER": "19"},
            pipeline="0",
            changes={"UF_CRM_GOODS_RECEIVED": ("", "Y")},
            now=msk(2026, 11, 25, 11, 20),
            expect=[
                (
                    "task",
                    "Заказать транспорт/курьера: счёт на доставку и заявка в Минилогисте до 16:00: Заявка Иванова",
                    "19",
                    "2026-11-25 16:00",
                    "high",
                ),
            ],
        ),
        id="goods-ready-in-the-morning-transport-by-16-the-same-day",
    ),
    pytest.param(
        Case(
            "b2b-order-transport",
            "FINAL_INVOICE",
            {**B2B_FULL, "UF_CRM_GOODS_RECEIVED": "Y"},
            pipeline="0",
            changes={"UF_CRM_GOODS_RECEIVED": ("", "Y")},
            now=msk(2026, 11, 27, 16, 30),  # a Friday after 16:00
            expect=[
                (
                    "task",
                    "Заказать транспорт/курьера: счёт на доставку и заявка в Минилогисте до 16:00: Заявка Иванова",
                    "17",
                    "2026-11-30 16:00",
                    "high",
                ),
            ],
        ),
        id="goods-ready-after-16-transport-by-16-the-next-working-day",
    ),
    pytest.param(
        Case(
            "b2b-first-response-moment",
            "NEW",
            {**B2B_FULL, "UF_CRM_FIRST_CALL": "Y"},
            pipeline="0",
            changes={"UF_CRM_FIRST_CALL": ("", "Y")},
            expect=[("update", {"UF_CRM_FIRST_RESPONSE_AT": "2026-11-25T07:00:00+00:00"})],
        ),
        id="first-call-stamps-the-first-response",
    ),
    pytest.param(
        Case(
            "b2b-first-response-moment",
            "PREPARATION",
            dict(B2B_FULL),
            pipeline="0",
            triggers=("deal.updated", "deal.stage_changed"),
            changes={"stage": ("NEW", "PREPARATION")},
            expect=[("update", {"UF_CRM_FIRST_RESPONSE_AT": "2026-11-25T07:00:00+00:00"})],
        ),
        id="lead-moved-on-stamps-the-first-response",
    ),
    pytest.param(
        Case(
            "b2b-first-response-moment",
            "NEW",
            {**B2B_FULL, "UF_CRM_FIRST_CALL": "Y", "UF_CRM_FIRST_RESPONSE_AT": "2026-11-24T12:00:00+03:00"},
            pipeline="0",
            changes={"UF_CRM_FIRST_CALL": ("", "Y")},
            expect=[],
        ),
        id="first-response-stamped-once",
    ),
    pytest.param(
        Case(
            "b2b-status-question-moment",
            "EXECUTING",
            {**B2B_FULL, "UF_CRM_STATUS_QUESTION": "Когда отгрузка?", "UF_CRM_STATUS_ANSWERED": "Y"},
            pipeline="0",
            changes={"UF_CRM_STATUS_QUESTION": ("", "Когда отгрузка?")},
            expect=[
                (
                    "update",
                    {
                        "UF_CRM_STATUS_ASKED_AT": "2026-11-25T07:00:00+00:00",
                        "UF_CRM_STATUS_ANSWERED": "",
                    },
                )
            ],
        ),
        id="status-question-stamps-when-asked",
    ),
    pytest.param(
        Case(
            "b2b-status-answer-moment",
            "EXECUTING",
            {**B2B_FULL, "UF_CRM_STATUS_ASKED_AT": "2026-11-25T08:00:00+03:00", "UF_CRM_STATUS_ANSWERED": "Y"},
            pipeline="0",
            changes={"UF_CRM_STATUS_ANSWERED": ("", "Y")},
            expect=[("update", {"UF_CRM_STATUS_ANSWERED_AT": "2026-11-25T07:00:00+00:00"})],
        ),
        id="status-answer-stamps-when-answered",
    ),
    pytest.param(
        Case(
            "b2b-status-answer-moment",
            "EXECUTING",
            {**B2B_FULL, "UF_CRM_STATUS_ANSWERED": "Y"},
            pipeline="0",
            changes={"UF_CRM_STATUS_ANSWERED": ("", "Y")},
            expect=[],
        ),
        id="answer-without-a-question-not-stamped",
    ),
]


@pytest.mark.parametrize("case", B2B)
def test_b2b_sales(case: Case) -> None:
    cfg = load_config(EXAMPLES / "b2b-sales.yaml", ENV)
    assert run(cfg, case) == case.expect


PAYMENT = {
    "document": "payment",
    "number": "0000-000002",
    "amount": 70000.0,
    "currency": "RUB",
    "invoice_number": "0000-000001",
    "invoice_amount": 120000.0,
}
MONEY = [
    pytest.param(
        Case(
            "money-invoice-on-deal",
            "PREPAYMENT_INVOICE",
            pipeline="0",
            kind=EventKind.INVOICE_ISSUED,
            triggers=("invoice.issued",),
            data={"document": "invoice", "number": "0000-000001", "amount": 120000.0, "currency": "RUB"},
            now=msk(2026, 11, 25, 10, 0),
            expect=[
                ("update", {"UF_CRM_INVOICE": "0000-000001", "UF_CRM_INVOICE_AMOUNT": "120000.0"}),
                ("comment", "1С: выставлен счёт № 0000-000001 на 120000.0 RUB"),
                ("deadline", "invoice-payment", "2026-11-30 18:00"),
            ],
        ),
        id="invoice-written-on-the-deal",
    ),
    pytest.param(
        Case(
            "money-payment-on-deal",
            "PREPAYMENT_INVOICE",
            pipeline="0",
            kind=EventKind.PAYMENT_RECEIVED,
            triggers=("payment.received",),
            data={**PAYMENT, "paid_total": 120000.0, "paid_in_full": True},
            expect=[
                ("update", {"UF_CRM_PAID_TOTAL": "120000.0"}),
                (
                    "comment",
                    "1С: оплата № 0000-000002 на 70000.0 RUB по счёту 0000-000001; оплачено 120000.0 из 120000.0"
                    " — полностью",
                ),
            ],
        ),
        id="payment-written-on-the-deal",
    ),
    pytest.param(
        Case(
            "money-paid-in-full",
            "PREPAYMENT_INVOICE",
            pipeline="0",
            kind=EventKind.PAYMENT_RECEIVED,
            triggers=("payment.received",),
            data={**PAYMENT, "paid_in_full": True},
            expect=[("update", {"UF_CRM_PAID_IN_FULL": "Y"}), ("update", {"stage": "EXECUTING"})],
        ),
        id="full-payment-moves-the-stage",
    ),
    pytest.param(
        Case(
            "money-paid-in-full",
            "PREPAYMENT_INVOICE",
            pipeline="0",
            kind=EventKind.PAYMENT_RECEIVED,
            triggers=("payment.received",),
            data={**PAYMENT, "paid_in_full": False},
            expect=[],
        ),
        id="partial-payment-keeps-the-stage",
    ),
    pytest.param(
        Case(
            "money-paid-in-full",
            "C1:WON",
            pipeline="1",
            outcome="won",
            kind=EventKind.PAYMENT_RECEIVED,
            triggers=("payment.received",),
            data={**PAYMENT, "paid_in_full": True},
            expect=[],
        ),
        id="full-payment-moves-no-connection-to-a-sales-stage",
    ),
    pytest.param(
        Case(
            "money-first-payment-hand-off",
            "PREPAYMENT_INVOICE",
            pipeline="0",
            kind=EventKind.PAYMENT_RECEIVED,
            triggers=("payment.received",),
            data={**PAYMENT, "amount": 50000.0, "first_payment": True},
            expect=[
                (
                    "task",
                    "Первая оплата получена: передать клиента в работу (Заявка Иванова)",
                    "17",
                    "2026-11-26 10:00",
                    "normal",
                ),
            ],
        ),
        id="first-payment-hand-off-without-a-bonus-from-the-amount",
    ),
    pytest.param(
        Case(
            "money-first-payment-bonus",
            "C1:WON",
            {"UF_CRM_AGENT": "41", "UF_CRM_SUPERVISOR": "7"},
            pipeline="1",
            outcome="won",
            kind=EventKind.PAYMENT_RECEIVED,
            triggers=("payment.received",),
            data={**PAYMENT, "amount": 600.0, "first_payment": True},
            expect=[
                ("update", {"UF_CRM_BONUS_AGENT": "41: 80 %", "UF_CRM_BONUS_SUPERVISOR": "7: 20 %"}),
                ("task", "Бонус за подключение: Заявка Иванова", "8", "2026-11-26 10:00", "normal"),
            ],
        ),
        id="connection-bonus-80-to-the-agent-20-to-the-supervisor",
    ),
    pytest.param(
        Case(
            "money-first-payment-bonus",
            "EXECUTING",
            {"UF_CRM_AGENT": "41", "UF_CRM_SUPERVISOR": "7"},
            pipeline="0",
            kind=EventKind.PAYMENT_RECEIVED,
            triggers=("payment.received",),
            data={**PAYMENT, "first_payment": True},
            expect=[],
        ),
        id="no-connection-bonus-on-a-sales-deal",
    ),
    pytest.param(
        Case(
            "money-first-payment-hand-off",
            "C1:WON",
            pipeline="1",
            outcome="won",
            kind=EventKind.PAYMENT_RECEIVED,
            triggers=("payment.received",),
            data={**PAYMENT, "first_payment": True},
            expect=[],
        ),
        id="no-sales-hand-off-on-a-connection",
    ),
    pytest.param(
        Case(
            "money-unpaid-reminder",
            "PREPAYMENT_INVOICE",
            {"UF_CRM_INVOICE": "0000-000001"},
            pipeline="0",
            kind=EventKind.TIMER_DUE,
            triggers=("deadline.reminder",),
            data={"deadline": "invoice-payment", "phase": "reminder", "due_at": "2026-11-30T18:00:00+03:00"},
            expect=[
                (
                    "task",
                    "Счёт 0000-000001 не оплачен: напомнить клиенту до конца месяца",
                    "17",
                    "2026-11-30 18:00",
                    "normal",
                )
            ],
        ),
        id="unpaid-invoice-reminder-before-month-end",
    ),
    pytest.param(
        Case(
            "money-order-status-on-deal",
            "EXECUTING",
            pipeline="0",
            kind=EventKind.ORDER_STATUS_CHANGED,
            triggers=("order.status_changed",),
            data={"document": "order", "number": "0000-000007", "status": "КОбеспечению"},
            expect=[
                ("update", {"UF_CRM_1C_ORDER": "0000-000007", "UF_CRM_1C_ORDER_STATUS": "КОбеспечению"}),
                ("comment", "1С: заказ № 0000-000007 — статус «КОбеспечению»"),
            ],
        ),
        id="order-status-shown-on-the-deal",
    ),
    pytest.param(
        Case(
            "money-order-closed-wins-deal",
            "EXECUTING",
            pipeline="0",
            kind=EventKind.ORDER_STATUS_CHANGED,
            triggers=("order.status_changed",),
            data={"document": "order", "number": "0000-000007", "status": "Закрыт"},
            expect=[
                ("close", "won", "", None),
                ("comment", "Заказ 0000-000007 закрыт в 1С: сделка успешно реализована."),
            ],
        ),
        id="order-closed-deal-won",
    ),
    pytest.param(
        Case(
            "money-do-not-ship-unpaid",
            "EXECUTING",
            pipeline="0",
            kind=EventKind.ORDER_STATUS_CHANGED,
            triggers=("order.status_changed",),
            data={
                "document": "order",
                "number": "0000-000007",
                "status": "КОтгрузке",
                "shipment_requested": True,
                "paid": False,
            },
            expect=[
                ("task", "Не отгружать: заказ 0000-000007 не оплачен", "17", "2026-11-25 12:00", "high"),
                ("comment", "Заказ 0000-000007 помечен к отгрузке без оплаты — отгрузка остановлена."),
            ],
        ),
        id="unpaid-order-not-shipped",
    ),
    pytest.param(
        Case(
            "money-do-not-ship-unpaid",
            "EXECUTING",
            pipeline="0",
            kind=EventKind.ORDER_STATUS_CHANGED,
            triggers=("order.status_changed",),
            data={
                "document": "order",
                "number": "0000-000008",
                "status": "КОтгрузке",
                "shipment_requested": True,
                "paid": True,
            },
            expect=[],
        ),
        id="paid-order-ships",
    ),
    pytest.param(
        Case(
            "money-do-not-ship-unpaid",
            "EXECUTING",
            {"UF_CRM_PAYMENT_DUE": "2026-12-10T00:00:00+03:00"},
            pipeline="0",
            kind=EventKind.ORDER_STATUS_CHANGED,
            triggers=("order.status_changed",),
            data={
                "document": "order",
                "number": "0000-000009",
                "status": "КОтгрузке",
                "shipment_requested": True,
                "paid": False,
            },
            expect=[],
        ),
        id="deferral-agreed-order-not-stopped",
    ),
    pytest.param(
        Case(
            "money-deferred-payment-control",
            "EXECUTING",
            {"UF_CRM_PAYMENT_DUE": "2026-12-10T00:00:00+03:00"},
            pipeline="0",
            kind=EventKind.ORDER_STATUS_CHANGED,
            triggers=("order.status_changed",),
            data={
                "document": "order",
                "number": "0000-000009",
                "status": "КОтгрузке",
                "shipment_requested": True,
                "paid": False,
            },
            expect=[
                (
                    "task",
                    "Получить оплату по отсрочке до 2026-12-10: заказ 0000-000009",
                    "17",
                    "2026-12-10 00:00",
                    "normal",
                ),
                ("comment", "Заказ 0000-000009 отгружен с отсрочкой платежа до 2026-12-10."),
            ],
        ),
        id="deferred-order-shipped-payment-task-at-the-agreed-date",
    ),
    pytest.param(
        Case(
            "money-deferred-payment-control",
            "EXECUTING",
            pipeline="0",
            kind=EventKind.ORDER_STATUS_CHANGED,
            triggers=("order.status_changed",),
            data={
                "document": "order",
                "number": "0000-000007",
                "status": "КОтгрузке",
                "shipment_requested": True,
                "paid": False,
            },
            expect=[],
        ),
        id="no-deferral-no-payment-task",
    ),
    pytest.param(
        Case(
            "money-deferred-payment-overdue",
            "WON",
            {
                "UF_CRM_PAYMENT_DUE": "2026-11-23T00:00:00+03:00",
                "UF_CRM_1C_ORDER": "0000-000009",
                "UF_CRM_PAID_TOTAL": "5000",
            },
            pipeline="0",
            outcome="won",
            kind=EventKind.SCHEDULE,
            triggers=("schedule",),
            data={"schedule": "money-deferred-payment-overdue"},
            expect=[
                ("task", "Просрочена оплата по отсрочке: Заявка Иванова", "5", None, "high"),
                ("comment", "Согласованная дата оплаты 2026-11-23 прошла, оплаты нет."),
                (
                    "task",
                    "Дебиторская задолженность: оплата по отсрочке просрочена: Заявка Иванова",
                    "8",
                    "2026-11-26 10:00",
                    "normal",
                ),
            ],
        ),
        id="deferral-overdue-head-and-accountant-told",
    ),
    pytest.param(
        Case(
            "money-deferred-payment-overdue",
            "WON",
            {
                "UF_CRM_PAYMENT_DUE": "2026-11-23T00:00:00+03:00",
                "UF_CRM_1C_ORDER": "0000-000009",
                "UF_CRM_PAID_IN_FULL": "Y",
            },
            pipeline="0",
            outcome="won",
            kind=EventKind.SCHEDULE,
            triggers=("schedule",),
            data={"schedule": "money-deferred-payment-overdue"},
            expect=[],
        ),
        id="deferral-paid-in-full-not-overdue",
    ),
    pytest.param(
        Case(
            "money-closing-documents",
            "WON",
            pipeline="0",
            outcome="won",
            triggers=("deal.stage_changed",),
            now=msk(2026, 11, 27, 15, 0),
            expect=[
                ("deadline", "closing-documents", "2026-12-04 15:00"),
                (
                    "task",
                    "Подготовить, подписать и передать в бухгалтерию закрывающие документы: Заявка Иванова",
                    "17",
                    "2026-12-04 15:00",
                    "normal",
                ),
            ],
        ),
        id="sale-won-closing-documents-within-5-working-days",
    ),
    pytest.param(
        Case(
            "money-closing-documents",
            "WON",
            {"UF_CRM_CLOSING_DOCS": "Y"},
            pipeline="0",
            outcome="won",
            triggers=("deal.stage_changed",),
            expect=[],
        ),
        id="closing-documents-already-with-accounting",
    ),
    pytest.param(
        Case(
            "money-closing-documents-late",
            "WON",
            pipeline="0",
            outcome="won",
            kind=EventKind.TIMER_DUE,
            triggers=("deadline.breached",),
            data={
                "deadline": "closing-documents",
                "phase": "breached",
                "due_at": "2026-11-25T10:00:00+03:00",
                "responsible_id": "17",
            },
            expect=[
                ("breach", "closing-documents", "17"),
                (
                    "task",
                    "Закрывающие документы не переданы в бухгалтерию за 5 рабочих дней: Заявка Иванова",
                    "8",
                    None,
                    "high",
                ),
                ("comment", "Закрывающие документы просрочены; ответственный: 17."),
            ],
        ),
        id="closing-documents-late-escalated-to-the-accountant",
    ),
    pytest.param(
        Case(
            "money-counterparty-from-card",
            "PREPAYMENT_INVOICE",
            {"UF_CRM_COMPANY": "Лютик ООО", "UF_CRM_INN": "7809876543", "UF_CRM_PHONE": "+7 812 000"},
            pipeline="0",
            triggers=("deal.stage_changed",),
            expect=[("counterparty", "onec", "Лютик ООО", "7809876543", "+7 812 000")],
        ),
        id="counterparty-created-in-1c",
    ),
    pytest.param(
        Case(
            "money-counterparty-from-card",
            "PREPAYMENT_INVOICE",
            {"UF_CRM_COMPANY": "Лютик ООО", "UF_CRM_1C_REF": "5f1e…"},
            pipeline="0",
            triggers=("deal.stage_changed",),
            expect=[],
        ),
        id="counterparty-already-in-1c",
    ),
    pytest.param(
        Case(
            "money-order-status-disagrees-with-stage",
            "PREPARATION",
            {"UF_CRM_1C_ORDER": "0000-000007", "UF_CRM_1C_ORDER_STATUS": "КОтгрузке"},
            pipeline="0",
            changes={"UF_CRM_1C_ORDER_STATUS": ("КОбеспечению", "КОтгрузке")},
            expect=[
                (
                    "task",
                    "Статус заказа в 1С не совпадает с этапом сделки: Заявка Иванова",
                    "17",
                    "2026-11-25 14:00",
                    "normal",
                ),
            ],
        ),
        id="order-to-ship-but-deal-at-the-proposal-flagged",
    ),
    pytest.param(
        Case(
            "money-order-status-disagrees-with-stage",
            "NEW",
            {"UF_CRM_1C_ORDER": "0000-000007", "UF_CRM_1C_ORDER_STATUS": "КОбеспечению"},
            pipeline="0",
            triggers=("deal.updated", "deal.stage_changed"),
            changes={"stage": ("EXECUTING", "NEW")},
            expect=[
                (
                    "task",
                    "Статус заказа в 1С не совпадает с этапом сделки: Заявка Иванова",
                    "17",
                    "2026-11-25 14:00",
                    "normal",
                ),
            ],
        ),
        id="deal-moved-back-behind-its-1c-order-flagged",
    ),
    pytest.param(
        Case(
            "money-order-status-disagrees-with-stage",
            "EXECUTING",
            {"UF_CRM_1C_ORDER": "0000-000007", "UF_CRM_1C_ORDER_STATUS": "КОтгрузке"},
            pipeline="0",
            changes={"UF_CRM_1C_ORDER_STATUS": ("КОбеспечению", "КОтгрузке")},
            expect=[],
        ),
        id="order-status-agrees-with-the-stage",
    ),
    pytest.param(
        Case(
            "money-order-from-deal",
            "PREPAYMENT_INVOICE",
            {
                "UF_CRM_COMPANY": "Ромашка ООО",
                "UF_CRM_INN": "7701234567",
                "UF_CRM_SUBJECT": "кирпич облицовочный",
                "UF_CRM_DELIVERY_CITY": "Тверь",
                "UF_CRM_PHONE": "+7 495 000-00-00",
                "UF_CRM_SHIP_BY": "2026-12-01",
            },
            pipeline="0",
            amount=Decimal("120000"),
            triggers=("deal.stage_changed",),
            changes={"stage": ("PREPARATION", "PREPAYMENT_INVOICE")},
            expect=[
                (
                    "order",
                    "onec",
                    "7701234567",
                    "Ромашка ООО",
                    "120000",
                    "2026-12-01",
                    "Сделка #42: Заявка Иванова. Тема: кирпич облицовочный. Город доставки: Тверь. "
                    "Телефон: +7 495 000-00-00.",
                )
            ],
        ),
        id="invoiced-deal-order-created-in-1c-from-the-card",
    ),
    pytest.param(
        Case(
            "money-order-from-deal",
            "PREPAYMENT_INVOICE",
            {"UF_CRM_COMPANY": "Ромашка ООО", "UF_CRM_1C_ORDER": "0000-000007"},
            pipeline="0",
            amount=Decimal("120000"),
            triggers=("deal.stage_changed",),
            changes={"stage": ("PREPARATION", "PREPAYMENT_INVOICE")},
            expect=[],
        ),
        id="deal-with-a-1c-order-gets-no-second",
    ),
    pytest.param(
        Case(
            "money-order-from-deal",
            "PREPAYMENT_INVOICE",
            {"UF_CRM_COMPANY": "Ромашка ООО"},
            pipeline="0",
            triggers=("deal.stage_changed",),
            changes={"stage": ("PREPARATION", "PREPAYMENT_INVOICE")},
            expect=[],
        ),
        id="deal-without-a-sum-gets-no-order",
    ),
]


@pytest.mark.parametrize("case", MONEY)
def test_money_in_1c(case: Case) -> None:
    cfg = load_config(EXAMPLES / "money-in-1c.yaml", ENV)
    assert run(cfg, case) == case.expect


PD_FULL = {
    "org_id": "3",
    "person_id": "5",
    "a" * 36 + "0001": "закупщик",
    "a" * 36 + "0002": "+380 44 000 00 00",
    "a" * 36 + "0003": "p@romashka.ua",
    "a" * 36 + "0004": "Киев",
}
# Seed 002's team works from Kyiv, 10:00-19:00 there (11:00-20:00 in Moscow, where the
# moments below are written): a Wednesday at 11:00 Kyiv time.
PD_NOW = msk(2026, 11, 25, 12, 0)
PD_CREATED = msk(2026, 11, 25, 11, 30)
PIPEDRIVE = [
    pytest.param(
        Case(
            "pd-new-lead",
            "1",
            PD_FULL,
            crm="pd",
            now=PD_NOW,
            created=PD_CREATED,
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            expect=[
                ("deadline", "proposal", "2026-11-26 11:30"),
                ("task", "Позвонить клиенту: Заявка Иванова", "17", "2026-11-26 12:00", "normal"),
            ],
        ),
        id="pd-new-lead-proposal-deadline-and-call",
    ),
    pytest.param(
        # 4 November is a public holiday in Russia, a working day for the team in Kyiv.
        Case(
            "pd-new-lead",
            "1",
            PD_FULL,
            crm="pd",
            now=msk(2026, 11, 3, 12, 0),
            created=msk(2026, 11, 3, 12, 0),
            kind=EventKind.DEAL_CREATED,
            triggers=("deal.created",),
            expect=[
                ("deadline", "proposal", "2026-11-04 12:00"),
                ("task", "Позвонить клиенту: Заявка Иванова", "17", "2026-11-04 12:00", "normal"),
            ],
        ),
        id="pd-ukrainian-calendar-not-the-russian-holidays",
    ),
    pytest.param(
        # An online-event day is worked 15:00-23:00 Kyiv time: 4 working hours from 16:00 end at 20:00.
        Case(
            "pd-required-fields",
            "1",
            {**PD_FULL, "a" * 36 + "0004": ""},
            crm="pd",
            now=msk(2026, 12, 10, 17, 0),
            created=msk(2026, 12, 10, 17, 0),
            triggers=("deal.created",),
            expect=[("task", "Заполните карточку сделки: Заявка Иванова", "17", "2026-12-10 21:00", "normal")],
        ),
        id="pd-event-day-worked-15-to-23",
    ),
    pytest.param(
        Case(
            "pd-proposal-breached",
            "1",
            crm="pd",
            now=PD_NOW,
            created=PD_CREATED,
            kind=EventKind.TIMER_DUE,
            triggers=("deadline.breached",),
            data={"deadline": "proposal", "phase": "breached", "due_at": "2026-11-25T11:30:00+03:00"},
            expect=[
                ("breach", "proposal", "17"),
                ("task", "КП не отправлено в срок: Заявка Иванова", "20", None, "high"),
            ],
        ),
        id="pd-proposal-breach-escalated",
    ),
    pytest.param(
        Case(
            "pd-required-fields",
            "1",
            {**PD_FULL, "a" * 36 + "0004": ""},
            crm="pd",
            now=PD_NOW,
            created=PD_CREATED,
            triggers=("deal.created",),
            expect=[("task", "Заполните карточку сделки: Заявка Иванова", "17", "2026-11-25 16:00", "normal")],
        ),
        id="pd-required-fields-missing",
    ),
    pytest.param(
        Case(
            "pd-required-fields",
            "7",
            {},
            crm="pd",
            now=PD_NOW,
            created=PD_CREATED,
            pipeline="2",
            triggers=("deal.created",),
            expect=[],
        ),
        id="pd-required-fields-not-on-another-pipeline",
    ),
    pytest.param(
        Case(
            "pd-payment-date",
            "4",
            PD_FULL,
            crm="pd",
            now=PD_NOW,
            created=PD_CREATED,
            triggers=("deal.stage_changed",),
            expect=[
                (
                    "task",
                    "Уточните дату оплаты и следующий шаг (звонок-напоминание, счёт): Заявка Иванова",
                    "17",
                    "2026-11-25 16:00",
                    "normal",
                )
            ],
        ),
        id="pd-payment-date-asked-for",
    ),
    pytest.param(
        Case(
            "pd-payment-date",
            "4",
            {**PD_FULL, "expected_close_date": "2026-12-15"},
            crm="pd",
            now=PD_NOW,
            created=PD_CREATED,
            triggers=("deal.stage_changed",),
            expect=[],
        ),
        id="pd-payment-date-known",
    ),
    pytest.param(
        Case(
            "pd-care-hands-back",
            "5",
            {"a" * 36 + "0006": "хочет второй тираж"},
            crm="pd",
            now=PD_NOW,
            created=PD_CREATED,
            outcome="won",
            changes={"a" * 36 + "0006": (None, "хочет второй тираж")},
            expect=[("task", "Новая продажа от отдела заботы: Заявка Иванова", "17", "2026-11-26 12:00", "normal")],
        ),
        id="pd-care-hands-a-new-sale-back",
    ),
    pytest.param(
        Case(
            "pd-lost-needs-detailed-reason",
            "4",
            {"lost_reason": "дорого"},
            crm="pd",
            now=PD_NOW,
            created=PD_CREATED,
            outcome="lost",
            triggers=("deal.stage_changed",),
            expect=[
                ("update", {"status": "open"}),
                ("task", "Подробно опишите причину проигрыша: Заявка Иванова", "17", "2026-11-25 16:00", "normal"),
            ],
        ),
        id="pd-lost-with-a-vague-reason-reopened",
    ),
    pytest.param(
        Case(
            "pd-lost-needs-detailed-reason",
            "4",
            {"lost_reason": "Выбрали поставщика с доставкой завтра"},
            crm="pd",
            now=PD_NOW,
            created=PD_CREATED,
            outcome="lost",
            triggers=("deal.stage_changed",),
            expect=[
                # A detailed reason, but no answer about future cooperation (S002.16).
                ("update", {"status": "open"}),
                ("task", "Подробно опишите причину проигрыша: Заявка Иванова", "17", "2026-11-25 16:00", "normal"),
            ],
        ),
        id="pd-lost-without-the-future-cooperation-answer-reopened",
    ),
    pytest.param(
        Case(
            "pd-lost-needs-detailed-reason",
            "4",
            {"lost_reason": "Выбрали поставщика с доставкой завтра", "a" * 36 + "0007": "Вернётся осенью"},
            crm="pd",
            now=PD_NOW,
            created=PD_CREATED,
            outcome="lost",
            triggers=("deal.stage_changed",),
            expect=[],
        ),
        id="pd-lost-with-reason-and-future-answer-stays-lost",
    ),
    pytest.param(
        Case(
            "pd-lost-needs-detailed-reason",
            "9",
            {"lost_reason": "дорого"},
            crm="pd",
            now=PD_NOW,
            created=PD_CREATED,
            pipeline="2",
            outcome="lost",
            triggers=("deal.stage_changed",),
            expect=[],
        ),
        id="pd-lost-reason-not-judged-on-another-pipeline",
    ),
    pytest.param(
        Case(
            "pd-after-payment",
            "5",
            crm="pd",
            now=PD_NOW,
            created=PD_CREATED,
            outcome="won",
            triggers=("deal.stage_changed",),
            fields={"a" * 36 + "0002": "+380 67 123 45 67"},
            responsible="31",
            amount=Decimal(50000),
            currency="UAH",
            expect=[
                ("update", {"a" * 36 + "0005": "21"}),
                ("task", "Новый клиент отдела заботы: Заявка Иванова", "21", "2026-11-26 12:00", "normal"),
                # And the care team's own Telegram chat is told (S002.18).
                (
                    "message",
                    "care_team",
                    "Новый клиент отдела заботы: Заявка Иванова — 50000 UAH. Номер клиента: +380 67 123 45 67. "
                    "Менеджер заботы: 21, менеджер по продажам: 31.",
                ),
            ],
        ),
        id="pd-after-payment-to-customer-care",
    ),
    pytest.param(
        Case(
            "pd-payment-to-shared-chat",
            "5",
            crm="pd",
            now=PD_NOW,
            created=PD_CREATED,
            outcome="won",
            triggers=("deal.stage_changed",),
            fields={"a" * 36 + "0002": "+380 67 123 45 67"},
            responsible="31",
            amount=Decimal(50000),
            currency="UAH",
            expect=[
                (
                    "message",
                    "shared_chat",
                    "Оплата: Заявка Иванова — 50000 UAH. Номер клиента: +380 67 123 45 67. Менеджер: 31. "
                    "Клиент передан в отдел заботы.",
                )
            ],
        ),
        id="pd-paid-client-number-and-amount-to-the-shared-chat",
    ),
    pytest.param(
        Case(
            "pd-payment-to-shared-chat",
            "5",
            crm="pd",
            now=PD_NOW,
            created=PD_CREATED,
            outcome="won",
            pipeline="2",
            triggers=("deal.stage_changed",),
            expect=[],
        ),
        id="pd-no-chat-message-for-another-pipeline",
    ),
]


@pytest.mark.parametrize("case", PIPEDRIVE)
def test_b2b_sales_pipedrive(case: Case) -> None:
    cfg = load_config(EXAMPLES / "b2b-sales-pipedrive.yaml", ENV)
    assert run(cfg, case) == case.expect


CATALOGUE = {
    "isp-field-service.yaml": ISP,
    "b2b-sales.yaml": B2B,
    "b2b-sales-pipedrive.yaml": PIPEDRIVE,
    "money-in-1c.yaml": MONEY,
}
# Breach / reminder rules of the same shape as one with a case are proven once (escalate,
# create_task on a deadline); each is named with the rule whose case proves its shape.
SAME_SHAPE = {
    "isp-supervisor-control": "isp-connection-breached",
    "isp-visit-update-breached": "isp-connection-breached",
    "isp-payment-breached": "isp-connection-breached",
    "isp-connect": "isp-connect-agent-first",
    "b2b-proposal-reminder": "money-unpaid-reminder",
    "money-unpaid-at-month-end": "b2b-sla-escalation",
}


def example_rules() -> dict[str, set[str]]:
    """Every rule of every example, by file (sales-planning and other examples included)."""
    return {path.name: {r.name for r in load_config(path, ENV).rules} for path in sorted(EXAMPLES.glob("*.yaml"))}


def test_every_example_rule_has_a_case() -> None:
    covered = {cast(Case, p.values[0]).rule for cases in CATALOGUE.values() for p in cases}
    assert set(SAME_SHAPE.values()) <= covered
    for name, rules in example_rules().items():
        if name not in CATALOGUE:
            continue  # an example with its own table of cases (its test module checks it)
        missing = rules - covered - set(SAME_SHAPE)
        assert not missing, f"{name}: rules without a table case: {sorted(missing)}"
    assert set(CATALOGUE) >= {"isp-field-service.yaml", "b2b-sales.yaml", "b2b-sales-pipedrive.yaml"}


def test_deadline_definitions_are_loaded() -> None:
    cfg = load_config(EXAMPLES / "isp-field-service.yaml", ENV)
    assert isinstance(cfg.deadlines["connection"], DeadlineDef)
    assert cfg.deadlines["client-payment"].due == "end_of_month"


def test_connection_deadline_rearmed_when_the_visit_is_rescheduled() -> None:
    """Client not at home: the new agreed time restarts the 3 working days from the rescheduling."""
    from rules.deadlines import OpenDeadline, review

    cfg = load_config(EXAMPLES / "isp-field-service.yaml", ENV)
    now = msk(2026, 11, 27, 12, 0)
    deal = Deal(
        crm="b24",
        id="42",
        title="Заявка Иванова",
        stage="C1:VISIT",
        pipeline="1",
        responsible_id="17",
        created_at=msk(2026, 11, 24, 10, 0),
        updated_at=now,
        fields={"UF_CRM_VISIT_RESULT": "Клиент не дома", "UF_CRM_AGREED_TIME": "2026-11-30T18:30:00+03:00"},
    )
    ctx = RuleContext(
        deal=deal,
        event=Event("b24", EventKind.DEAL_UPDATED, "42", now, "dedup-2"),
        now=now,
        triggers=frozenset({"deal.updated"}),
        changes={"UF_CRM_AGREED_TIME": (None, "2026-11-30T18:30:00+03:00")},
        calendar=WorkCalendar(country="RU", timezone="Europe/Moscow", work_hours="09:00-18:00"),
        deadlines=cfg.deadlines,
    )
    running = [OpenDeadline("connection", msk(2026, 11, 27, 10, 0), "reminded")]
    [rearmed] = review(cfg.deadlines, running, ctx)
    assert isinstance(rearmed, StartDeadline) and rearmed.rearm
    assert rearmed.due_at.astimezone(MSK) == msk(2026, 12, 2, 12, 0)


def test_generated_isp_year_leaves_at_most_one_percent_to_the_fallback_captain() -> None:
    from connector.demo.isp_history import isp_year
    from rules.territories import choose_captain

    cfg = load_config(EXAMPLES / "isp-field-service.yaml", ENV)
    created = [i.deal for i in isp_year(2026, deals=2000, seed=1) if i.kind == EventKind.DEAL_CREATED]
    fallback = [d for d in created if choose_captain(cfg.territories, d.location, {}, "1").territory is None]
    assert len(created) == 2000
    assert len(fallback) <= len(created) // 100, {d.location for d in fallback[:5]}


# Recurring work of the examples: one occurrence each, the tasks it makes (person, title, due).
RECURRING = [
    pytest.param(
        "isp-field-service.yaml",
        "isp-planning-meeting",
        msk(2026, 11, 26, 10, 0),  # Thursday, the week's second meeting
        [("7", "Планёрка супервайзеров 26.11", "2026-11-26 12:00")],
        id="isp-planning-meeting-twice-a-week-to-the-supervisors",
    ),
    pytest.param(
        "isp-field-service.yaml",
        "isp-field-check",
        msk(2026, 11, 23, 9, 0),
        [("7", "Выезд на локации: проверка работы агентов (неделя с 23.11)", "2026-11-27 18:00")],
        id="isp-field-check-weekly-to-the-supervisors",
    ),
    pytest.param(
        "isp-field-service.yaml",
        "isp-hiring-plan-to-hr",
        msk(2026, 11, 1, 10, 0),  # a Sunday: still made, due by the end of the next working day
        [("7", "Передать HR месячный план на подбор агентов (11.2026)", "2026-11-02 18:00")],
        id="isp-hiring-plan-monthly-even-when-the-1st-is-a-day-off",
    ),
    pytest.param(
        "isp-field-service.yaml",
        "isp-month-plan-decomposition",
        msk(2026, 12, 1, 9, 0),
        [("7", "Декомпозиция плана на 12.2026: заявки и подключения по неделям, дням и агентам", "2026-12-01 18:00")],
        id="isp-month-plan-decomposition-at-the-month-start",
    ),
    pytest.param(
        "isp-field-service.yaml",
        "isp-site-update",
        msk(2026, 11, 23, 10, 0),
        [("5", "Обновить соцсети и сайт: тарифы, адреса и т. д.", "2026-11-30 10:00")],
        id="isp-site-update-weekly-to-marketing",
    ),
    pytest.param(
        "sales-planning.yaml",
        "daily-operational-meeting",
        msk(2026, 11, 25, 9, 30),
        [
            ("7", "Оперативка группы 25.11: план дня и вчерашний факт", "2026-11-25 10:30"),
            ("8", "Оперативка группы 25.11: план дня и вчерашний факт", "2026-11-25 10:30"),
        ],
        id="daily-operational-meeting-to-each-team-lead",
    ),
    pytest.param(
        "sales-planning.yaml",
        "daily-operational-meeting",
        msk(2026, 11, 4, 9, 30),  # National Unity Day: no meeting
        [],
        id="no-operational-meeting-on-a-holiday",
    ),
    pytest.param(
        "sales-planning.yaml",
        "weekly-sales-meeting",
        msk(2026, 11, 27, 16, 0),
        [
            (u, "Еженедельное совещание ДККР 27.11: итоги недели, план следующей", "2026-11-27 18:00")
            for u in ("5", "7", "8")
        ],
        id="weekly-sales-meeting-head-and-team-leads",
    ),
    pytest.param(
        "sales-planning.yaml",
        "monthly-sales-meeting",
        msk(2026, 12, 7, 11, 0),  # the first Monday of December
        [
            (u, "Ежемесячное совещание ДККР 12.2026: итоги месяца, план месяца", "2026-12-07 13:00")
            for u in ("5", "7", "8")
        ],
        id="monthly-sales-meeting-first-monday",
    ),
]


@pytest.mark.parametrize(("example", "name", "occurrence", "expect"), RECURRING)
def test_example_recurring_work(example: str, name: str, occurrence: datetime, expect: list[tuple[str, ...]]) -> None:
    from rules.recurring import cron_moments, plan_occurrence

    cfg = load_config(EXAMPLES / example, ENV)
    item = next(r for r in cfg.recurring if r.name == name)
    assert cfg.calendars is not None
    calendar = cfg.calendars.default
    # The moment is one of the schedule's own.
    assert occurrence in set(cron_moments(item.schedule, occurrence - timedelta(minutes=1), occurrence, calendar))
    tasks, _ = plan_occurrence(item, occurrence, calendar, cfg.org)
    shown = [
        (
            t.task.responsible_id,
            t.task.title,
            t.task.deadline.astimezone(MSK).strftime("%Y-%m-%d %H:%M") if t.task.deadline else None,
        )
        for t in tasks
    ]
    assert shown == expect


def test_every_example_recurring_item_has_a_case() -> None:
    covered = {(p.values[0], p.values[1]) for p in RECURRING}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for item in load_config(path, ENV).recurring:
            assert (path.name, item.name) in covered, f"{path.name}: recurring {item.name} has no case"


class PipedriveDay(FactSource):
    """What Pipedrive logged on Wednesday 2 December 2026 (Kyiv): manager 31 made 40 contacts
    and one sale; manager 32 made 25 contacts."""

    def read_facts(self, since: datetime, until: datetime) -> Iterator[Fact]:
        at = datetime(2026, 12, 2, 12, tzinfo=ZoneInfo("Europe/Kyiv"))
        for n in range(30):
            yield Fact("activity", f"c{n}", "31", at=at, type="call")
        for n in range(10):
            yield Fact("activity", f"e{n}", "31", at=at, type="email")
        yield Fact("deal", "d1", "31", at=at, created_at=at, status="won", amount=Decimal(18_000))
        for n in range(25):
            yield Fact("activity", f"k{n}", "32", at=at, type="call")
        yield Fact("activity", "t1", "32", at=at, type="task")  # a to-do is not a contact


def test_pipedrive_day_plan_of_40_contacts_shortfall_to_the_head_of_sales(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Seed 002: «40 дозвонов/переписок в день», the plan set by the head of sales, checked daily."""
    from connector.storage.store import Store
    from jobs.plan_report import run_plan_report
    from jobs.plans import load_plans
    from rules.periods import parse_period
    from rules.plans import PlanBook

    monkeypatch.chdir(tmp_path)
    cfg = load_config(EXAMPLES / "b2b-sales-pipedrive.yaml", ENV)
    assert cfg.calendars is not None
    calendar = cfg.calendars.default
    teams = cfg.teams_for("pd")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        loaded = load_plans(store, EXAMPLES / "b2b-sales-pipedrive-plans.csv", cfg, datetime(2026, 11, 30, tzinfo=UTC))
        assert loaded.problems == []
        book = PlanBook(store.plans.all(), calendar, teams)
        assert book.person("31", "contacts", parse_period("2026-12-02")) == 40
        assert book.person("32", "contacts", parse_period("2027-01-13")) == 40
        report = next(r for r in cfg.reports if r.name == "pd-daily-plan")
        thursday = datetime(2026, 12, 3, 10, tzinfo=ZoneInfo("Europe/Kyiv"))
        queued = run_plan_report(store, report, thursday, calendar, PipedriveDay(), cfg.indicators, teams)
        assert queued == 3  # each manager their own, and one task to the head of sales for manager 32
        texts = _report_texts(store, report.name)
        assert "Дозвоны и переписки с клиентами 40/40 (100%)" in texts["31"]
        assert "Дозвоны и переписки с клиентами 40/25 (62%)" in texts["32"]
        assert run_plan_report(store, report, thursday, calendar, PipedriveDay(), cfg.indicators, teams) == 0
        kept = (tmp_path / "reports" / "pd-daily-plan-2026-12-02.csv").read_text(encoding="utf-8")
        assert "2026-12-02,person,32,sales,contacts,40,25,62" in kept
    finally:
        store.close()


def test_pipedrive_weekly_and_monthly_progress_per_manager(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Seed 002: «можно отследить свой прогресс по текущей неделе и месяцу»."""
    from connector.storage.store import Store
    from jobs.plan_report import run_plan_report
    from jobs.plans import load_plans

    monkeypatch.chdir(tmp_path)
    cfg = load_config(EXAMPLES / "b2b-sales-pipedrive.yaml", ENV)
    assert cfg.calendars is not None
    calendar = cfg.calendars.default
    teams = cfg.teams_for("pd")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        assert (
            load_plans(
                store, EXAMPLES / "b2b-sales-pipedrive-plans.csv", cfg, datetime(2026, 11, 30, tzinfo=UTC)
            ).problems
            == []
        )
        weekly = next(r for r in cfg.reports if r.name == "pd-weekly-progress")
        monday = datetime(2026, 12, 7, 10, tzinfo=ZoneInfo("Europe/Kyiv"))
        assert run_plan_report(store, weekly, monday, calendar, PipedriveDay(), cfg.indicators, teams) == 2
        # Week 49 starts on 30 November, before the first plan: four December days of 40.
        assert "Дозвоны и переписки с клиентами 160/40 (25%)" in _report_texts(store, "pd-weekly-progress")["31"]
        monthly = next(r for r in cfg.reports if r.name == "pd-monthly-progress")
        january = datetime(2027, 1, 4, 10, tzinfo=ZoneInfo("Europe/Kyiv"))
        assert run_plan_report(store, monthly, january, calendar, PipedriveDay(), cfg.indicators, teams) == 2
        assert "Дозвоны и переписки с клиентами 920/25 (3%)" in _report_texts(store, "pd-monthly-progress")["32"]
        assert (tmp_path / "reports" / "pd-monthly-progress-2026-12.csv").exists()
    finally:
        store.close()


def _report_texts(store: Any, report_name: str) -> dict[str, str]:
    """The texts a report queued as tasks, by recipient (what the CRM will show each one)."""
    from sqlalchemy import select

    from connector.storage.models import OutboxRow
    from connector.storage.outbox import command_of
    from domain.keys import report_rule

    with store.sessions() as s:
        rows = s.scalars(select(OutboxRow).where(OutboxRow.rule == report_rule(report_name))).all()
        tasks = [command_of(row) for row in rows]
    return {t.responsible_id: t.description for t in tasks if isinstance(t, CreateTask)}


class BitrixNovember(FactSource):
    """What Bitrix24 logged in November 2026: manager 17 won two orders, one offered 2 hours
    after the application and one after 3 days; manager 18 won one."""

    def read_facts(self, since: datetime, until: datetime) -> Iterator[Fact]:
        def stage(deal: str, name: str, at: datetime) -> Fact:
            return Fact("stage", f"{deal}-{name}", "17", at=at, stage=name, deal_id=deal)

        yield stage("d1", "NEW", msk(2026, 11, 10, 10, 0))
        yield stage("d1", "PREPARATION", msk(2026, 11, 10, 12, 0))
        yield stage("d2", "NEW", msk(2026, 11, 16, 10, 0))
        yield stage("d2", "PREPARATION", msk(2026, 11, 19, 10, 0))
        won = msk(2026, 11, 20, 15, 0)
        yield Fact("deal", "d1", "17", at=won, created_at=won, status="won", amount=Decimal(120_000))
        yield Fact("deal", "d2", "17", at=won, created_at=won, status="won", amount=Decimal(80_000))
        yield Fact("deal", "d3", "18", at=won, created_at=won, status="won", amount=Decimal(50_000))


def test_b2b_monthly_orders_for_payroll_per_manager(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Seed 004: completed orders per manager for payroll, and the time from application to offer."""
    from connector.storage.store import Store
    from jobs.plan_report import run_plan_report

    monkeypatch.chdir(tmp_path)
    cfg = load_config(EXAMPLES / "b2b-sales.yaml", ENV)
    assert cfg.calendars is not None
    report = next(r for r in cfg.reports if r.name == "b2b-monthly-orders-for-payroll")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        args = (cfg.calendars.default, BitrixNovember(), cfg.indicators, cfg.teams_for("b24"))
        assert run_plan_report(store, report, msk(2026, 12, 1, 9, 0), *args) == 1  # its first working day
        assert run_plan_report(store, report, msk(2026, 12, 1, 12, 0), *args) == 0  # once
        texts = _report_texts(store, report.name)
        assert list(texts) == ["5"]  # the head of sales
        assert (
            "user 17 (sales): Выполненные заказы —/2; Сумма выполненных заказов —/200000; Дней от заявки до КП —/1.5"
            in texts["5"]
        )
        kept = (tmp_path / "reports" / "b2b-monthly-orders-for-payroll-2026-11.csv").read_text(encoding="utf-8")
        assert "2026-11,person,18,sales,orders_done,,1," in kept
    finally:
        store.close()


class BitrixReactionWeek(FactSource):
    """Week 48 of 2026 (23-29 November) as Bitrix24 logged it, with the moments the connector
    stamped: manager 17 answered two applications in 1.5 and 2.5 hours and a status question
    in 4 hours; manager 18 an application in half an hour, and a status question asked on
    Friday was answered only the next Wednesday (outside the week, so not counted)."""

    def read_facts(self, since: datetime, until: datetime) -> Iterator[Fact]:
        def deal(id_: str, user: str, created: datetime, **moments: datetime) -> Fact:
            fields = {k: v.isoformat() for k, v in moments.items()}
            return Fact("deal", id_, user, created_at=created, status="open", deal_id=id_, fields=fields)

        yield deal("d1", "17", msk(2026, 11, 23, 10, 0), UF_CRM_FIRST_RESPONSE_AT=msk(2026, 11, 23, 11, 30))
        yield deal("d2", "17", msk(2026, 11, 24, 10, 0), UF_CRM_FIRST_RESPONSE_AT=msk(2026, 11, 24, 12, 30))
        yield deal("d3", "18", msk(2026, 11, 25, 10, 0), UF_CRM_FIRST_RESPONSE_AT=msk(2026, 11, 25, 10, 30))
        yield deal(
            "d4",
            "17",
            msk(2026, 10, 1, 10, 0),
            UF_CRM_STATUS_ASKED_AT=msk(2026, 11, 26, 10, 0),
            UF_CRM_STATUS_ANSWERED_AT=msk(2026, 11, 26, 14, 0),
        )
        yield deal(
            "d5",
            "18",
            msk(2026, 10, 1, 10, 0),
            UF_CRM_STATUS_ASKED_AT=msk(2026, 11, 27, 10, 0),
            UF_CRM_STATUS_ANSWERED_AT=msk(2026, 12, 2, 10, 0),
        )


def test_b2b_weekly_reaction_times_per_manager(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Seed 004: the time to the first response on an application and to the answer about its
    status, per manager, plan against fact, to the head of sales each week."""
    from connector.storage.store import Store
    from jobs.plan_report import run_plan_report

    monkeypatch.chdir(tmp_path)
    cfg = load_config(EXAMPLES / "b2b-sales.yaml", ENV)
    assert cfg.calendars is not None
    report = next(r for r in cfg.reports if r.name == "b2b-reaction-times")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        args = (cfg.calendars.default, BitrixReactionWeek(), cfg.indicators, cfg.teams_for("b24"))
        assert run_plan_report(store, report, msk(2026, 11, 30, 9, 0), *args) == 1  # Monday after the week
        texts = _report_texts(store, report.name)
        assert list(texts) == ["5"]  # the head of sales
        assert (
            "user 17 (sales): Часов до первого ответа на заявку —/2; Часов до ответа клиенту о статусе заявки —/4"
            in texts["5"]
        )
        assert (
            "user 18 (sales): Часов до первого ответа на заявку —/0.5; Часов до ответа клиенту о статусе заявки —/—"
            in texts["5"]
        )
        assert (
            "total: Часов до первого ответа на заявку —/1.5; Часов до ответа клиенту о статусе заявки —/4" in texts["5"]
        )
    finally:
        store.close()
