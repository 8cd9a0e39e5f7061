"""The Telegram channel: a message of a rule or a report posted to one chat."""

from __future__ import annotations

import logging
from typing import Any

from adapters.contracts import Channel, CrmAdapter, WriteResult
from adapters.telegram.client import ChatMigrated, TelegramClient
from adapters.telegram.settings import TelegramSettings
from domain import SendMessage

log = logging.getLogger(__name__)

MAX_TEXT = 4096  # characters Telegram takes in one message
ELLIPSIS = "…"


class TelegramChannel(CrmAdapter[TelegramSettings], Channel):
    """Posts ``SendMessage`` to the configured chat, paced below Telegram's limits."""

    type = "telegram"

    def __init__(self, name: str, settings: TelegramSettings, *, client: TelegramClient | None = None) -> None:
        super().__init__(name, settings)
        self.lost_answer_policy = settings.on_lost_answer
        self.chat_id = settings.chat_id
        self.client = client or TelegramClient(
            settings.api_url,
            settings.token,
            crm=name,
            timeout=settings.timeout,
            max_attempts=settings.max_attempts,
            backoff_initial=settings.backoff_initial,
            backoff_max=settings.backoff_max,
        )
        self.client.use_throttle(settings.rate, settings.burst)

    def interrupt(self) -> None:
        self.client.interrupt()

    def close(self) -> None:
        self.client.close()

    def _send(self, command: SendMessage, marker: str) -> WriteResult:
        payload: dict[str, Any] = {"chat_id": self.chat_id, "text": fit(command.text)}
        if self.settings.parse_mode:
            payload["parse_mode"] = self.settings.parse_mode
        if self.settings.disable_notification:
            payload["disable_notification"] = True
        try:
            result = self.client.call("sendMessage", payload, idempotent=False)
        except ChatMigrated as exc:
            # Refused, so not posted: post to the supergroup, and say the config needs the new id.
            log.warning("channel %s: chat %s is now %s; update chat_id", self.name, self.chat_id, exc.new_chat_id)
            self.chat_id = payload["chat_id"] = exc.new_chat_id
            result = self.client.call("sendMessage", payload, idempotent=False)
        message_id = result.get("message_id") if isinstance(result, dict) else None
        return WriteResult(remote_id=str(message_id) if message_id is not None else None)

    handlers = {SendMessage: _send}


def fit(text: str) -> str:
    """The text cut to what one message takes (one message per outbox row keeps it once)."""
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - len(ELLIPSIS)] + ELLIPSIS
