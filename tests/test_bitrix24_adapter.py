"""Bitrix24 client and adapter against mocked HTTP (responses): retries, typed errors, parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import responses

from adapters.base import IncomingRequest
from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.bitrix24.client import Bitrix24Client, encode_query
from adapters.bitrix24.mapping import parse_address
from adapters.bitrix24.webhook import Bitrix24WebhookParser
from adapters.errors import AmbiguousWriteError, AuthError, FatalError, NotFoundError, WebhookForbidden
from connector.domain import CreateTask

BASE = "https://x.bitrix24.ru/rest/1/code/"
PAYLOADS = Path(__file__).parent / "payloads" / "bitrix24"


def client(**kw: object) -> Bitrix24Client:
    return Bitrix24Client(BASE, rate=1000, burst=1000, backoff_initial=0.001, backoff_max=0.01, **kw)  # type: ignore[arg-type]


@responses.activate
def test_query_limit_exceeded_is_retried_then_succeeds() -> None:
    url = BASE + "crm.deal.get.json"
    responses.post(url, json={"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}, status=503)
    responses.post(url, json={"result": {"ID": "1"}, "time": {}})
    assert client().call("crm.deal.get", {"ID": 1}) == {"ID": "1"}
    assert len(responses.calls) == 2


@responses.activate
def test_non_idempotent_write_is_not_resent_after_5xx() -> None:
    responses.post(BASE + "tasks.task.add.json", json={"error": "INTERNAL_SERVER_ERROR"}, status=500)
    with pytest.raises(AmbiguousWriteError):
        client().call("tasks.task.add", {"fields": {}}, idempotent=False)
    assert len(responses.calls) == 1


@responses.activate
def test_typed_errors() -> None:
    responses.post(BASE + "crm.deal.get.json", json={"error": "", "error_description": "Not found"}, status=400)
    responses.post(BASE + "user.get.json", json={"error": "INVALID_CREDENTIALS"}, status=401)
    responses.post(BASE + "crm.deal.update.json", json={"error": "ERROR_CORE", "error_description": "bad"},
                   status=400)
    c = client()
    with pytest.raises(NotFoundError):
        c.call("crm.deal.get", {"ID": 9})
    with pytest.raises(AuthError) as auth:
        c.call("user.get")
    assert "INVALID_CREDENTIALS" in str(auth.value)
    with pytest.raises(FatalError):
        c.call("crm.deal.update", {"ID": 1})


@responses.activate
def test_batch_empty_sections_and_errors() -> None:
    responses.post(BASE + "batch.json", json={"result": {
        "result": {"a": {"ID": "1"}}, "result_error": {"b": {"error": "", "error_description": "Not found"}},
        "result_total": [], "result_next": [], "result_time": []}, "time": {}})
    result = client().batch({"a": ("crm.deal.get", {"ID": 1}), "b": ("crm.deal.get", {"ID": 2})})
    assert result.result == {"a": {"ID": "1"}}
    assert isinstance(result.errors["b"], NotFoundError)
    assert result.total == {}


@responses.activate
def test_task_carries_marker_and_deal_binding() -> None:
    responses.post(BASE + "tasks.task.add.json", json={"result": {"task": {"id": "3711"}}})
    adapter = Bitrix24Adapter("b24", {"webhook_url": BASE, "application_token": "t" * 8}, client=client())
    deadline = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    res = adapter.execute(CreateTask("10", title="T", responsible_id="5", deadline=deadline), "crmc:abc")
    assert res.remote_id == "3711"
    import json

    fields = json.loads(responses.calls[0].request.body)["fields"]
    assert fields["UF_CRM_TASK"] == ["D_10"] and fields["RESPONSIBLE_ID"] == "5"
    assert "[crmc:abc]" in fields["DESCRIPTION"] and fields["DEADLINE"] == "2026-12-01T12:00:00+00:00"


def test_encode_query_php_style() -> None:
    q = parse_qs(encode_query({"filter": {">ID": 5}, "select": ["ID", "TITLE"]}))
    assert q == {"filter[>ID]": ["5"], "select[0]": ["ID"], "select[1]": ["TITLE"]}


def test_address_parsing() -> None:
    loc = parse_address("Казань, Советский район, ул. Академика Сахарова, 4, 420111|55.78;49.16|21")
    assert (loc.city, loc.district, loc.postcode) == ("Казань", "Советский район", "420111")
    assert loc.street.startswith("ул. Академика") and loc.lat == 55.78


def _request(body: str) -> IncomingRequest:
    form: dict[str, list[str]] = parse_qs(body, keep_blank_values=True)
    return IncomingRequest(body.encode(), "application/x-www-form-urlencoded", {}, form)


def test_real_payload_parses_to_normalised_event() -> None:
    body = (PAYLOADS / "deal_update.txt").read_text().strip()
    events = Bitrix24WebhookParser("b24", "app-token-for-tests").parse(_request(body), received_at=datetime.now(UTC))
    assert len(events) == 1
    ev = events[0]
    assert (ev.kind, ev.deal_id, ev.occurred_at.year) == ("deal.updated", "662", 2024)
    assert "application_token" not in ev.raw["auth"]  # the raw payload is kept, minus secrets


def test_delivery_without_stamp_is_not_a_duplicate_of_a_later_one() -> None:
    body = (PAYLOADS / "deal_update.txt").read_text().strip()
    unstamped = "&".join(p for p in body.split("&") if not p.startswith("ts="))
    parser = Bitrix24WebhookParser("b24", "app-token-for-tests")
    first = parser.parse(_request(unstamped), received_at=datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC))[0]
    again = parser.parse(_request(unstamped), received_at=datetime(2026, 3, 2, 10, 0, 0, 400_000, tzinfo=UTC))[0]
    later = parser.parse(_request(unstamped), received_at=datetime(2026, 3, 2, 10, 5, 0, tzinfo=UTC))[0]
    assert first.dedup_key == again.dedup_key  # the same second: a resent twin
    assert first.dedup_key != later.dedup_key  # a later change of the same deal is new
    stamped = parser.parse(_request(body), received_at=datetime(2026, 3, 2, 10, 0, tzinfo=UTC))[0]
    assert stamped.occurred_at.year == 2024 and stamped.dedup_key != first.dedup_key


def test_wrong_token_refused() -> None:
    body = (PAYLOADS / "deal_update.txt").read_text().strip()
    with pytest.raises(WebhookForbidden):
        Bitrix24WebhookParser("b24", "another-token").parse(_request(body), received_at=datetime.now(UTC))
