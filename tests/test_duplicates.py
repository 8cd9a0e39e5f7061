"""Duplicates and data quality: values checked and normalised, the step's decisions, the config."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from connector.config import ConfigError, load_config_text
from domain import AddComment, CreateTask, Deal, Event, EventKind, UpdateDeal
from domain.duplicates import Duplicate
from rules.calendar import WorkCalendar
from rules.duplicates import FindDuplicatesSpec, search_plan
from rules.engine import evaluate
from rules.identity import check_email, check_inn, check_phone, field_values
from rules.model import Note, RuleContext


@pytest.mark.parametrize(
    ("raw", "region", "value"),
    [
        ("8 (916) 123-45-67", "RU", "+79161234567"),
        ("+7 916 123 45 67", "RU", "+79161234567"),
        ("79161234567", "RU", "+79161234567"),
        ("8-800-555-35-35", "RU", "+78005553535"),
        ("044 123 4567", "UA", "+380441234567"),  # a Kyiv number written as Ukrainians do
        ("+380 44 123 4567", "RU", "+380441234567"),  # a country code beats the region
        ("8 916 123-45-6", "RU", None),  # a digit lost on the way from the call centre
        ("8 916 123-45-678", "RU", None),
        ("позвонить вечером", "RU", None),
    ],
)
def test_phones_are_checked_and_normalised(raw: str, region: str, value: str | None) -> None:
    checked = check_phone(raw, region)
    assert checked.value == value
    assert (checked.problem is None) == (value is not None)
    if checked.problem:
        assert raw in checked.problem


@pytest.mark.parametrize(
    ("raw", "value"),
    [("7707083893", "7707083893"), ("500100732259", "500100732259"), ("7707 083 893", "7707083893"),
     ("7707083894", None), ("12345", None)],
)  # fmt: skip
def test_inns_are_checked_by_their_check_digits(raw: str, value: str | None) -> None:
    assert check_inn(raw).value == value


def test_emails_compare_lower_cased_and_multi_fields_are_read() -> None:
    assert check_email(" Ivan@Romashka.RU ").value == "ivan@romashka.ru"
    assert check_email("ivan@").value is None
    assert field_values([{"VALUE": "+7 916 1234567", "VALUE_TYPE": "WORK"}, {"value": "x"}, "", None, "y"]) == [
        "+7 916 1234567",
        "x",
        "y",
    ]


# --- the step ----------------------------------------------------------------------------------

CONFIG = """
crms:
  b24: {type: bitrix24, webhook_url: "https://p.bitrix24.ru/rest/1/c0de1234/", application_token: "tok-12345678"}
rules:
  - name: repeat-client
    crm: b24
    on: [deal.created]
    do:
      - find_duplicates:
          phone: UF_CRM_PHONE
          email: UF_CRM_EMAIL
          inn: UF_CRM_INN
          comment: >-
            Повторный клиент: {% for d in duplicates %}{{ d.kind }} {{ d.id }}
            {%- if not loop.last %}, {% endif %}{% endfor %}
          task: {title: "Проверить дубль: {{ deal.title }}", responsible: responsible, due: 1 working day}
          link: UF_CRM_DUPLICATES
          invalid:
            comment: "Ошибка в контактах: {{ invalid | join('; ') }}"
            task: {title: "Уточнить телефон клиента", responsible: responsible, due: 4 working hours}
