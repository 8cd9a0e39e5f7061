"""A Telegram Bot API double: ``sendMessage`` (and ``getMe``) to the chats it knows.

It answers ``POST /bot<token>/<method>`` in the Bot API's envelopes: ``{"ok": true,
"result": …}`` or ``{"ok": false, "error_code": …, "description": …, "parameters": …}``.
Flood control refuses with 429 and ``parameters.retry_after``: for a chat that gets more
than ``chat_burst`` messages ahead of ``chat_rate`` a second, and for the ``limit_rate``
knob. A chat can be made to refuse (403, the bot was kicked) or to have become a supergroup
(400 with ``migrate_to_chat_id``). Messages land in ``messages[chat_id]``, so a test can
count what was posted.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, jsonify, request

from simulators.base import ApiSimulator, Call, ErrorAnswer
from simulators.faults import FaultKnobs
from simulators.leaky_bucket import LeakyBucket


class BotApiError(ErrorAnswer):
    """An error in the Bot API's envelope."""

    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


@dataclass(kw_only=True)
class _Call(Call):
    token: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)


class TelegramSimulator(ApiSimulator[_Call, Any]):
    """One bot (``token``) and the chats it was added to."""

    def __init__(
        self,
        token: str,
        *,
        chats: tuple[str, ...] = (),
        faults: FaultKnobs | None = None,
        retry_after: int = 1,
        chat_rate: float = 1.0,
        chat_burst: float = 20.0,
    ) -> None:
        super().__init__(faults)
        self.token = token
        self.retry_after = retry_after
        self.chat_rate, self.chat_burst = chat_rate, chat_burst
        self.messages: dict[str, list[dict[str, Any]]] = {str(c): [] for c in chats}
        self.kicked: set[str] = set()
        self.migrated: dict[str, str] = {}
        self._buckets: dict[str, LeakyBucket] = {}
        self._next_id = collections.Counter[str]()
        self.app = Flask(__name__)
        self.app.add_url_rule("/bot<path:token>/<method>", "api", self._route, methods=["POST", "GET"])

    # --- arranging a test -------------------------------------------------------------------

    def add_chat(self, chat_id: str) -> None:
        with self._lock:
            self.messages.setdefault(str(chat_id), [])

    def kick(self, chat_id: str) -> None:
        """The bot is removed from the chat: its messages are refused with 403."""
        self.kicked.add(str(chat_id))

    def migrate(self, chat_id: str, new_chat_id: str) -> None:
        """The group became a supergroup with a new id."""
        with self._lock:
            self.migrated[str(chat_id)] = str(new_chat_id)
            self.messages.setdefault(str(new_chat_id), [])

    def texts(self, chat_id: str) -> list[str]:
        """The texts posted to a chat, in order."""
        with self._lock:
            return [m["text"] for m in self.messages.get(str(chat_id), [])]

    # --- the pipeline ---------------------------------------------------------------------------

    def _route(self, token: str, method: str) -> Response:
        params: dict[str, Any] = dict(request.args)
        if request.is_json:
            params.update(request.get_json(silent=True) or {})
        else:
            params.update(request.form.to_dict())
        self.calls[method] += 1
        return self.answer(_Call(token=token, method=method, params=params))

    def authenticate(self, call: _Call) -> None:
        if call.token != self.token:
            raise BotApiError(401, "Unauthorized")

    def resolve(self, call: _Call) -> None:
        if call.method.lower() not in ("sendmessage", "getme"):
            raise BotApiError(404, "Not Found")

    def admit(self, call: _Call) -> None:
        if call.method.lower() != "sendmessage":
            return
        chat = str(call.params.get("chat_id", ""))
        with self._lock:
            bucket = self._buckets.setdefault(chat, LeakyBucket(self.chat_rate, self.chat_burst))
        if self.faults.roll(self.faults.limit_rate, "rate_limited") or not bucket.try_take():
            raise BotApiError(
                429, f"Too Many Requests: retry after {self.retry_after}", {"retry_after": self.retry_after}
            )

    def handle(self, call: _Call) -> Any:
        if call.method.lower() == "getme":
            return {"id": int(self.token.split(":")[0]), "is_bot": True, "first_name": "crm-connector"}
        chat = str(call.params.get("chat_id", ""))
        text = str(call.params.get("text", ""))
        with self._lock:
            if chat in self.migrated:
                raise BotApiError(
                    400,
                    "Bad Request: group chat was upgraded to a supergroup chat",
                    {"migrate_to_chat_id": int(self.migrated[chat])},
                )
            if chat in self.kicked:
                raise BotApiError(403, "Forbidden: bot was kicked from the group chat")
            if chat not in self.messages:
                raise BotApiError(400, "Bad Request: chat not found")
            if not text.strip():
                raise BotApiError(400, "Bad Request: message text is empty")
            if len(text) > 4096:
                raise BotApiError(400, "Bad Request: message is too long")
            self._next_id[chat] += 1
            message = {
                "message_id": self._next_id[chat],
                "date": int(time.time()),
                "chat": {"id": int(chat) if chat.lstrip("-").isdigit() else chat, "type": "supergroup"},
                "text": text,
            }
            self.messages[chat].append(message)
            call.wrote = True
            return message

    def internal_error(self, call: _Call) -> ErrorAnswer:
        return BotApiError(500, "Internal Server Error")

    def transient_error(self, call: _Call) -> Exception:
        return BotApiError(502, "Bad Gateway")

    def success(self, call: _Call, result: Any) -> Response:
        return jsonify({"ok": True, "result": result})

    def error(self, call: _Call, exc: ErrorAnswer) -> Response:
        assert isinstance(exc, BotApiError)
        body: dict[str, Any] = {"ok": False, "error_code": exc.status, "description": exc.description}
        if exc.parameters:
            body["parameters"] = exc.parameters
        response = jsonify(body)
        response.status_code = exc.status
        return response
