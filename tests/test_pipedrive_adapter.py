"""Pipedrive client, adapter and webhook parser against mocked HTTP (responses) and payload files."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import responses
from marshmallow import ValidationError

from adapters.contracts import IncomingRequest
from adapters.pipedrive.adapter import PipedriveAdapter
from adapters.pipedrive.client import PipedriveClient
from adapters.pipedrive.mapping import parse_time
from adapters.pipedrive.settings import PipedriveSettings, PipedriveSettingsSchema
from domain import AddComment, CloseDeal, CreateTask, EventKind, UpdateDeal, marker_for
from domain.errors import (
    AmbiguousWriteError,
    AuthError,
    FatalError,
    MalformedWebhook,
    NotFoundError,
    RateLimited,
    RetriableError,
    WebhookUnauthorized,
)

BASE = "https://acme.pipedrive.com"
TOKEN = "secret-api-token-42"
PAYLOADS = Path(__file__).parent / "payloads" / "pipedrive"
ADDRESS = "5f2b6d2ad1e0c0f3b1f1d8b7a3e2c1d0f9e8d7c6"
INVOICE = "9a1c2e3f4b5d6e7f8091a2b3c4d5e6f708192a3b"
RECEIVED = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
RATE_HEADERS = {"x-ratelimit-limit": "20", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "2", "retry-after": "2"}


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


def client(**kw: Any) -> PipedriveClient:
    c = PipedriveClient(BASE, TOKEN, rate=1000, burst=1000, backoff_initial=0.001, backoff_max=5, **kw)
    c.waits = []  # type: ignore[attr-defined]
    c._interruptible_sleep = c.waits.append  # type: ignore[method-assign, attr-defined]
    c.retry.sleep = c.waits.append  # type: ignore[method-assign, attr-defined]  # the retry waits, not the throttle's
    return c


def base_hooks() -> dict[str, str]:
    return {"webhook_user": "hooks", "webhook_password": "hook-password"}


def adapter(**settings: Any) -> PipedriveAdapter:
    chosen: dict[str, Any] = {"location_fields": {"address": ADDRESS}, **base_hooks(), **settings}
    return PipedriveAdapter("pd", PipedriveSettings(base_url=BASE, api_token=TOKEN, **chosen), client=client())


def hook(body: Any, user: str = "hooks", password: str = "hook-password", raw: bytes | None = None) -> IncomingRequest:
    headers = {"content-type": "application/json"}
    if user is not None:
        headers["authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    data = raw if raw is not None else json.dumps(body).encode()
    return IncomingRequest(body=data, content_type="application/json", headers=headers)


PARSER = adapter()


# --- webhooks -----------------------------------------------------------------------------


def test_v2_change_carries_previous_and_meta_id() -> None:
    [event] = PARSER.receive(hook(payload("webhook_v2_deal_change.json")), received_at=RECEIVED)
    assert event.kind == EventKind.DEAL_UPDATED and event.deal_id == "8" and event.crm == "pd"
    assert event.dedup_key == "pd:df47d877-7bd2-4b3c-9ef4-6c2b3c4a1d27"
    assert event.occurred_at == datetime(2022, 11, 24, 15, 11, 55, 724000, tzinfo=UTC)
    # Only the changed field, under Pipedrive's name and the normalised one the worker diffs.
    assert event.previous == {"stage_id": 1, "stage": "1"}
    assert event.raw["data"]["id"] == 8


def test_v2_create_and_delete() -> None:
    [created] = PARSER.receive(hook(payload("webhook_v2_deal_create.json")), received_at=RECEIVED)
    assert created.kind == EventKind.DEAL_CREATED and created.previous is None and created.deal_id == "9"
    assert created.occurred_at == datetime(2022, 11, 24, 15, 11, 55, 724000, tzinfo=UTC)  # integer ms
    [deleted] = PARSER.receive(hook(payload("webhook_v2_deal_delete.json")), received_at=RECEIVED)
    assert deleted.kind == EventKind.DEAL_DELETED and deleted.deal_id == "9" and deleted.previous is None
    assert deleted.dedup_key == "pd:e3b0c442-98fc-4c14-9afb-f4c8996fb924"


def test_v2_retry_and_duplicate_share_the_dedup_key() -> None:
    body = payload("webhook_v2_deal_change.json")
    first = PARSER.receive(hook(body), received_at=RECEIVED)[0]
    body["meta"]["attempt"] = 3
    again = PARSER.receive(hook(body), received_at=RECEIVED)[0]
    assert first.dedup_key == again.dedup_key


def test_v1_updated_keeps_only_changed_fields_and_retries_dedupe() -> None:
    body = payload("webhook_v1_deal_updated.json")
    [event] = PARSER.receive(hook(body), received_at=RECEIVED)
    assert event.kind == EventKind.DEAL_UPDATED and event.deal_id == "123"
    assert event.previous == {"status": "open", "stage_semantic": "open"}
    assert event.occurred_at == datetime.fromtimestamp(1523440213, tz=UTC)
    body["retry"] = 2
    assert PARSER.receive(hook(body), received_at=RECEIVED)[0].dedup_key == event.dedup_key
    assert event.dedup_key.startswith("pd1:")


def test_own_api_changes_and_other_objects_are_acknowledged_without_events() -> None:
    body = payload("webhook_v2_deal_change.json")
    body["meta"]["change_source"] = "api"
    assert PARSER.receive(hook(body), received_at=RECEIVED) == []
    keep = adapter(skip_own_changes=False)
    assert len(keep.receive(hook(body), received_at=RECEIVED)) == 1
    # A deal created through the API is another integration's (a web form): kept.
    created = payload("webhook_v2_deal_create.json")
    created["meta"]["change_source"] = "api"
    assert len(PARSER.receive(hook(created), received_at=RECEIVED)) == 1
    body["meta"].update(entity="activity", change_source="app")
    assert PARSER.receive(hook(body), received_at=RECEIVED) == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer abc"},
        {"authorization": "Basic !!!not-base64"},
        {"authorization": "Basic " + base64.b64encode(b"hooks:wrong-password").decode()},
        {"authorization": "Basic " + base64.b64encode(b"intruder:hook-password").decode()},
        {"authorization": "Basic " + base64.b64encode(b"hooks").decode()},
    ],
)
def test_bad_basic_auth_is_401_before_the_body_is_read(headers: dict[str, str]) -> None:
    request = IncomingRequest(body=b"not even json", content_type="application/json", headers=headers)
    with pytest.raises(WebhookUnauthorized) as err:
        PARSER.receive(request, received_at=RECEIVED)
    assert err.value.status == 401


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b"{broken",
        lambda b: b"[1, 2]",
        lambda b: json.dumps({"data": {}}).encode(),
        lambda b: json.dumps({**b, "meta": {**b["meta"], "entity_id": "8; DROP"}}).encode(),
        lambda b: json.dumps({**b, "meta": {**b["meta"], "action": "explode"}}).encode(),
        lambda b: json.dumps({**b, "meta": {**b["meta"], "id": ""}}).encode(),
        lambda b: json.dumps({**b, "meta": {**b["meta"], "timestamp": "yesterday"}}).encode(),
        lambda b: json.dumps({**b, "data": None}).encode(),
        lambda b: json.dumps({**b, "previous": [1]}).encode(),
        lambda b: json.dumps({"meta": {"foo": 1}}).encode(),
    ],
)
def test_malformed_bodies_are_400(mutate: Any) -> None:
    raw = mutate(payload("webhook_v2_deal_change.json"))
    with pytest.raises(MalformedWebhook) as err:
        PARSER.receive(hook(None, raw=raw), received_at=RECEIVED)
    assert err.value.status == 400


# --- client: retries and typed errors -----------------------------------------------------


@responses.activate
def test_429_is_retried_after_the_headers_wait() -> None:
    url = f"{BASE}/api/v2/deals/8"
    responses.get(url, json=payload("error_429.json"), status=429, headers=RATE_HEADERS)
    responses.get(url, json={"success": True, "data": {"id": 8}})
    c = client()
    assert c.get("/api/v2/deals/8") == {"id": 8}
    assert len(responses.calls) == 2 and c.rate_limited == 1 and c.requests_sent == 2
    assert c.waits == [pytest.approx(2.0, abs=0.05)]  # type: ignore[attr-defined]
    assert responses.calls[0].request.headers["x-api-token"] == TOKEN
    assert "api_token" not in (responses.calls[0].request.url or "")  # never in the URL


@responses.activate
def test_429_on_a_write_is_resent_but_5xx_is_ambiguous() -> None:
    url = f"{BASE}/api/v2/activities"
    responses.post(url, json=payload("error_429.json"), status=429, headers={"x-ratelimit-reset": "1"})
    responses.post(url, json={"success": True, "data": {"id": 70001}})
    assert client().request("POST", "/api/v2/activities", json={}, idempotent=False)["data"]["id"] == 70001
    responses.reset()
    responses.post(url, json={"success": False, "error": "Internal server error", "data": None}, status=500)
    with pytest.raises(AmbiguousWriteError):
        client().request("POST", "/api/v2/activities", json={}, idempotent=False)
    assert len(responses.calls) == 1  # not resent: the dispatcher reconciles first


@responses.activate
def test_5xx_and_timeouts_are_retried_on_reads() -> None:
    url = f"{BASE}/v1/users"
    responses.get(url, json={"success": False, "error": "Service unavailable", "data": None}, status=503)
    responses.get(url, body=requests.ConnectionError("connection reset by peer"))
    responses.get(url, json=payload("users_v1.json"))
    assert len(client().get("/v1/users")) == 3
    assert len(responses.calls) == 3


@pytest.mark.parametrize(
    "status, body, error",
    [
        (400, {"success": False, "error": "title is required", "error_info": "Please check", "data": None}, FatalError),
        (401, {"success": False, "error": "unauthorized access", "data": None}, AuthError),
        (402, {"success": False, "error": "Payment required", "data": None}, AuthError),
        (403, {"success": False, "error": "You do not have permission", "data": None}, AuthError),
        (404, None, NotFoundError),
        (410, {"success": False, "error": "Deal is deleted", "data": None}, NotFoundError),
        (422, {"success": False, "error": "Unprocessable", "data": None}, FatalError),
        (200, {"success": False, "error": "Something odd", "data": None}, FatalError),
    ],
)
@responses.activate
def test_error_envelopes_become_typed_errors(status: int, body: Any, error: type[Exception]) -> None:
    responses.patch(f"{BASE}/api/v2/deals/8", json=body or payload("error_404.json"), status=status)
    with pytest.raises(error) as err:
        client().request("PATCH", "/api/v2/deals/8", json={"title": ""})
    assert err.value.status == status  # type: ignore[attr-defined]
    assert err.value.description  # type: ignore[attr-defined]
    assert TOKEN not in str(err.value)
    assert not isinstance(err.value, RetriableError)


@responses.activate
def test_cdn_403_page_backs_off_as_a_rate_limit() -> None:
    responses.get(f"{BASE}/v1/users", body="<html><h1>403 Forbidden</h1></html>", status=403, content_type="text/html")
    c = client(max_attempts=1)
    with pytest.raises(RateLimited) as err:
        c.get("/v1/users")
    assert err.value.retry_after == 60.0


@responses.activate
def test_interrupt_stops_retrying() -> None:
    responses.get(f"{BASE}/v1/users", json=payload("error_429.json"), status=429, headers=RATE_HEADERS)
    c = PipedriveClient(BASE, TOKEN, rate=1000, burst=1000, backoff_initial=30, max_attempts=5)
    c.interrupt()
    with pytest.raises(RetriableError):
        c.get("/v1/users")
    assert len(responses.calls) == 0  # nothing sent once the process is stopping


# --- paging ----------------------------------------------------------------------------------


@responses.activate
def test_v2_cursor_paging_and_changed_deals() -> None:
    url = f"{BASE}/api/v2/deals"
    responses.get(url, json=payload("deals_v2_page1.json"))
    responses.get(url, json=payload("deals_v2_page2.json"))
    deals = list(adapter().changed_deals(datetime(2022, 11, 24, 15, 0, tzinfo=UTC)))
    assert [d.id for d in deals] == ["8", "11"]
    first, second = (parse_qs(urlparse(c.request.url or "").query) for c in responses.calls)
    assert first["updated_since"] == ["2022-11-24T15:00:00Z"]
    assert first["sort_by"] == ["update_time"] and first["sort_direction"] == ["asc"]
    assert first["limit"] == ["500"] and "cursor" not in first
    assert second["cursor"] == ["eyJmaWVsZCI6InVwZGF0ZV90aW1lIiwiaWQiOjh9"]


@responses.activate
def test_v1_offset_paging_stops_at_the_last_page() -> None:
    url = f"{BASE}/v1/notes"
    responses.get(
        url,
        json={
            "success": True,
            "data": [{"id": 90001, "content": "a"}],
            "additional_data": {
                "pagination": {"start": 0, "limit": 1, "more_items_in_collection": True, "next_start": 1}
            },
        },
    )
    responses.get(
        url,
        json={
            "success": True,
            "data": [{"id": 90002, "content": "b"}],
            "additional_data": {"pagination": {"start": 1, "limit": 1, "more_items_in_collection": False}},
        },
    )
    rows = list(client().iter_v1("/v1/notes", {"deal_id": 8}, limit=1))
    assert [r["id"] for r in rows] == [90001, 90002]
    assert parse_qs(urlparse(responses.calls[1].request.url or "").query)["start"] == ["1"]


@responses.activate
def test_v1_empty_page_is_data_null() -> None:
    responses.get(
        f"{BASE}/v1/notes",
        json={
            "success": True,
            "data": None,
            "additional_data": {"pagination": {"start": 0, "limit": 500, "more_items_in_collection": False}},
        },
    )
    assert list(client().iter_v1("/v1/notes")) == []


# --- mapping and the adapter ------------------------------------------------------------


@responses.activate
def test_deal_mapping() -> None:
    responses.get(f"{BASE}/api/v2/deals", json=payload("deals_v2_page1.json"))
    responses.get(f"{BASE}/api/v2/deals", json=payload("deals_v2_page2.json"))
    deals = adapter().get_deals(["8", "11", "8"])
    assert len(responses.calls) == 2  # one list filtered by ids, two pages
    assert parse_qs(urlparse(responses.calls[0].request.url or "").query)["ids"] == ["8,11"]
    open_deal = deals["8"]
    assert (open_deal.stage, open_deal.pipeline, open_deal.responsible_id) == ("2", "1", "10002")
    assert open_deal.stage_semantic == "open" and open_deal.amount == Decimal("1200.5")
    assert open_deal.currency == "EUR"
    assert open_deal.created_at == datetime(2022, 11, 24, 15, 0, 1, tzinfo=UTC)
    assert open_deal.updated_at == datetime(2022, 11, 24, 15, 11, 55, tzinfo=UTC)
    assert open_deal.fields[INVOICE] == "INV-2022-0042"
    loc = open_deal.location
    assert loc is not None and (loc.city, loc.postcode, loc.street) == ("Казань", "420111", "ул. Мира")
    assert loc.district == "Советский район"
    lost = deals["11"]
    assert lost.stage_semantic == "lost" and lost.get("lost_reason") == "Too expensive"
    assert lost.location is not None and lost.location.city == ""


@responses.activate
def test_single_deal_read_missing_and_deleted() -> None:
    responses.get(f"{BASE}/api/v2/deals/5", json=payload("error_404.json"), status=404)
    responses.get(
        f"{BASE}/api/v2/deals/6", json={"success": True, "data": {"id": 6, "status": "deleted", "is_deleted": True}}
    )
    a = adapter()
    assert a.get_deal("5") is None and a.get_deal("6") is None


def test_structured_address_and_time_formats() -> None:
    from adapters.pipedrive.mapping import deal_from_pd

    raw = {
        "id": 3,
        "status": "won",
        "custom_fields": {
            ADDRESS: {
                "value": "Narva mnt 5, Tallinn",
                "formatted_address": "Narva mnt 5, 10117 Tallinn, Estonia",
                "locality": "Tallinn",
                "sublocality": "Kesklinn",
                "route": "Narva mnt",
                "postal_code": "10117",
            }
        },
    }
    deal = deal_from_pd("pd", raw, {"address": ADDRESS})
    assert deal.stage_semantic == "won"
    assert deal.location is not None
    assert (deal.location.city, deal.location.district, deal.location.postcode) == ("Tallinn", "Kesklinn", "10117")
    assert parse_time("2018-04-11 09:50:13") == datetime(2018, 4, 11, 9, 50, 13, tzinfo=UTC)
    assert parse_time(1523440213) == datetime(2018, 4, 11, 9, 50, 13, tzinfo=UTC)
    assert parse_time("2018-04-11T12:50:13+03:00") == datetime(2018, 4, 11, 9, 50, 13, tzinfo=UTC)


@responses.activate
def test_users() -> None:
    responses.get(f"{BASE}/v1/users", json=payload("users_v1.json"))
    users = adapter().get_users(["10002", "10003", "999"])
    assert set(users) == {"10002", "10003"}
    assert users["10002"].name == "Ivan Petrov" and users["10002"].active and not users["10003"].active


@responses.activate
def test_create_task_is_an_activity_with_the_marker_and_is_found_again() -> None:
    marker = marker_for("rule|pd|8|once|create_task")
    responses.post(f"{BASE}/api/v2/activities", json={"success": True, "data": {"id": 70001}})
    cmd = CreateTask(
        "8",
        title="Call the client",
        description="Ask <why>\nand when",
        responsible_id="10002",
        deadline=datetime(2026, 11, 26, 12, 30, tzinfo=UTC),
        task_type="call",
    )
    a = adapter()
    assert a.execute(cmd, marker).remote_id == "70001"
    sent = json.loads(responses.calls[0].request.body or b"{}")
    assert sent["subject"] == "Call the client" and sent["type"] == "call" and sent["done"] is False
    assert (sent["deal_id"], sent["owner_id"]) == (8, 10002)
    assert (sent["due_date"], sent["due_time"]) == ("2026-11-26", "12:30")
    assert marker in sent["note"] and "Ask &lt;why&gt;<br>and when" in sent["note"]
    responses.get(
        f"{BASE}/api/v2/activities",
        json={
            "success": True,
            "data": [{"id": 70000, "note": "someone else's"}, {"id": 70001, "note": sent["note"]}],
            "additional_data": {"next_cursor": None},
        },
    )
    found = a.find_written(cmd, marker)
    assert found is not None and found.remote_id == "70001" and found.reconciled
    assert parse_qs(urlparse(responses.calls[1].request.url or "").query)["deal_id"] == ["8"]
    assert a.find_written(cmd, marker_for("other")) is None


@responses.activate
def test_comment_is_a_note_found_by_marker() -> None:
    marker = marker_for("k")
    responses.post(f"{BASE}/v1/notes", json={"success": True, "data": {"id": 90001}}, status=201)
    a = adapter()
    assert a.execute(AddComment("8", text="Hello"), marker).remote_id == "90001"
    sent = json.loads(responses.calls[0].request.body or b"{}")
    assert sent["deal_id"] == 8 and marker in sent["content"]
    responses.get(
        f"{BASE}/v1/notes",
        json={
            "success": True,
            "data": [{"id": 90001, "content": sent["content"]}],
            "additional_data": {"pagination": {"more_items_in_collection": False}},
        },
    )
    found = a.find_written(AddComment("8", text="Hello"), marker)
    assert found is not None and found.remote_id == "90001"


@responses.activate
def test_update_and_close_deal_bodies() -> None:
    responses.patch(f"{BASE}/api/v2/deals/8", json={"success": True, "data": {"id": 8}})
    a = adapter()
    a.execute(UpdateDeal("8", values={"responsible_id": "10002", "stage": "3", "title": "T", INVOICE: "X"}), "m")
    a.execute(CloseDeal("8", outcome="lost", reason="Too expensive"), "m")
    a.execute(CloseDeal("8", outcome="won"), "m")
    bodies = [json.loads(c.request.body or b"{}") for c in responses.calls]
    assert bodies[0] == {"owner_id": 10002, "stage_id": 3, "title": "T", "custom_fields": {INVOICE: "X"}}
    assert bodies[1] == {"status": "lost", "lost_reason": "Too expensive"}
    assert bodies[2] == {"status": "won"}
    assert a.find_written(UpdateDeal("8", values={"title": "T"}), "m") is None


def test_settings() -> None:
    schema = PipedriveSettingsSchema()
    base = {"type": "pipedrive", "api_token": TOKEN, "webhook_user": "hooks", "webhook_password": "hook-password"}
    loaded = schema.load_settings({**base, "base_url": "http://127.0.0.1:8082/"})
    assert loaded == PipedriveSettings(
        base_url="http://127.0.0.1:8082", api_token=TOKEN, webhook_user="hooks", webhook_password="hook-password"
    )
    assert schema.load({**base, "company_domain": "acme"})["base_url"] == "https://acme.pipedrive.com"
    with pytest.raises(ValidationError):
        schema.load(base)
    with pytest.raises(ValidationError):
        schema.load({**base, "base_url": BASE, "location_fields": {"address": "not-a-key"}})


@responses.activate
def test_find_deal_ids_by_custom_field() -> None:
    responses.get(
        f"{BASE}/v1/itemSearch/field",
        json={
            "success": True,
            "data": [{"id": 8, INVOICE: "INV-2022-0042"}, {"id": 11, INVOICE: "inv-2022-0042"}],
            "additional_data": {"pagination": {"start": 0, "limit": 100, "more_items_in_collection": False}},
        },
    )
    responses.get(
        f"{BASE}/api/v2/deals",
        json={
            "success": True,
            "data": [payload("deals_v2_page1.json")["data"][0], payload("deals_v2_page2.json")["data"][0]],
            "additional_data": {"next_cursor": None},
        },
    )
    assert adapter().find_deal_ids(INVOICE, "INV-2022-0042") == ["8"]  # 11 differs in case only
    query = parse_qs(urlparse(responses.calls[0].request.url or "").query)
    assert query["field_key"] == [INVOICE] and query["exact_match"] == ["true"]
    assert query["field_type"] == ["dealField"] and query["return_item_ids"] == ["true"]


@responses.activate
def test_empty_window_holds_the_next_call_until_reset() -> None:
    url = f"{BASE}/api/v2/deals/8"
    responses.get(
        url,
        json={"success": True, "data": {"id": 8}},
        headers={"x-ratelimit-limit": "20", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "2"},
    )
    responses.get(
        url,
        json={"success": True, "data": {"id": 8}},
        headers={"x-ratelimit-limit": "20", "x-ratelimit-remaining": "19", "x-ratelimit-reset": "2"},
    )
    c = client()
    c.get("/api/v2/deals/8")
    assert c.waits == []  # type: ignore[attr-defined]
    c.get("/api/v2/deals/8")
    assert len(c.waits) == 1 and 1.5 < c.waits[0] <= 2.0  # type: ignore[attr-defined]
