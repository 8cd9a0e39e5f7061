"""``channels:`` and the ``message`` step: loaded, checked by name, planned from templates."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config import ConfigError, load_config_text
from connector.redaction import secrets_of
from domain import Deal, Event, EventKind, SendMessage
from rules.engine import evaluate
from rules.model import RuleContext

TOKEN = "7012345678:AAH-test-token-0123456789abcdef"
CONFIG = """
crms:
  b24: {type: bitrix24, webhook_url: "https://p.bitrix24.ru/rest/1/c0de1234/", application_token: "tok-12345678"}
channels:
  sales_chat: {type: telegram, token: "${TG_TOKEN}", chat_id: -1001234567890}
rules:
  - name: payment-to-chat
    crm: b24
    on: [payment.received]
    once_per: event
    do:
      - message:
          channel: sales_chat
          text: "Оплата по сделке «{{ deal.title }}»: {{ deal.amount }} {{ deal.currency }}"
"""
ENV = {"TG_TOKEN": TOKEN}


def test_a_channel_and_a_message_step_load() -> None:
    cfg = load_config_text(CONFIG, ENV)
    assert cfg.channels["sales_chat"].chat_id == "-1001234567890"  # type: ignore[attr-defined]
    assert cfg.channels["sales_chat"].on_lost_answer == "resend"  # type: ignore[attr-defined]
    assert TOKEN in secrets_of(cfg)


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (
            ("channel: sales_chat", "channel: sales"),
            "rules[0].do[0].message",
            "channel: no channel named 'sales' under channels",
        ),
        (
            ("channel: sales_chat", "channel: b24"),
            "rules[0].do[0].message",
            "'b24' (type bitrix24) cannot carry out send_message",
        ),
        (("type: telegram", "type: whatsapp"), "channels.sales_chat.type", "unknown channel type 'whatsapp'"),
        (("chat_id: -1001234567890", "chat_id: sales"), "channels.sales_chat.chat_id", "a chat id"),
        (("sales_chat: {type", "b24: {type"), "channels.b24", "also the name of a CRM"),
        (("{{ deal.title }}", "{{ deal.title"), "rules[0].do[0].message.text", ""),
        (
            ("chat_id: -1001234567890}", "chat_id: -1, on_lost_answer: maybe}"),
            "channels.sales_chat.on_lost_answer",
            "one of",
        ),
    ],
)
def test_check_refuses_a_wrong_channel_with_its_line(change: tuple[str, str], where: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config_text(CONFIG.replace(*change), ENV, source="c.yaml")
    text = str(err.value)
    assert where in text and message in text, text
    assert "c.yaml:" in text
    assert TOKEN not in text


def test_check_command_counts_channels_and_hides_the_token(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.replace("channel: sales_chat", "channel: nope"), encoding="utf-8")
    monkeypatch.setenv("TG_TOKEN", TOKEN)
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 2 and "no channel named 'nope'" in result.output
    assert TOKEN not in result.output


def _ctx(deal: Deal) -> RuleContext:
    event = Event("b24", EventKind.PAYMENT_RECEIVED, deal.id, datetime(2026, 12, 2, 9, tzinfo=UTC), dedup_key="pay-1")
    return RuleContext(deal=deal, event=event, now=event.occurred_at, triggers=frozenset({"payment.received"}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Оплата по сделке «{{ deal.title }}»: {{ deal.amount }} {{ deal.currency }}",
            "Оплата по сделке «Ромашка»: 120000 RUB",
        ),
        ("{% if deal.amount > 500000 %}Крупная оплата{% endif %}", None),  # renders nothing: no message
        ("  Оплата\n", "Оплата"),
    ],
)
def test_the_message_step_renders_its_text_in_the_sandbox(text: str, expected: str | None) -> None:
    cfg = load_config_text(
        CONFIG.replace(
            '"Оплата по сделке «{{ deal.title }}»: {{ deal.amount }} {{ deal.currency }}"', repr(text).replace("'", '"')
        ),
        ENV,
    )
    deal = Deal(crm="b24", id="42", title="Ромашка", stage="NEW", amount=Decimal(120000), currency="RUB")
    decisions = evaluate(cfg.rules, _ctx(deal))
    if expected is None:
        assert decisions == []
        return
    (decision,) = decisions
    assert decision.action == SendMessage("42", channel="sales_chat", text=expected)
    assert decision.key.startswith("rule:payment-to-chat:") or "payment-to-chat" in decision.key


def test_the_sandbox_keeps_a_template_from_python_internals() -> None:
    bad = CONFIG.replace("Оплата по сделке «{{ deal.title }}»", "{{ deal.__class__.__mro__ }}")
    with pytest.raises(ConfigError, match="unknown attribute deal.__class__"):
        load_config_text(bad, ENV)
