"""Bitrix24 client and adapter against mocked HTTP (responses): retries, typed errors, parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import responses

from adapters.addresses import parse_address
from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.bitrix24.client import Bitrix24Client, encode_query
from adapters.bitrix24.settings import Bitrix24Settings
from adapters.contracts import IncomingRequest
from domain import CreateTask
from domain.errors import AmbiguousWriteError, AuthError, FatalError, NotFoundError, WebhookForbidden

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
    responses.post(BASE + "crm.deal.update.json", json={"error": "ERROR_CORE", "error_description": "bad"}, status=400)
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
    responses.post(
        BASE + "batch.json",
        json={
            "result": {
                "result": {"a": {"ID": "1"}},
                "result_error": {"b": {"error": "", "error_description": "Not found"}},
                "result_total": [],
                "result_next": [],
                "result_time": [],
            },
            "time": {},
        },
    )
    result = client().batch({"a": ("crm.deal.get", {"ID": 1}), "b": ("crm.deal.get", {"ID": 2})})
    assert result.result == {"a": {"ID": "1"}}
    assert isinstance(result.errors["b"], NotFoundError)
    assert result.total == {}


@responses.activate
def test_task_carries_marker_and_deal_binding() -> None:
    responses.post(BASE + "tasks.task.add.json", json={"result": {"task": {"id": "3711"}}})
    adapter = Bitrix24Adapter("b24", Bitrix24Settings(webhook_url=BASE, application_token="t" * 8), client=client())
    deadline = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    res = adapter.execute(CreateTask("10", title="T", responsible_id="5", deadline=deadline), "crmc:abc")
    assert res.remote_id == "3711"
    import json

    fields = json.loads(responses.calls[0].request.body or "{}")["fields"]
    assert fields["UF_CRM_TASK"] == ["D_10"] and fields["RESPONSIBLE_ID"] == "5"
    assert "[crmc:abc]" in fields["DESCRIPTION"] and fields["DEADLINE"] == "2026-12-01T12:00:00+00:00"


def test_encode_query_php_style() -> None:
    q = parse_qs(encode_query({"filter": {">ID": 5}, "select": ["ID", "TITLE"]}))
    assert q == {"filter[>ID]": ["5"], "select[0]": ["ID"], "select[1]": ["TITLE"]}


def test_address_parsing() -> None:
    loc = parse_address("Казань, Советский район, ул. Академика Сахарова, 4, 420111|55.78;49.16|21")
    assert (loc.city, loc.district, loc.postcode) == ("Казань", "Советский район", "420111")
    assert loc.street.startswith("ул. Академика") and loc.lat == 55.78


def _receiver(token: str = "app-token-for-tests") -> Bitrix24Adapter:
    return Bitrix24Adapter("b24", Bitrix24Settings(webhook_url=BASE, application_token=token), client=client())


def _request(body: str) -> IncomingRequest:
    form: dict[str, list[str]] = parse_qs(body, keep_blank_values=True)
    return IncomingRequest(body.encode(), "application/x-www-form-urlencoded", {}, form)


def test_real_payload_parses_to_normalised_event() -> None:
    body = (PAYLOADS / "deal_update.txt").read_text().strip()
    events = _receiver().receive(_request(body), received_at=datetime.now(UTC))
    assert len(events) == 1
    ev = events[0]
    assert (ev.kind, ev.deal_id, ev.occurred_at.year) == ("deal.updated", "662", 2024)
    assert "application_token" not in ev.raw["auth"]  # the raw payload is kept, minus secrets


def test_delivery_without_stamp_is_not_a_duplicate_of_a_later_one() -> None:
    body = (PAYLOADS / "deal_update.txt").read_text().strip()
    unstamped = "&".join(p for p in body.split("&") if not p.startswith("ts="))
    parser = _receiver()
    first = parser.receive(_request(unstamped), received_at=datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC))[0]
    again = parser.receive(_request(unstamped), received_at=datetime(2026, 3, 2, 10, 0, 0, 400_000, tzinfo=UTC))[0]
    later = parser.receive(_request(unstamped), received_at=datetime(2026, 3, 2, 10, 5, 0, tzinfo=UTC))[0]
    assert first.dedup_key == again.dedup_key  # the same second: a resent twin
    assert first.dedup_key != later.dedup_key  # a later change of the same deal is new
    stamped = parser.receive(_request(body), received_at=datetime(2026, 3, 2, 10, 0, tzinfo=UTC))[0]
    assert stamped.occurred_at.year == 2024 and stamped.dedup_key != first.dedup_key


def test_wrong_token_refused() -> None:
    body = (PAYLOADS / "deal_update.txt").read_text().strip()
    with pytest.raises(WebhookForbidden):
        _receiver("another-token").receive(_request(body), received_at=datetime.now(UTC))


# --- batched paging ------------------------------------------------------------------------------


def _page_rows(first: int, count: int) -> list[dict[str, str]]:
    return [{"ID": str(i)} for i in range(first, first + count)]


def _batch_body(call: responses.Call) -> dict[str, str]:
    import json

    return dict(json.loads(call.request.body or "{}")["cmd"])


@responses.activate
def test_list_all_fetches_the_pages_after_the_first_in_batches() -> None:
    url = BASE + "crm.deal.list.json"
    responses.post(url, json={"result": _page_rows(1, 50), "next": 50, "total": 170, "time": {}})
    responses.post(
        BASE + "batch.json",
        json={
            "result": {
                "result": {"p50": _page_rows(51, 50), "p100": _page_rows(101, 50), "p150": _page_rows(151, 20)},
                "result_error": [],
                "result_total": {"p50": 170, "p100": 170, "p150": 170},
                "result_next": {"p50": 100, "p100": 150},
                "result_time": [],
            },
            "time": {},
        },
    )
    c = client()
    rows = list(c.list_all("crm.deal.list", {"order": {"ID": "ASC"}, "select": ["ID"]}))
    assert [int(r["ID"]) for r in rows] == list(range(1, 171))
    assert len(responses.calls) == 2  # 4 pages, 2 round trips
    cmd = _batch_body(responses.calls[1])
    assert list(cmd) == ["p50", "p100", "p150"]
    assert all("start=" + k[1:] in v and v.startswith("crm.deal.list?") for k, v in cmd.items())
    assert (c.requests_sent, c.commands_sent) == (2, 4)  # two hits; four page reads


@responses.activate
def test_list_all_batches_ignore_the_bucket_size_and_stop_where_the_list_ends() -> None:
    responses.post(
        BASE + "tasks.task.list.json",
        json={"result": {"tasks": _page_rows(1, 50)}, "next": 50, "total": 1000, "time": {}},
    )
    # The list shrank after the first page: the second page of the batch is the last one.
    responses.post(
        BASE + "batch.json",
        json={
            "result": {
                "result": {
                    "p50": {"tasks": _page_rows(51, 50)},
                    "p100": {"tasks": _page_rows(101, 3)},
                    **{f"p{s}": {"tasks": []} for s in range(150, 450, 50)},
                },
                "result_error": [],
                "result_total": {},
                "result_next": {"p50": 100},
                "result_time": [],
            },
            "time": {},
        },
    )
    c = Bitrix24Client(BASE, rate=1000, burst=10, backoff_initial=0.001)  # a bucket of 9 hits
    rows = list(c.list_all("tasks.task.list", {"filter": {"UF_CRM_TASK": "D_1"}}, items_key="tasks"))
    assert len(rows) == 103
    # A batch is one hit however many commands it holds: the 19 pages left go in one batch.
    assert len(_batch_body(responses.calls[1])) == 19 and c.batch_size == 50


@responses.activate
def test_list_all_raises_a_later_pages_error() -> None:
    responses.post(BASE + "crm.deal.list.json", json={"result": _page_rows(1, 50), "next": 50, "total": 60})
    responses.post(BASE + "crm.deal.list.json", json={"error": "ACCESS_DENIED"}, status=403)
    with pytest.raises(AuthError):
        list(client().list_all("crm.deal.list", {}))  # one page left: a plain call


def test_deal_reads_travel_in_full_batches_of_fifty_without_refusals() -> None:
    # A batch is one hit of the portal's bucket: 100 deals are two hits, never refused, even
    # with a bucket of 2 (our side keeps a unit of margin).
    from simulators.bitrix24 import Bitrix24Simulator

    simulator = Bitrix24Simulator(rate=2, burst=2)
    server = simulator.serve()
    try:
        ids = [simulator.add_deal({"TITLE": f"D{i}"}) for i in range(100)]
        b24 = Bitrix24Adapter(
            "b24",
            Bitrix24Settings(
                webhook_url=server.base_url + simulator.webhook_base, application_token="t" * 8, rate=2, burst=2
            ),
        )
        sizes: list[int] = []
        real_batch = b24.client.batch

        def recording_batch(commands, **kw):  # type: ignore[no-untyped-def]
            sizes.append(len(commands))
            return real_batch(commands, **kw)

        b24.client.batch = recording_batch  # type: ignore[method-assign]
        assert b24.client.batch_size == 50
        assert set(b24.get_deals(ids)) == set(ids)
        assert sizes == [50, 50]
        assert simulator.http_requests == 2 and simulator.refusals == 0
    finally:
        server.stop()
        simulator.close()


def test_a_deal_built_by_the_fast_constructor_is_the_dataclass_one() -> None:
    import dataclasses

    from adapters.bitrix24.mapping import deal_from_b24
    from domain import Deal

    raw = {"ID": "7", "TITLE": "T", "STAGE_ID": "C1:WON", "STAGE_SEMANTIC_ID": "S", "CATEGORY_ID": "1",
           "ASSIGNED_BY_ID": "3", "OPPORTUNITY": "10.50", "CURRENCY_ID": "RUB",
           "DATE_CREATE": "2026-11-25T10:00:00+03:00", "DATE_MODIFY": "2026-11-26T10:00:00+03:00",
           "UF_CRM_ADDRESS": "Казань, ул. Мира, 1"}  # fmt: skip
    deal = deal_from_b24("b24", raw, {"address": "UF_CRM_ADDRESS"})
    built = Deal(**{f.name: getattr(deal, f.name) for f in dataclasses.fields(Deal)})
    assert deal == built and hash(deal.location) == hash(built.location) and repr(deal) == repr(built)
    assert (deal.stage_semantic, deal.responsible_id, str(deal.amount)) == ("won", "3", "10.50")
    assert deal.location is not None and deal.location.city == "Казань"
    with pytest.raises(dataclasses.FrozenInstanceError):
        deal.title = "x"  # type: ignore[misc]
    assert dataclasses.replace(deal, title="x").title == "x" and deal.fields is not raw
