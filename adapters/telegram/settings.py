"""The ``channels.<name>`` block of a Telegram chat: its settings and the schema that loads them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import fields, validate

from adapters.contracts import LOST_ANSWER_POLICIES, ChannelSettings, CrmSettings, SettingsSchema, defaults_from
from domain.fields import HttpUrl, Span

# Telegram's published guidance: about 20 messages a minute to one group, 1 a second to one chat.
GROUP_RATE = 20 / 60


@dataclass(frozen=True, kw_only=True)
class TelegramSettings(ChannelSettings):
    """One chat a bot posts to."""

    type: str = "telegram"
    token: str
    chat_id: str
    api_url: str = "https://api.telegram.org"
    parse_mode: str | None = None
    disable_notification: bool = False
    rate: float = GROUP_RATE
    burst: float = 3.0
    timeout: float = 15.0
    max_attempts: int = 4
    backoff_initial: float = 1.0
    backoff_max: float = 60.0


@defaults_from(TelegramSettings)
class TelegramSettingsSchema(SettingsSchema):
    """A bot token (from @BotFather, given as ``${ENV}``) and the chat it posts to."""

    settings_class = TelegramSettings

    type = fields.String(required=True)
    token = fields.String(
        required=True,
        validate=validate.Regexp(r"^\d+:[A-Za-z0-9_-]{20,}$", error="a bot token like 123456:ABC-DEF… (@BotFather)"),
        metadata={"doc": "the bot's token; it sits in the request path, so give it as ${ENV}", "secret": True},
    )
    chat_id = fields.Raw(
        required=True,
        validate=validate.Regexp(r"^(-?\d+|@[A-Za-z0-9_]{5,})$", error="a chat id (-100… for a group) or @channel"),
        metadata={"doc": "the chat: a group's negative id (-100… for a supergroup) or @channelname"},
    )
    on_lost_answer = fields.String(
        validate=validate.OneOf(LOST_ANSWER_POLICIES),
        metadata={
            "doc": "a message whose answer was lost: resend (never lost, maybe twice) or drop (never twice, maybe lost)"
        },
    )
    api_url = HttpUrl(metadata={"doc": "the Bot API server (a local telegram-bot-api, or the simulator)"})
    parse_mode = fields.String(
        allow_none=True,
        validate=validate.OneOf(("HTML", "MarkdownV2")),
        metadata={"doc": "how Telegram formats the text; none: plain text, nothing to escape"},
    )
    disable_notification = fields.Boolean(metadata={"doc": "post silently"})
    rate = fields.Float(
        validate=validate.Range(min=0.01, max=30), metadata={"doc": "messages per second (a group takes ~20/min)"}
    )
    burst = fields.Float(validate=validate.Range(min=1), metadata={"doc": "messages sent at once before pacing"})
    timeout = Span()
    max_attempts = fields.Integer(validate=validate.Range(min=1, max=20))
    backoff_initial = Span()
    backoff_max = Span(metadata={"doc": "longest wait between tries; a 429's retry_after is waited in full up to it"})

    def load_settings(self, block: Mapping[str, Any]) -> CrmSettings:
        """YAML reads a group's id as a number: it is kept as text, as Telegram answers it."""
        loaded = dict(block)
        if isinstance(loaded.get("chat_id"), int):
            loaded["chat_id"] = str(loaded["chat_id"])
        return super().load_settings(loaded)
