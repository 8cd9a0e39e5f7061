"""Stage guards: one case a row, and ``check`` on a wrong guard."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from connector.config import ConfigError, load_config_text
from domain import AddComment, CreateTask, Deal, Event, EventKind, UpdateDeal
from rules.calendar import WorkCalendar
from rules.engine import evaluate
from rules.model import ExpectStage, Note, RuleContext

# Seed 003's sales ladder: no plan of development before the meeting protocol, no stage skipped.
CONFIG = """
crms:
  b24: {type: bitrix24, webhook_url: "https://p.bitrix24.ru/rest/1/c0de1234/", application_token: "tok-12345678"}
rules:
  - name: protocol-before-plan
    crm: b24
    on: [deal.stage_changed]
    once_per: event
    do:
      - guard_stage:
          stage: ["C2:PLAN", "C2:CONTRACT"]
          require: [UF_CRM_PROTOCOL]
          order: ["C2:NEW", "C2:MEETING", "C2:PROTOCOL", "C2:PLAN", "C2:CONTRACT"]
          comment: "Сделка возвращена на этап {{ guard.from }}: {{ guard.reason }}"
          task: {title: "Оформите протокол встречи: {{ deal.title }}", responsible: responsible, due: 1 working day}
"""
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _actions(before: str | None, after: str, fields: dict[str, Any] | None = None, *, moved: bool = True) -> list[Any]:
    cfg = load_config_text(CONFIG)
    deal = Deal(crm="b24", id="7", title="Завод", stage=after, responsible_id="5", fields=fields or {})
    ctx = RuleContext(
        deal=deal,
        event=Event("b24", EventKind.DEAL_UPDATED, "7", NOW, dedup_key="e1"),
        now=NOW,
        triggers=frozenset({"deal.stage_changed"}),
        changes={"stage": (before, after)} if moved else {},
        calendar=WorkCalendar(timezone="Europe/Moscow", work_hours="09:00-18:00", country="RU"),
    )
    return [d.action for d in evaluate(cfg.rules, ctx)]


RETURNED = [Note, UpdateDeal("7", values={"stage": "C2:PROTOCOL"}), ExpectStage("C2:PROTOCOL"), AddComment, CreateTask]


@pytest.mark.parametrize(
    ("before", "after", "fields", "expected"),
    [
        ("C2:PROTOCOL", "C2:PLAN", {}, RETURNED),  # no protocol: back where it came from
        ("C2:PROTOCOL", "C2:PLAN", {"UF_CRM_PROTOCOL": "протокол.pdf"}, []),  # filled: allowed
        ("C2:MEETING", "C2:PLAN", {"UF_CRM_PROTOCOL": "x"}, [Note, UpdateDeal, ExpectStage, AddComment, CreateTask]),
        ("C2:CONTRACT", "C2:PLAN", {}, []),  # moving back is always allowed
        ("C2:PROTOCOL", "C2:MEETING", {}, []),  # not a guarded stage
        (None, "C2:PLAN", {}, [Note]),  # first seen there: where it came from is unknown
    ],
)
def test_a_guard_returns_a_deal_that_enters_without_what_is_required(
    before: str | None, after: str, fields: dict[str, Any], expected: list[Any]
) -> None:
    actions = _actions(before, after, fields)
    assert len(actions) == len(expected), actions
    for action, want in zip(actions, expected, strict=True):
        assert isinstance(action, want) if isinstance(want, type) else action == want


def test_the_comment_and_task_say_why() -> None:
    comment, task = _actions("C2:MEETING", "C2:PLAN")[3:]
    assert comment == AddComment(
        "7", text="Сделка возвращена на этап C2:MEETING: не заполнено: UF_CRM_PROTOCOL; пропущены этапы: C2:PROTOCOL"
    )
    assert task.title == "Оформите протокол встречи: Завод" and task.responsible_id == "5"


def test_the_guards_own_return_is_no_move() -> None:
    # The worker remembers the stage the guard set, so the CRM's echo carries no stage change.
    assert _actions("C2:PROTOCOL", "C2:PROTOCOL", moved=False) == []


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (('stage: ["C2:PLAN", "C2:CONTRACT"]', 'stage: ["C2:PLANS"]'), "guard_stage.stage", "not in order: C2:PLANS"),
        (('order: ["C2:NEW",', 'order: ["C2:NEW", "C2:NEW",'), "guard_stage.order", "named twice: C2:NEW"),
        (("          require: [UF_CRM_PROTOCOL]\n", ""), "guard_stage.require", ""),
        (("on: [deal.stage_changed]", "on: [deal.created]"), "rules[0].on", "include deal.stage_changed"),
        (('stage: ["C2:PLAN", "C2:CONTRACT"]', "stage: []"), "guard_stage.stage", "a stage id"),
        (("once_per: event", "once_per: stage"), "rules[0].once_per", "acts on every move"),
    ],
)
def test_check_refuses_a_wrong_guard_with_its_line(change: tuple[str, str], where: str, message: str) -> None:
    text = CONFIG.replace(*change)
    if "require" not in text:  # no fields and no order: nothing to guard
        text = text.replace('          order: ["C2:NEW", "C2:MEETING", "C2:PROTOCOL", "C2:PLAN", "C2:CONTRACT"]\n', "")
        where, message = "rules[0].do[0].guard_stage", "require (fields) or order"
    with pytest.raises(ConfigError) as err:
        load_config_text(text, source="c.yaml")
    assert "c.yaml:" in str(err.value) and where in str(err.value) and message in str(err.value), str(err.value)


def test_check_holds_guard_stages_to_the_crms_stage_list() -> None:
    stages = 'stages: ["C2:NEW", "C2:MEETING", "C2:PROTOCOL", "C2:PLAN", "C2:CONTRACT"]'
    listed = CONFIG.replace('application_token: "tok-12345678"}', f'application_token: "tok-12345678", {stages}}}')
    load_config_text(listed)  # every guard stage is a stage of the CRM
    with pytest.raises(ConfigError) as err:
        load_config_text(
            listed.replace('order: ["C2:NEW", "C2:MEETING"', 'order: ["C2:NEW", "C2:MEETNG"'),
            source="c.yaml",
        )
    assert "rules[0].do[0].guard_stage.order[1]: no stage 'C2:MEETNG' in crms.b24.stages" in str(err.value)
