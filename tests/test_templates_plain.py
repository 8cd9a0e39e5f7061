"""Plain ``{{ deal.x }}`` templates render without Jinja exactly as Jinja renders them.

``rules.templates.Template`` renders a template that is only text and substitutions by
itself (building Jinja's context was most of a render's cost); these tests hold that path
to Jinja's own answer: the same text, the same errors, the sandbox's refusals.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2 import TemplateError

from rules.templates import _ENV, Template, TemplateProblem, _plain_parts, _render_plain

ROOT = Path(__file__).resolve().parent.parent


def jinja(source: str, context: dict[str, Any]) -> str:
    """What Template.render gave before the plain path: Jinja's render, stripped."""
    return _ENV.from_string(source).render(context).strip()


def context() -> dict[str, Any]:
    deal = {
        "id": "42",
        "title": "Подключение №42 «ёлка»",
        "stage": "C1:NEW",
        "pipeline": "1",
        "responsible_id": "17",
        "amount": Decimal("1500.50"),
        "currency": None,
        "created_at": datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
        "updated_at": None,
        "address": "Казань, Советский",
        "city": "Казань",
        "district": "Советский",
        "fields": {
            "UF_CRM_AGREED_TIME": "2026-03-03T10:00:00+03:00",
            "UF_CRM_PAID": "",
            "0": "zero",
            "items": "a field named items",
            "UF_LIST": ["a", "b"],
        },
    }
    return {
        "deal": deal,
        "event": {"kind": "timer.due", "data": {"due_at": "2026-03-05T18:00:00+03:00"}},
        "changes": {"stage": {"before": "C1:NEW", "after": "C1:ROUTE"}},
        "now": datetime(2026, 3, 2, tzinfo=UTC),
        "holiday": {"date": None, "name": ""},
        "reason": "Нет опор",
        "captain": "19",
        "range": "shadowed global",
        "count": 3,
        "items": [10, 20],
        # A key shaped like a filter step must not stand in for calling the filter.
        "odd": {("date", ("%Y",)): "not the filter"},
    }


PLAIN = [
    "Проверить техническую возможность: {{ deal.title }}",
    "Адрес: {{ deal.address }}. Срок — 24 часа с передачи заявки.",
    "{{ event.data.due_at }}",
    "{{ deal.fields.UF_CRM_AGREED_TIME }}",
    "{{ deal['fields']['UF_CRM_PAID'] }}x",
    "Сделка закрыта без подключения. Причина: {{ reason }}",
    "{{ deal.amount }} {{ deal.currency }} {{ count }}",
    "{{ deal.created_at }}",
    "{{ deal.updated_at }}",
    "{{ changes.stage.before }}",
    "{{ holiday }}",
    "{{ deal.fields.items }}",
    "{{ deal.fields['items'] }}",
    "{{ deal.fields.UF_LIST }}",
    "{{ items[1] }}",
    "{{ deal.title.upper }}",
    "{{ range }}",
    "{{ lipsum }}",
    "  padded {{ deal.id }}  \n",
    "line one\nline two {{ deal.id }}\n\n",
    "a\r\nb {{ deal.id }}\r\n",
    "{{- deal.id -}}  after",
    "text only, no substitution",
    "",
    "{{ deal.id }}{{ deal.id }}",
    "{#- a comment -#} {{ deal.id }}",
    "{% raw %}{{ deal.id }}{% endraw %} {{ deal.id }}",
    "Заявка от {{ deal.created_at | date('%d.%m.%Y') }}. Адрес: {{ deal.address }}.",
    "{{ deal.created_at | date }}",
    "{{ deal.updated_at | date }}",
    "{{ deal.amount | date('%Y') }}",
    "{{ deal.fields.UF_CRM_PAID | date }}",
    "{{ deal.created_at | iso }}",
    "{{ now | iso }}",
    "{{ deal.amount | iso }}",
    "{{ now|date('%H:%M')|date }}",
    "{{ odd | date('%Y') }}",
]

FAILING = [
    "{{ missing_name }}",
    "{{ deal.no_such_key }}",
    "{{ deal.fields.NOPE }}",
    "{{ deal.title.__class__ }}",
    "{{ deal.__class__ }}",
    "{{ deal.id.__class__.__mro__ }}",
    "{{ deal.updated_at.year }}",
    "{{ items[5] }}",
    "ok {{ deal.id }} then {{ nope.x }}",
    "{{ nope | date }}",
    "{{ deal.nope | date('%Y') }}",
    "{{ deal.created_at | date('%d', '%m') }}",
    "{{ deal.created_at | iso('%Y') }}",
]

