"""`connector check` holds the config to what each CRM can do, naming file, line and key."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from marshmallow import fields

from adapters.contracts import (
    CommandSink,
    CrmAdapter,
    CrmSettings,
    DealSource,
    SettingsSchema,
    WriteResult,
    defaults_from,
)
from adapters.registry import register_crm_type, unregister_crm_type
from connector.cli import main
from connector.config import ConfigError, load_config_text
from domain import Command, CreateTask, Deal, User

ENV = {"B24_URL": "https://x.bitrix24.ru/rest/1/secretcode/", "B24_TOKEN": "app-token-secret", "PW": "secret"}
CRMS = """
crms:
  b24: {type: bitrix24, webhook_url: "${B24_URL}", application_token: "${B24_TOKEN}"}
  acc:
    type: onec
    base_url: "http://1c.local/base/odata/standard.odata/"
    username: u
    password: "${PW}"
    deal_crm: b24
  board: {type: tasks_only}
"""


@dataclass(frozen=True, kw_only=True)
class TasksOnlySettings(CrmSettings):
    type: str = "tasks_only"


@defaults_from(TasksOnlySettings)
class TasksOnlySchema(SettingsSchema):
    type = fields.String(required=True)


class TasksOnly(CrmAdapter[TasksOnlySettings], DealSource, CommandSink):
    """A CRM with deals that takes tasks and nothing else."""

    type = "tasks_only"

    def get_deals(self, deal_ids: Iterable[str]) -> dict[str, Deal]:
        return {}

    def changed_deals(self, since: datetime | None) -> Iterator[Deal]:
        return iter(())

    def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        return {}

    def open_deal_counts(self, user_ids: list[str]) -> dict[str, int]:
        return {}

    def _task(self, command: CreateTask, marker: str) -> WriteResult:
        return WriteResult()

    def find_written(self, command: Command, marker: str) -> WriteResult | None:
        return None

    handlers = {CreateTask: _task}


@pytest.fixture(autouse=True)
def tasks_only() -> Iterator[None]:
    register_crm_type("tasks_only", settings=TasksOnlySchema, adapter=TasksOnly)
    yield
    unregister_crm_type("tasks_only")


def _problems(rules: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config_text(CRMS + rules, ENV, source="c.yaml")
    return str(err.value)


def test_a_valid_mix_of_capabilities_loads() -> None:
    cfg = load_config_text(
        CRMS
        + """
rules:
  - {name: a, crm: board, on: [deal.created], do: [{create_task: {title: t, responsible: "1"}}]}
  - {name: b, crm: b24, on: [deal.created], do: [{create_counterparty: {in: acc, name: "{{ deal.title }}"}}]}
""",
        ENV,
    )
    assert set(cfg.crms) == {"b24", "acc", "board"}


def test_a_rule_on_a_crm_that_keeps_no_deals_is_refused() -> None:
    text = _problems("""
rules:
  - name: r
    crm: acc
    on: [invoice.issued]
    do: [{add_comment: {text: x}}]
""")
    assert "c.yaml:14: rules[0].crm: 'acc' keeps no deals for a rule to act on (type onec)" in text
    assert "rules[0].do[0].add_comment: 'acc' (type onec) cannot carry out add_comment" in text


def test_a_step_its_crm_has_no_handler_for_is_refused_with_its_line() -> None:
    text = _problems("""
rules:
  - name: r
    crm: board
    on: [deal.created]
    do:
      - create_task: {title: t, responsible: "1"}
      - close_deal: {outcome: won, comment: "closed"}
""")
    assert "c.yaml:18: rules[0].do[1].close_deal: 'board' (type tasks_only) cannot carry out close_deal" in text
    assert "'board' (type tasks_only) cannot carry out add_comment" in text  # the close's comment
    assert "do[0]" not in text


def test_a_counterparty_goes_only_where_it_can_be_taken() -> None:
    text = _problems("""
rules:
  - {name: r1, crm: b24, on: [deal.created], do: [{create_counterparty: {in: b24, name: x}}]}
  - {name: r2, crm: b24, on: [deal.created], do: [{create_counterparty: {in: nowhere, name: x}}]}
""")
    assert "c.yaml:13: rules[0].do[0].create_counterparty: in: 'b24' (type bitrix24) cannot carry out" in text
    assert "c.yaml:14: rules[1].do[0].create_counterparty: in: no CRM named 'nowhere' under crms" in text


def test_a_report_needs_a_crm_with_deals_that_takes_tasks() -> None:
    text = _problems("""
reports:
  - {name: daily, crm: acc, schedule: "0 19 * * *", to: "1", title: t, text: x}
""")
    assert "reports[0].crm: 'acc' keeps no deals to report on (type onec)" in text


@pytest.mark.parametrize(
    ("deal_crm", "link", "expected"),
    [
        ("nope", "", "crms.acc.deal_crm: no CRM named 'nope' under crms"),
        ("acc", "", "crms.acc.deal_crm: 'acc' keeps no deals (type onec)"),
        ("board", "link: [{by: inn, field: INN}]", "crms.acc.link[0]: 'board' cannot search deals by a field"),
    ],
)
def test_a_document_source_feeds_a_crm_that_keeps_deals(deal_crm: str, link: str, expected: str) -> None:
    crms = CRMS.replace("deal_crm: b24", f"deal_crm: {deal_crm}" + (f"\n    {link}" if link else ""))
    with pytest.raises(ConfigError) as err:
        load_config_text(crms, ENV, source="c.yaml")
    assert expected in str(err.value)


def test_check_command_names_file_line_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        CRMS
        + "rules:\n  - {name: r, crm: acc, on: [deal.created], do: [{create_task: {title: t, responsible: '1'}}]}\n",
        encoding="utf-8",
    )
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 2
    assert f"{path}:12: rules[0].crm: 'acc' keeps no deals" in result.output
    assert f"{path}:12: rules[0].do[0].create_task: 'acc' (type onec) cannot carry out create_task" in result.output
