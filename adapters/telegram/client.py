"""The Bot API client: ``POST {api_url}/bot<token>/<method>`` with JSON, typed errors.

Every answer is ``{"ok": true, "result": …}`` or ``{"ok": false, "error_code": …,
"description": …, "parameters": {"retry_after": N} | {"migrate_to_chat_id": M}}``. A 429
is waited out for ``retry_after`` seconds and sent again (a refused call had no effect); 400
and 403 are fatal for the message (a wrong chat, a bot removed from it); 401/404 mean a wrong
token. A 5xx, a timeout or a reset on ``sendMessage`` is a lost answer: the message may have
been posted, and nothing in the Bot API can tell (``AmbiguousWriteError``).

The token is part of the URL's path: the client never logs a URL, only the method's name.
"""

from __future__ import annotations

from typing import Any

import requests

from adapters.http import ApiRequest, ErrorAnswer, HttpClient
from domain.errors import AdapterError, AuthError, FatalError, RateLimited


class ChatRefused(FatalError):
    """Telegram refused the message for this chat (400: no such chat, a bad text; 403: the bot
    was blocked, kicked or never added): retrying cannot help until someone fixes the chat."""


class ChatMigrated(ChatRefused):
    """The group became a supergroup; ``new_chat_id`` is where its messages go now."""

    def __init__(self, message: str, *, new_chat_id: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.new_chat_id = new_chat_id


class TelegramClient(HttpClient):
    """One bot, reached with its token."""

    vendor = "Telegram"
    log_label = "telegram"

    def __init__(self, api_url: str, token: str, **kw: Any) -> None:
        super().__init__(**kw)
        self._base = f"{api_url.rstrip('/')}/bot{token}/"

    def call(self, method: str, payload: dict[str, Any], *, idempotent: bool) -> Any:
        """The ``result`` of one Bot API method."""
        return self.send(ApiRequest("POST", self._base + method, method, json=payload), idempotent=idempotent)

    def decode(self, request: ApiRequest, response: requests.Response, *, idempotent: bool) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("ok") is True and response.status_code == 200:
            return body.get("result")
        if isinstance(body, dict) and body.get("ok") is False:
            parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
            answer = ErrorAnswer(
                status=response.status_code,
                code=str(body.get("error_code", response.status_code)),
                description=str(body.get("description", "")),
                headers={k: str(v) for k, v in (parameters or {}).items()},
            )
        else:  # a proxy's or gateway's page, not the Bot API's envelope
            answer = ErrorAnswer(status=response.status_code, description=response.reason or "", enveloped=False)
        raise self.classify(request.label, answer, idempotent=idempotent)

    def classify(self, label: str, answer: ErrorAnswer, *, idempotent: bool) -> AdapterError:
        details = self.error_details(label, answer)
        code = int(answer.code) if answer.code and answer.code.lstrip("-").isdigit() else answer.status
        if code == 429:
            retry_after = _number(answer.headers.get("retry_after"))
            return RateLimited("Telegram flood control", retry_after=retry_after, **details)
        if code in (401, 404) and answer.enveloped:
            return AuthError("Telegram refused the bot token", **details)
        if code == 400 and answer.headers.get("migrate_to_chat_id"):
            return ChatMigrated(
                "the group became a supergroup", new_chat_id=answer.headers["migrate_to_chat_id"], **details
            )
        if code in (400, 403) and answer.enveloped:
            return ChatRefused("Telegram refused the message", **details)
        if answer.status >= 500 or not answer.enveloped:
            return self.lost_answer(idempotent)(f"Telegram answered {answer.status}", **details)
        return FatalError("Telegram refused the call", **details)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