JINJA_ONLY = [
    "{{ deal.created_at | date(fmt='%d.%m.%Y') }}",
    "{{ deal.created_at | date(1) }}",
    "{{ deal.id | upper }}",
    "{{ deal.created_at | date(deal.id) }}",
    "{{ deal.fields.UF_CRM_AGREED_TIME or 'не указано' }}",
    "{{ event.data.due_at[:16] | replace('T', ' ') }}",
    "{% if deal.id %}x{% endif %}",
    "{{ 'const' }}",
    "{{ deal.id ~ 'x' }}",
    "{{ self }}",
    "{{ loop }}",
    "{{ deal.title.upper() }}",
    "{% set x = 1 %}{{ x }}",
]


@pytest.mark.parametrize("source", PLAIN)
def test_plain_templates_render_as_jinja_does(source: str) -> None:
    parts = _plain_parts(_ENV.parse(source))
    assert parts is not None
    ctx = context()
    assert _render_plain(parts, ctx).strip() == jinja(source, ctx)
    assert Template(source).render(ctx) == jinja(source, ctx)


def error_text(exc: BaseException) -> str:
    return re.sub(r" at 0x[0-9a-f]+", "", f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("source", FAILING)
def test_plain_templates_fail_as_jinja_does(source: str) -> None:
    assert _plain_parts(_ENV.parse(source)) is not None
    ctx = context()
    with pytest.raises(Exception) as old:
        jinja(source, ctx)
    with pytest.raises(Exception) as new:
        _render_plain(_plain_parts(_ENV.parse(source)) or (), ctx)
    assert error_text(new.value) == error_text(old.value)
    with pytest.raises(Exception) as raised:  # noqa: PT011 - compared below
        Template(source).render(ctx)
    if isinstance(old.value, TemplateError):
        assert type(raised.value) is TemplateProblem
        assert str(raised.value) == f"cannot render {source!r}: {old.value}"
    else:  # not a template error (a filter's TypeError, say): it passes through as it always did
        assert error_text(raised.value) == error_text(old.value)


@pytest.mark.parametrize("source", JINJA_ONLY)
def test_anything_more_is_left_to_jinja(source: str) -> None:
    assert _plain_parts(_ENV.parse(source)) is None


def example_templates() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and ("{{" in node or "{%" in node):
            found.append(node)

    for path in sorted((ROOT / "examples").glob("*.yaml")):
        walk(yaml.safe_load(path.read_text(encoding="utf-8")))
    return found


def test_every_example_template_renders_the_same() -> None:
    sources = example_templates()
    assert len(sources) > 20
    ctx = context()
    ctx["stats"] = {
        "new": 1,
        "won": 2,
        "won_amount": Decimal("3.5"),
        "open": 4,
        "open_amount": 5,
        "calls": 6,
        "lost": 7,
        "tasks": 8,
    }
    ctx["event"]["data"].update(
        number="С-1",
        amount=100.5,
        currency="RUB",
        paid_total="50",
        invoice_number="С-0",
        invoice_amount="100",
        paid_in_full=False,
        deadline="connection",
    )
    plain = 0
    for source in sources:
        try:
            expected: str | None = jinja(source, ctx)
        except Exception as exc:  # noqa: BLE001 - the same error is what is compared
            expected, error = None, error_text(exc)
        if expected is None:
            with pytest.raises(Exception) as problem:  # noqa: PT011 - Jinja's own error, whatever it is
                Template(source).render(ctx)
            raised: BaseException = problem.value
            if isinstance(raised, TemplateProblem) and raised.__cause__ is not None:
                raised = raised.__cause__
            assert error_text(raised) == error
        else:
            assert Template(source).render(ctx) == expected, source
        plain += _plain_parts(_ENV.parse(source)) is not None
    assert plain >= len(sources) // 2  # most shipped templates take the plain path


def test_iso_writes_a_moment_in_utc_whatever_zone_it_came_in() -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from rules.templates import Template

    template = Template("{{ event.at | iso }}")
    moscow = datetime(2026, 11, 23, 11, 0, 0, 123456, tzinfo=ZoneInfo("Europe/Moscow"))
    assert template.render({"event": {"at": moscow}}) == "2026-11-23T08:00:00+00:00"
    assert template.render({"event": {"at": moscow.astimezone(UTC)}}) == "2026-11-23T08:00:00+00:00"
