"""The capability contracts: the command table, the batched form's default, webhook validation."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from adapters.contracts import CommandSink, CrmAdapter, IncomingRequest, WebhookReceiver, WriteResult
from adapters.webhooks import BasicAuthValidator, TokenValidator
from domain import AddComment, Command, CreateTask, Event, UpdateDeal
from domain.errors import (
    FatalError,
    RetriableError,
    UnsupportedMediaType,
    WebhookForbidden,
    WebhookUnauthorized,
)

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


class Tasks(CrmAdapter, CommandSink):
    """Creates tasks; fails a task titled "flaky"; knows no other command."""

    type = "tasks"

    def __init__(self) -> None:
        super().__init__("t", {})
        self.written: list[str] = []

    def _create_task(self, command: CreateTask, marker: str) -> WriteResult:
        if command.title == "flaky":
            raise RetriableError("try later", crm=self.name)
        self.written.append(marker)
        return WriteResult(remote_id=str(len(self.written)))

    def find_written(self, command: Command, marker: str) -> WriteResult | None:
        return None

    handlers = {CreateTask: _create_task}


def test_the_handler_table_says_what_a_sink_accepts_and_refuses_the_rest() -> None:
    assert Tasks.accepts(CreateTask) and not Tasks.accepts(UpdateDeal)
    sink = Tasks()
    assert sink.execute(CreateTask("1", title="a"), "m1") == WriteResult(remote_id="1")
    with pytest.raises(FatalError, match="cannot carry out update_deal"):
        sink.execute(UpdateDeal("1", values={"x": 1}), "m2")


def test_execute_many_answers_each_write_and_a_failure_does_not_stop_the_rest() -> None:
    sink = Tasks()
    outcomes = sink.execute_many(
        [
            (CreateTask("1", title="a"), "m1"),
            (CreateTask("2", title="flaky"), "m2"),
            (AddComment("3", text="c"), "m3"),
            (CreateTask("4", title="b"), "m4"),
        ]
    )
    assert outcomes[0] == WriteResult(remote_id="1") and outcomes[3] == WriteResult(remote_id="2")
    assert isinstance(outcomes[1], RetriableError) and isinstance(outcomes[2], FatalError)
    assert sink.written == ["m1", "m4"]


def _request(headers: dict[str, str] | None = None, form: dict[str, list[str]] | None = None) -> IncomingRequest:
    return IncomingRequest(b"", "application/x-www-form-urlencoded", headers or {}, form)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_validator() -> None:
    check = BasicAuthValidator("hooks", "пароль-1234")
    check(_request(_basic("hooks", "пароль-1234")))
    for headers in ({}, {"authorization": "Bearer x"}, _basic("hooks", "wrong"), _basic("other", "пароль-1234")):
        with pytest.raises(WebhookUnauthorized):
            check(_request(headers))


def test_token_validator_uses_the_locator_and_refuses_missing_and_wrong_tokens() -> None:
    def locate(request: IncomingRequest) -> str | None:
        if request.form is None:
            raise UnsupportedMediaType("a form, please")
        tokens = request.form.get("token") or []
        return tokens[-1] if tokens else None

    check = TokenValidator("secret-token", locate, name="application token")
    check(_request(form={"token": ["secret-token"]}))
    with pytest.raises(WebhookForbidden, match="missing application token"):
        check(_request(form={}))
    with pytest.raises(WebhookForbidden, match="does not match"):
        check(_request(form={"token": ["secret-tokeN"]}))
    with pytest.raises(UnsupportedMediaType):
        check(_request())


class Echo(WebhookReceiver):
    def __init__(self) -> None:
        self.validators = (BasicAuthValidator("u", "p"),)
        self.parsed = 0

    def parse(self, request: IncomingRequest, *, received_at: datetime) -> list[Event]:
        self.parsed += 1
        return []


def test_a_receiver_validates_before_it_parses() -> None:
    receiver = Echo()
    with pytest.raises(WebhookUnauthorized):
        receiver.receive(_request(), received_at=NOW)
    assert receiver.parsed == 0
    assert receiver.receive(_request(_basic("u", "p")), received_at=NOW) == [] and receiver.parsed == 1
