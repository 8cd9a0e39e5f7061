"""The Telegram channel against the Bot API's own envelopes (``responses``), one case a row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import responses

from adapters.contracts import LOST_AND_DROPPED, Channel
from adapters.registry import build_channel, load_channel_settings
from adapters.telegram.adapter import MAX_TEXT, TelegramChannel
from adapters.telegram.client import ChatMigrated, ChatRefused
from adapters.telegram.settings import TelegramSettings
from adapters.throttle import Throttle
from domain import SendMessage
from domain.errors import AmbiguousWriteError, AuthError, RateLimited

TOKEN = "7012345678:AAH-test-token-0123456789abcdef"
URL = f"https://api.telegram.org/bot{TOKEN}/sendMessage"
PAYLOADS = Path(__file__).parent / "payloads" / "telegram"


def _payload(name: str) -> Any:
    return json.loads((PAYLOADS / f"{name}.json").read_text(encoding="utf-8"))


class Clock:
    """The client's monotonic clock, moved on by its waits instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _channel(clock: Clock | None = None, **overrides: Any) -> TelegramChannel:
    block = {"type": "telegram", "token": TOKEN, "chat_id": -1001234567890, "backoff_initial": "0.01s", **overrides}
    settings = load_channel_settings(block)
    assert isinstance(settings, TelegramSettings)
    channel = build_channel("sales_chat", settings)
    assert isinstance(channel, TelegramChannel)
    clock = clock or Clock()
    client = channel.client
    # Every wait (retries, the pacing after a refusal) moves the clock on instead of waiting.
    client.retry.sleep = clock.sleep  # type: ignore[method-assign]
    client.throttle = client.retry.throttle = Throttle(
        settings.rate, settings.burst, clock=clock.monotonic, sleep=clock.sleep
    )
    return channel


MESSAGE = SendMessage("42", channel="sales_chat", text="Оплата получена: ООО Ромашка")


@responses.activate
def test_a_message_is_posted_to_the_chat_and_its_id_kept() -> None:
    responses.post(URL, json=_payload("send_message_ok"))
    result = _channel().execute(MESSAGE, "crmc:abc")
    assert result.remote_id == "4711"
    sent = json.loads(responses.calls[0].request.body or b"{}")
    assert sent == {"chat_id": "-1001234567890", "text": "Оплата получена: ООО Ромашка"}


@responses.activate
def test_flood_control_is_waited_out_for_retry_after_then_sent() -> None:
    responses.post(URL, json=_payload("too_many_requests"), status=429)
    responses.post(URL, json=_payload("send_message_ok"))
    clock = Clock()
    assert _channel(clock, backoff_max="60s").execute(MESSAGE, "m").remote_id == "4711"
    assert clock.slept == [7.0]  # exactly what Telegram said, not the backoff, and no more


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, ChatRefused),
        (
            403,
            {"ok": False, "error_code": 403, "description": "Forbidden: bot was kicked from the group chat"},
            ChatRefused,
        ),
        (401, {"ok": False, "error_code": 401, "description": "Unauthorized"}, AuthError),
        (500, {"ok": False, "error_code": 500, "description": "Internal Server Error"}, AmbiguousWriteError),
        (502, "<html>Bad Gateway</html>", AmbiguousWriteError),
    ],
)
@responses.activate
def test_errors_are_typed(status: int, body: Any, error: type[Exception]) -> None:
    if isinstance(body, str):
        responses.post(URL, body=body, status=status, content_type="text/html")
    else:
        responses.post(URL, json=body, status=status)
    with pytest.raises(error) as raised:
        _channel().execute(MESSAGE, "m")
    assert len(responses.calls) == 1  # fatal, or a lost answer: never resent by the client
    assert TOKEN not in str(raised.value)


@responses.activate
def test_a_429_past_the_attempts_stays_retriable_for_the_outbox() -> None:
    for _ in range(2):
        responses.post(URL, json=_payload("too_many_requests"), status=429)
    with pytest.raises(RateLimited) as raised:
        _channel(max_attempts=2).execute(MESSAGE, "m")
    assert raised.value.retry_after == 7.0


@responses.activate
def test_a_group_that_became_a_supergroup_gets_the_message_at_its_new_id() -> None:
    responses.post(URL, json=_payload("migrated"), status=400)
    responses.post(URL, json=_payload("send_message_ok"))
    channel = _channel()
    assert channel.execute(MESSAGE, "m").remote_id == "4711"
    assert json.loads(responses.calls[1].request.body or b"{}")["chat_id"] == "-1009876543210"
    assert channel.chat_id == "-1009876543210"
    assert issubclass(ChatMigrated, ChatRefused)


@responses.activate
def test_a_text_longer_than_one_message_is_cut_to_fit() -> None:
    responses.post(URL, json=_payload("send_message_ok"))
    _channel().execute(SendMessage("1", channel="c", text="я" * 5000), "m")
    text = json.loads(responses.calls[0].request.body or b"{}")["text"]
    assert len(text) == MAX_TEXT and text.endswith("…")


@responses.activate
def test_parse_mode_and_silence_are_passed_when_configured() -> None:
    responses.post(URL, json=_payload("send_message_ok"))
    _channel(parse_mode="HTML", disable_notification=True).execute(MESSAGE, "m")
    sent = json.loads(responses.calls[0].request.body or b"{}")
    assert sent["parse_mode"] == "HTML" and sent["disable_notification"] is True


# --- a lost answer: the channel's policy, since a chat cannot be searched ------------------------


def test_a_channel_finds_no_earlier_write() -> None:
    assert _channel().find_written(MESSAGE, "m") is None


@responses.activate
def test_drop_records_a_lost_answer_as_sent_without_sending() -> None:
    channel = _channel(on_lost_answer="drop")
    result = channel.after_lost_answer(MESSAGE, "m")
    assert result.reconciled and result.remote_id == LOST_AND_DROPPED
    assert len(responses.calls) == 0


@responses.activate
def test_resend_after_a_second_lost_answer_leaves_it_to_the_outbox_again() -> None:
    responses.post(URL, json={"ok": False, "error_code": 500, "description": "Internal Server Error"}, status=500)
    channel = _channel()
    assert channel.lost_answer_policy == "resend"
    with pytest.raises(AmbiguousWriteError):
        channel.after_lost_answer(MESSAGE, "m")
    assert len(responses.calls) == 1


@responses.activate
def test_resend_after_a_lost_answer_posts_again() -> None:
    responses.post(URL, json=_payload("send_message_ok"))
    result = _channel().after_lost_answer(MESSAGE, "m")
    assert result.remote_id == "4711" and not result.reconciled


def test_the_channel_carries_out_messages_only() -> None:
    assert issubclass(TelegramChannel, Channel)
    assert TelegramChannel.accepts(SendMessage)
    assert list(TelegramChannel.handlers) == [SendMessage]
