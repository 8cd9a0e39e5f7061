"""examples/sales-planning.yaml (seed 003): its stage rules case by case, its plan file through the
cascade, its reports' due dates, the monthly report to the CEO run through the job, and dry-run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from adapters.contracts import FactSource
from connector.cli import main
from connector.config import Config, load_config
from connector.storage.store import Store
from domain import AddComment, CreateTask, Deal, Event, EventKind, UpdateDeal
from domain.errors import RetriableError
from domain.facts import Fact
from jobs.plan_report import run_plan_report
from jobs.plans import load_plans
from rules.calendar import WorkCalendar
from rules.engine import evaluate
from rules.model import RuleContext
from rules.periods import due_date, parse_period
from rules.plans import PlanBook, parse_plan_file
from rules.templates import Template

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "sales-planning.yaml"
PLANS = ROOT / "examples" / "sales-planning-plans.csv"
ENV = {"B24_WEBHOOK_URL": "https://portal.bitrix24.ru/rest/1/code/", "B24_APP_TOKEN": "app-token-123"}
MSK = ZoneInfo("Europe/Moscow")
CAL = WorkCalendar()


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(EXAMPLE, ENV)


def _run(cfg: Config, rule: str, stage: str, fields: dict[str, Any]) -> list[tuple[str, ...]]:
    """``stage`` is the stage moved to, from C2:COLD, or ``FROM>TO``."""
    from_stage, _, to_stage = stage.rpartition(">")
    from_stage = from_stage or "C2:COLD"
    now = datetime(2026, 3, 4, 11, tzinfo=MSK)  # Wednesday
    deal = Deal("b24", "42", title="ООО Ромашка", stage=to_stage, pipeline="2", responsible_id="11", fields=fields)
    ctx = RuleContext(
        deal=deal,
        event=Event("b24", EventKind.DEAL_UPDATED, "42", now, "d-1"),
        now=now,
        triggers=frozenset({"deal.updated", "deal.stage_changed"}),
        changes={"stage": (from_stage, to_stage)},
        calendar=CAL,
    )
    out: list[tuple[str, ...]] = []
    for decision in evaluate([r for r in cfg.rules if r.name == rule], ctx):
        action = decision.action
        if isinstance(action, CreateTask):
            due = action.deadline.astimezone(MSK).strftime("%Y-%m-%d %H:%M") if action.deadline else ""
            out.append(("task", action.title, action.responsible_id, due))
        elif isinstance(action, AddComment):
            out.append(("comment", action.text[:40]))
        elif isinstance(action, UpdateDeal):
            out.append(("move", str(action.values.get("stage"))))
    return out


CASES = [
    ("ladder-proposal-regardless", "C2:LPR", {}, [("task", "Отправить КП ЛПР: ООО Ромашка", "11", "2026-03-05 11:00")]),
    (
        "ladder-proposal-regardless",
        "C2:MEETING_SET",
        {},
        [("task", "Отправить КП ЛПР: ООО Ромашка", "11", "2026-03-05 11:00")],
    ),
    ("ladder-proposal-regardless", "C2:LPR", {"UF_CRM_PROPOSAL_SENT": "2026-03-03"}, []),
    ("ladder-proposal-regardless", "C2:MEETING", {}, []),
    (
        "ladder-meeting-protocol",
        "C2:MEETING",
        {},
        [("task", "Оформить протокол встречи и согласовать с ЛПР: ООО Ромашка", "11", "2026-03-05 11:00")],
    ),
    (
        "ladder-no-protocol",
        "C2:MEETING>C2:PLAN",
        {},
        [
            ("move", "C2:MEETING"),
            ("comment", "Сделка возвращена на этап C2:MEETING: не"),
            ("task", "Нет протокола встречи: ООО Ромашка", "11", "2026-03-05 11:00"),
        ],
    ),
    ("ladder-no-protocol", "C2:TENDER", {"UF_CRM_PROTOCOL": "https://disk/protocol.pdf"}, []),
    (
        "ladder-meeting-before-plan",
        "C2:PROPOSAL>C2:PLAN",
        {"UF_CRM_PROTOCOL": "x"},
        [
            ("move", "C2:PROPOSAL"),
            ("comment", "Сделка возвращена на этап C2:PROPOSAL: п"),
            ("task", "Провести встречу с ЛПР: ООО Ромашка", "11", "2026-03-05 11:00"),
        ],
    ),
    ("ladder-meeting-before-plan", "C2:MEETING>C2:PLAN", {"UF_CRM_PROTOCOL": "x"}, []),
    ("ladder-meeting-before-plan", "C2:PLAN>C2:MEETING", {}, []),  # moving back is allowed
    (
        "ladder-lpr-contacts",
        "C2:COLD>C2:LPR",
        {"UF_CRM_LPR_NAME": "Иванов Иван Иванович"},
        [
            ("move", "C2:COLD"),
            ("comment", "Сделка возвращена на этап C2:COLD: не за"),
            ("task", "Заполнить ФИО и телефон ЛПР: ООО Ромашка", "11", "2026-03-05 11:00"),
        ],
    ),
    (
        "ladder-lpr-contacts",
        "C2:COLD>C2:LPR",
        {"UF_CRM_LPR_NAME": "Иванов Иван Иванович", "UF_CRM_LPR_PHONE": "+7 831 000-00-00"},
        [],
    ),
    (
        "ladder-call-lpr",
        "C2:LPR",
        {},
        [("task", "Позвонить ЛПР и договориться о встрече: ООО Ромашка", "11", "2026-03-05 11:00")],
    ),
    ("ladder-call-lpr", "C2:PROPOSAL", {}, []),
    (
        "ladder-lpr-call-outcome",
        "C2:LPR>C2:PROPOSAL",
        {},
        [
            ("move", "C2:LPR"),
            ("comment", "Сделка возвращена на этап C2:LPR: не зап"),
            ("task", "Записать итог звонка ЛПР: ООО Ромашка", "11", "2026-03-05 11:00"),
        ],
    ),
    (
        "ladder-lpr-call-outcome",
        "C2:LPR>C2:MEETING_SET",
        {},
        [
            ("move", "C2:LPR"),
            ("comment", "Сделка возвращена на этап C2:LPR: не зап"),
            ("task", "Записать итог звонка ЛПР: ООО Ромашка", "11", "2026-03-05 11:00"),
        ],
    ),
    ("ladder-lpr-call-outcome", "C2:LPR>C2:PROPOSAL", {"UF_CRM_LPR_CALL_RESULT": "refused"}, []),
    ("ladder-lpr-call-outcome", "C2:LPR>C2:MEETING_SET", {"UF_CRM_LPR_CALL_RESULT": "agreed"}, []),
    ("ladder-lpr-call-outcome", "C2:COLD>C2:LPR", {}, []),  # the call to the decision maker is still ahead
    (
        "ladder-won-without-contract",
        "C2:PLAN>C2:WON",
        {"UF_CRM_PROTOCOL": "x"},
        [
            ("move", "C2:PLAN"),
            ("comment", "Сделка возвращена на этап C2:PLAN: выигр"),
            ("task", "Приложить подписанный договор или гарантийное письмо: ООО Ромашка", "11", "2026-03-05 11:00"),
        ],
    ),
    ("ladder-won-without-contract", "C2:WON", {"UF_CRM_CONTRACT": "https://disk/contract.pdf"}, []),
]


@pytest.mark.parametrize(("rule", "stage", "fields", "expected"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_sales_ladder_rules(cfg: Config, rule: str, stage: str, fields: dict[str, Any], expected: list[Any]) -> None:
    assert _run(cfg, rule, stage, fields) == expected


def test_every_rule_of_the_example_has_a_case(cfg: Config) -> None:
    assert {r.name for r in cfg.rules} == {c[0] for c in CASES}


def test_the_plan_file_loads_and_cascades_to_the_daily_norm(cfg: Config) -> None:
    entries, problems = parse_plan_file(
        PLANS.read_text(encoding="utf-8"), fmt="csv", indicators=cfg.indicators, teams=cfg.teams_for("b24")
    )
    assert problems == []
    book = PlanBook(entries, CAL, cfg.teams_for("b24"))
    # 840 calls in March's 21 working days: 40 a day; manager 11 has 50 on the 2nd, so 39.5 on the others.
    assert book.person("12", "cold_calls", parse_period("2026-03-03")) == 40
    assert book.person("11", "cold_calls", parse_period("2026-03-02")) == 50
    assert book.person("11", "cold_calls", parse_period("2026-03-03")) == Decimal("39.5")
    # A team's year is split over the months without one (10.5 M written for March).
    assert book.team("group-1", "turnover", parse_period("2026-03")) == 10_500_000
    assert book.team("group-1", "turnover", parse_period("2026")) == 120_000_000
    # A quarter's contracts, March's share by working days (15 + 19 + 21 = 55 in Q1).
    assert book.team("group-1", "new_contracts", parse_period("2026-03")) == Decimal("9.1636")
    assert book.everyone("meetings", parse_period("2026-W10")) == 35


@pytest.mark.parametrize(
    ("report", "period", "due"),
    [
        ("monthly-to-ceo", "2026-03", "2026-04-03"),  # the 5th is a Sunday
        ("monthly-to-ceo", "2026-10", "2026-11-05"),
        ("monthly-to-ceo", "2026-12", "2027-01-11"),  # the New Year holidays run past the 5th
        ("quarterly-to-ceo", "2026-Q1", "2026-04-10"),
        ("weekly-team-check", "2026-W10", "2026-03-10"),  # Monday 9 March is a holiday
        ("daily-plan", "2026-03-06", "2026-03-10"),
        ("monthly-team-decisions", "2026-03", "2026-04-03"),
        ("yearly-review", "2026", "2027-01-11"),
    ],
)
def test_report_due_dates(cfg: Config, report: str, period: str, due: str) -> None:
    definition = next(r for r in cfg.reports if r.name == report)
    assert due_date(parse_period(period), definition.by, CAL).isoformat() == due


class FakeFacts(FactSource):
    """What the CRM logged in March 2026."""

    def __init__(self) -> None:
        self.windows: list[tuple[datetime, datetime]] = []

    def read_facts(self, since: datetime, until: datetime) -> Iterator[Fact]:
        self.windows.append((since, until))
        at = datetime(2026, 3, 20, 9, tzinfo=UTC)
        yield Fact("deal", "1", "11", at=at, created_at=at, status="won", amount=Decimal(4_000_000),
                   fields={"UF_CRM_CLIENT_KIND": "new"})  # fmt: skip
        yield Fact("deal", "2", "21", at=at, created_at=at, status="won", amount=Decimal(2_500_000),
                   fields={"UF_CRM_CLIENT_KIND": "current", "UF_CRM_CROSS_SALE": "Y"})  # fmt: skip
        yield Fact("deal", "3", "12", created_at=at, status="open", fields={"UF_CRM_CLIENT_KIND": "new"})
        for _ in range(30):
            yield Fact("activity", "c", "12", at=at, type="call", deal_id="3", fields={"DIRECTION": "2"})
        # An outgoing call to a current client is no cold call.
        yield Fact("activity", "c", "12", at=at, type="call", deal_id="2", fields={"DIRECTION": "2"})


def test_the_monthly_report_to_the_ceo_runs_once_on_the_3rd(cfg: Config, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        assert load_plans(store, PLANS, cfg, datetime(2026, 3, 1, tzinfo=UTC)).problems == []
        report = next(r for r in cfg.reports if r.name == "monthly-to-ceo")
        facts = FakeFacts()
        before = datetime(2026, 4, 2, 6, tzinfo=UTC)
        assert run_plan_report(store, report, before, CAL, facts, cfg.indicators, cfg.teams_for("b24")) == 0
        due = datetime(2026, 4, 3, 6, tzinfo=UTC)
        assert run_plan_report(store, report, due, CAL, facts, cfg.indicators, cfg.teams_for("b24")) == 1
        assert run_plan_report(store, report, due, CAL, facts, cfg.indicators, cfg.teams_for("b24")) == 0
        # March in Moscow, read from 180 days earlier: time between stages looks back at earlier entries.
        assert facts.windows == [(datetime(2025, 9, 1, 21, tzinfo=UTC), datetime(2026, 3, 31, 21, tzinfo=UTC))]
        csv_text = (tmp_path / "reports" / "monthly-to-ceo-2026-03.csv").read_text(encoding="utf-8")
        assert "2026-03,team,group-1,group-1,turnover,10500000,4000000,38" in csv_text
        assert "2026-03,person,12,group-1,cold_calls,840,30,4" in csv_text
    finally:
        store.close()


def test_dry_run_lists_every_report_due_in_the_window(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    history = tmp_path / "empty.jsonl"
    history.write_text("", encoding="utf-8")
    result = CliRunner().invoke(
        main,
        ["dry-run", "--config", str(EXAMPLE), "--since", "2026-03-30", "--until", "2026-04-12",
         "--source", str(history)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.replace("│", " ").split()) for line in result.output.splitlines()]
    assert "monthly-to-ceo 2026-03 2026-04-03 head 5 task + CSV file" in lines
    assert "quarterly-to-ceo 2026-Q1 2026-04-10 head 5 task + CSV file" in lines
    assert "weekly-team-check 2026-W14 2026-04-06 team leads 7, 8 task" in lines
    daily = [tuple(line.split()[1:3]) for line in lines if line.startswith("daily-plan ")]
    # Working days only; Friday 3 April is reported on Monday the 6th, Friday the 10th after the window.
    days = ["03-30", "03-31", "04-01", "04-02", "04-03", "04-06", "04-07", "04-08", "04-09", "04-10"]
    assert daily == [(f"2026-{d}", f"2026-{n}") for d, n in zip(days, days[1:], strict=False)]
    assert "daily-plan 2026-03-31 2026-04-01 each person task + task to the lead of each person below plan" in lines
    # The start-of-day check is on the day itself, working days only.
    ahead = [tuple(line.split()[1:3]) for line in lines if line.startswith("planned-today ")]
    assert ahead == [(f"2026-{d}", f"2026-{d}") for d in days]
    assert "planned-today 2026-03-30 2026-03-30 those below plan task to each person below plan" in lines


def test_the_quarterly_report_as_a_spreadsheet(cfg: Config, tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        assert load_plans(store, PLANS, cfg, datetime(2026, 3, 1, tzinfo=UTC)).problems == []
        quarterly = next(r for r in cfg.reports if r.name == "quarterly-to-ceo")
        report = replace(quarterly, file=Template(str(tmp_path / "{{ report }}-{{ period }}.xlsx")))
        due = datetime(2026, 4, 10, 6, tzinfo=UTC)
        assert run_plan_report(store, report, due, CAL, FakeFacts(), cfg.indicators, cfg.teams_for("b24")) == 1
        sheet = openpyxl.load_workbook(tmp_path / "quarterly-to-ceo-2026-Q1.xlsx").active
        rows = [tuple(r) for r in sheet.iter_rows(values_only=True)]
        assert sheet.title == "2026-Q1" and rows[0][:5] == ("period", "scope", "name", "team", "indicator")
        assert ("2026-Q1", "team", "group-1", "group-1", "new_contracts", 24.0, 1.0, 4.0) in rows
    finally:
        store.close()


class DownFacts(FactSource):
    def read_facts(self, since: datetime, until: datetime) -> Iterator[Fact]:
        raise RetriableError("503 from the portal", crm="b24")


def test_a_report_whose_facts_cannot_be_read_is_delivered_at_a_later_run(cfg: Config, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        report = replace(next(r for r in cfg.reports if r.name == "monthly-to-ceo"), file=None)
        due = datetime(2026, 4, 3, 6, tzinfo=UTC)
        teams = cfg.teams_for("b24")
        assert run_plan_report(store, report, due, CAL, DownFacts(), cfg.indicators, teams) == 0
        assert "facts not read (503 from the portal" in caplog.text
        later = datetime(2026, 4, 3, 7, tzinfo=UTC)
        assert run_plan_report(store, report, later, CAL, FakeFacts(), cfg.indicators, teams) == 1
    finally:
        store.close()


def test_a_plan_report_posts_its_whole_table_to_a_chat_once(cfg: Config, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from sqlalchemy import select

    from connector.storage.models import OutboxRow

    monkeypatch.chdir(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        assert load_plans(store, PLANS, cfg, datetime(2026, 3, 1, tzinfo=UTC)).problems == []
        report = dataclasses.replace(next(r for r in cfg.reports if r.name == "monthly-to-ceo"), channel="sales_chat")
        due = datetime(2026, 4, 3, 6, tzinfo=UTC)
        for _ in range(2):
            run_plan_report(store, report, due, CAL, FakeFacts(), cfg.indicators, cfg.teams_for("b24"))
        with store.sessions() as s:
            posts = [r for r in s.scalars(select(OutboxRow)) if r.command == "send_message"]
        assert len(posts) == 1 and posts[0].crm == "sales_chat"
        text = posts[0].payload["text"]
        assert "user 11 (group-1)" in text and "user 12" in text  # the whole table, everyone's rows
    finally:
        store.close()


def test_check_refuses_a_report_channel_that_is_not_configured(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8").replace("    by: 5", "    by: 5\n    channel: nowhere", 1)
    assert "channel: nowhere" in text
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(Exception, match="no channel named 'nowhere' under channels"):
        load_config(path, ENV)
