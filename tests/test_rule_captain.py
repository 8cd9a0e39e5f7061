"""The captain-by-location regulation as a pure function: deal, event, now, config -> actions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connector.config import load_config_text
from domain import CreateTask, Deal, Event, EventKind, Location, UpdateDeal, User
from rules.calendar import WorkCalendar
from rules.engine import evaluate
from rules.model import Note, RuleContext
from rules.territories import Territory, choose_captain

CONFIG = """
crms: {b24: {type: bitrix24, webhook_url: "https://x.bitrix24.ru/rest/1/c/", application_token: "tok-12345"}}
territories:
  - {match: {city: Казань}, captain: 10}
  - {match: {city: Казань, district: Советский}, captain: 17, backup: 23}
  - {match: {city: Казань, district: Советский, street: Пушкина}, captain: 40}
  - {match: {postcode: "4201*"}, captain: 31}
  - {match: {postcode: "42011*"}, captain: 32}
rules:
  - name: captain
    crm: b24
    on: [deal.created, deal.updated]
    when: {stage: "C1:NEW"}
    do:
      - assign_captain: {fallback: 1}
      - create_task: {title: "Проверить техническую возможность: {{ deal.title }}", responsible: captain, due: 24h}
"""
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def run(location: Location | None, users: dict[str, User] | None = None, stage: str = "C1:NEW") -> list:  # type: ignore[type-arg]
    cfg = load_config_text(CONFIG)
    deal = Deal(crm="b24", id="7", title="Заявка", stage=stage, responsible_id="1", location=location)
    event = Event("b24", EventKind.DEAL_CREATED, "7", NOW, "k")
    ctx = RuleContext(
        deal=deal,
        event=event,
        now=NOW,
        triggers=frozenset({"deal.created"}),
        users=users or {},
        territories=cfg.territories,
        calendar=WorkCalendar(),
    )
    return evaluate(cfg.rules, ctx)


@pytest.mark.parametrize(
    "location, captain",
    [
        (Location(city="Казань"), "10"),
        (Location(city="г. Казань", district="Советский район"), "17"),
        (Location(city="Казань", district="Советский р-н", street="ул. Пушкина, 5"), "40"),
        (Location(city="Москва", postcode="420100"), "31"),
        (Location(city="Москва", postcode="420111"), "32"),  # the longer prefix is more specific
    ],
)
def test_most_specific_territory_wins(location: Location, captain: str) -> None:
    decisions = run(location)
    update = next(d.action for d in decisions if isinstance(d.action, UpdateDeal))
    task = next(d.action for d in decisions if isinstance(d.action, CreateTask))
    assert update.values == {"responsible_id": captain}
    assert task.responsible_id == captain
    assert task.title == "Проверить техническую возможность: Заявка"
    assert task.deadline == NOW + timedelta(hours=24)


def test_backup_when_captain_inactive() -> None:
    decisions = run(Location(city="Казань", district="Советский"), users={"17": User("17", active=False)})
    assert next(d.action for d in decisions if isinstance(d.action, UpdateDeal)).values["responsible_id"] == "23"
    assert any(isinstance(d.action, Note) and "inactive, backup 23" in d.action.message for d in decisions)


def test_fallback_with_audit_note_when_nothing_matches() -> None:
    decisions = run(Location(city="Самара", text="Самара, ул. Ленина"))
    notes = [d.action.message for d in decisions if isinstance(d.action, Note)]
    assert any("no territory matches" in n and "fallback user 1" in n for n in notes)
    # The fallback is already the responsible: no update, but the task still goes out.
    assert not any(isinstance(d.action, UpdateDeal) for d in decisions)
    assert next(d.action for d in decisions if isinstance(d.action, CreateTask)).responsible_id == "1"


def test_other_stage_does_nothing_and_keys_are_stable() -> None:
    assert run(Location(city="Казань"), stage="C1:WON") == []
    first, second = run(Location(city="Казань")), run(Location(city="Казань"))
    assert [d.key for d in first] == [d.key for d in second]
    assert len({d.key for d in first}) == len(first)


def test_choose_captain_tie_goes_to_earlier_row() -> None:
    rows = [Territory({"city": "Казань"}, "1"), Territory({"city": "Казань"}, "2")]
    assert choose_captain(rows, Location(city="Казань"), {}, None).user_id == "1"