"""
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _ctx(fields: dict[str, Any], duplicates: dict[str, list[Duplicate]] | None) -> RuleContext:
    deal = Deal(crm="b24", id="7", title="Ромашка", stage="NEW", responsible_id="5", fields=fields)
    event = Event("b24", EventKind.DEAL_CREATED, "7", NOW, dedup_key="e1")
    return RuleContext(
        deal=deal,
        event=event,
        now=NOW,
        triggers=frozenset({"deal.created"}),
        calendar=WorkCalendar(timezone="Europe/Moscow", work_hours="09:00-18:00", country="RU"),
        duplicates=duplicates,
    )


def _actions(fields: dict[str, Any], duplicates: dict[str, list[Duplicate]] | None) -> list[Any]:
    cfg = load_config_text(CONFIG)
    return [d.action for d in evaluate(cfg.rules, _ctx(fields, duplicates))]


PHONE = {"UF_CRM_PHONE": "8 (916) 123-45-67"}
FOUND = {
    "phone": [Duplicate("contact", "12", "phone", "+79161234567"), Duplicate("deal", "3", "phone", "+79161234567")]
}


@pytest.mark.parametrize(
    ("fields", "duplicates", "expected"),
    [
        (PHONE, {"phone": []}, []),  # a new client: nothing to do
        (
            PHONE,
            FOUND,
            [
                Note,
                AddComment("7", text="Повторный клиент: contact 12, deal 3"),
                CreateTask,
                UpdateDeal("7", values={"UF_CRM_DUPLICATES": "contact 12, deal 3"}),
            ],
        ),
        (
            {"UF_CRM_PHONE": "8 916 123-45-6"},
            {},
            [
                AddComment(
                    "7", text="Ошибка в контактах: «8 916 123-45-6» is not a valid phone number: no such number"
                ),
                CreateTask,
            ],
        ),
        (PHONE, None, [Note]),  # the CRM cannot search (or a dry-run): said, not silently skipped
        ({}, {}, []),  # no phone on the card: nothing to check or search
    ],
)
def test_the_step_acts_on_what_was_found(fields: dict[str, Any], duplicates: Any, expected: list[Any]) -> None:
    actions = _actions(fields, duplicates)
    assert len(actions) == len(expected), actions
    for action, want in zip(actions, expected, strict=True):
        assert isinstance(action, want) if isinstance(want, type) else action == want
    tasks = [a for a in actions if isinstance(a, CreateTask)]
    assert all(t.responsible_id == "5" and t.deadline is not None for t in tasks)


def test_a_link_already_written_is_not_written_again() -> None:
    fields = {**PHONE, "UF_CRM_DUPLICATES": "contact 12, deal 3"}
    assert not [a for a in _actions(fields, FOUND) if isinstance(a, UpdateDeal)]


def test_the_worker_searches_each_valid_value_once_per_key() -> None:
    cfg = load_config_text(CONFIG)
    (spec,) = [s for s in cfg.rules[0].actions if isinstance(s, FindDuplicatesSpec)]
    deal = Deal(
        crm="b24",
        id="7",
        title="x",
        stage="NEW",
        fields={
            "UF_CRM_PHONE": [{"VALUE": "8 916 123-45-67"}, {"VALUE": "+7 (916) 123-45-67"}, {"VALUE": "12"}],
            "UF_CRM_EMAIL": "Ivan@Romashka.ru",
            "UF_CRM_INN": "7707083894",  # a wrong check digit: reported, not searched
        },
    )
    assert search_plan([spec], deal) == {"phone": ["+79161234567"], "email": ["ivan@romashka.ru"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("          phone: UF_CRM_PHONE\n          email: UF_CRM_EMAIL\n          inn: UF_CRM_INN\n", ""),
            "at least one",
        ),
        (("link: UF_CRM_DUPLICATES", "region: Russia"), "two-letter country code"),
        (("responsible: responsible, due: 1 working day", "due: 1 working day"), "responsible"),
        (("link: UF_CRM_DUPLICATES", "ling: X"), "unknown parameter"),
    ],
)
def test_check_names_a_wrong_find_duplicates_with_its_line(change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config_text(CONFIG.replace(*change), source="c.yaml")
    assert "c.yaml:" in str(err.value) and "rules[0].do[0].find_duplicates" in str(err.value)
    assert message in str(err.value)


def test_check_refuses_find_duplicates_on_a_crm_that_cannot_search() -> None:
    onec = (
        '  acc: {type: onec, base_url: "http://1c.local/trade/odata/standard.odata", username: u, password: "p-123456",'
        " deal_crm: b24}\n"
    )
    text = CONFIG.replace("rules:\n", onec + "rules:\n").replace("crm: b24\n    on:", "crm: acc\n    on:")
    with pytest.raises(ConfigError) as err:
        load_config_text(text, source="c.yaml")
    assert "rules[0].do[0].find_duplicates: 'acc' (type onec) cannot search duplicates" in str(err.value)
