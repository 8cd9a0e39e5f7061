"""changed_deals chains keyset pages inside batch requests: mocked answers, then the simulator."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs

import responses

from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.bitrix24.client import Bitrix24Client
from adapters.bitrix24.settings import Bitrix24Settings
from simulators.bitrix24 import Bitrix24Simulator

BASE = "https://x.bitrix24.ru/rest/1/code/"
MSK = timezone(timedelta(hours=3))
SECOND = "2026-03-02T10:00:00+03:00"


def adapter(**kw: Any) -> Bitrix24Adapter:
    c = Bitrix24Client(BASE, rate=1000, burst=1000, backoff_initial=0.001, backoff_max=0.01)
    return Bitrix24Adapter("b24", Bitrix24Settings(webhook_url=BASE, application_token="t" * 8, **kw), client=c)


def deals(first: int, count: int, moment: str | None = None) -> list[dict[str, str]]:
    """Deals ``first``.. in one second, or (no ``moment``) one second each from 10:00:00."""
    start = datetime.fromisoformat(SECOND)
    return [
        {
            "ID": str(i),
            "TITLE": f"D{i}",
            "DATE_MODIFY": moment or (start + timedelta(seconds=i)).isoformat(),
            "CATEGORY_ID": "0",
            "STAGE_ID": "NEW",
            "ASSIGNED_BY_ID": "1",
        }
        for i in range(first, first + count)
    ]


def sent(call: Any) -> dict[str, Any]:
    return dict(json.loads(call.request.body or "{}"))


def command(call: Any, key: str) -> dict[str, list[str]]:
    method, _, query = sent(call)["cmd"][key].partition("?")
    assert method == "crm.deal.list"
    return parse_qs(query)


def batch_answer(
    pages: dict[str, list[dict[str, str]]], totals: dict[str, int] | None = None, errors: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "result": {
            "result": pages,
            "result_error": errors or [],
            "result_total": totals or [],
            "result_next": [],
            "result_time": [],
        },
        "time": {},
    }


@responses.activate
def test_a_crowded_second_is_counted_then_finished_in_one_batch() -> None:
    url = BASE + "crm.deal.list.json"
    responses.post(url, json={"result": deals(1, 50, SECOND), "total": 130, "next": 50})
    responses.post(url, json={"result": deals(51, 50, SECOND), "total": 80, "next": 50})
    responses.post(BASE + "batch.json", json=batch_answer({"c0": deals(101, 30, SECOND), "c1": []}))
    read = [d.id for d in adapter().changed_deals(None)]
    assert read == [str(i) for i in range(1, 131)]
    assert len(responses.calls) == 3
    first, probe = sent(responses.calls[0]), sent(responses.calls[1])
    assert first["filter"] == {} and first["start"] == 0  # one count of the selection, on its first page
    assert first["order"] == {"DATE_MODIFY": "ASC", "ID": "ASC"}
    assert probe["filter"] == {"=DATE_MODIFY": SECOND, ">ID": 50} and probe["start"] == 0  # the second's rest
    cmd = sent(responses.calls[2])["cmd"]
    assert list(cmd) == ["c0", "c1"]  # 30 left in the second, none after it: two pages, no more
    c0, c1 = command(responses.calls[2], "c0"), command(responses.calls[2], "c1")
    assert c0["filter[=DATE_MODIFY]"] == [SECOND] and c0["filter[>ID]"] == ["100"] and c0["start"] == ["-1"]
    assert c1["filter[>DATE_MODIFY]"] == [SECOND] and c1["start"] == ["-1"]


@responses.activate
def test_spread_deals_chain_pages_by_reference_and_drop_pages_past_a_short_one() -> None:
    since = datetime(2026, 3, 2, 10, 0, 0, tzinfo=MSK)
    responses.post(BASE + "crm.deal.list.json", json={"result": deals(1, 50), "total": 200, "next": 50})
    # c0 brings row 50 again (>= its second) and 50 new; c1 ends the read; c2 and c3 started
    # from a row that does not exist: their answers (an error here) are never used.
    responses.post(
        BASE + "batch.json",
        json=batch_answer(
            {"c0": deals(50, 50), "c1": deals(100, 21), "c2": deals(1, 50)},
            errors={"c3": {"error": "INVALID_FILTER", "error_description": "bad"}},
        ),
    )
    read = [d.id for d in adapter().changed_deals(since)]
    assert read == [str(i) for i in range(1, 121)]
    first = sent(responses.calls[0])
    assert first["filter"] == {">=DATE_MODIFY": "2026-03-02T10:00:00+03:00"} and first["start"] == 0
    cmd = sent(responses.calls[1])["cmd"]
    assert list(cmd) == ["c0", "c1", "c2", "c3"]  # 150 left by the count: 4 pages
    c0, c1 = command(responses.calls[1], "c0"), command(responses.calls[1], "c1")
    assert c0["filter[>=DATE_MODIFY]"] == [deals(50, 1)[0]["DATE_MODIFY"]]
    assert c1["filter[>=DATE_MODIFY]"] == ["$result[c0][49][DATE_MODIFY]"]
    assert "%24result%5Bc0%5D%5B49%5D%5BDATE_MODIFY%5D" in cmd["c1"]  # encoded once inside the command
    assert len(responses.calls) == 2


def test_changed_deals_in_order_complete_and_never_refused_while_deals_change() -> None:
    now = [datetime(2026, 3, 2, 10, 0, 0, tzinfo=MSK)]
    simulator = Bitrix24Simulator(application_token="token-12345678", rate=50, burst=50, clock=lambda: now[0])
    server = simulator.serve()
    try:
        # 300 deals in one second, then 400 over many seconds (some crowded), then 100 more in one.
        ids = [simulator.add_deal({"TITLE": f"A{i}"}) for i in range(300)]
        for i in range(400):
            now[0] += timedelta(seconds=1 if i % 3 else 0)
            ids.append(simulator.add_deal({"TITLE": f"B{i}"}))
        now[0] += timedelta(seconds=1)
        ids += [simulator.add_deal({"TITLE": f"C{i}"}) for i in range(100)]
        b24 = Bitrix24Adapter(
            "b24",
            Bitrix24Settings(
                webhook_url=server.base_url + simulator.webhook_base, application_token="t" * 8, rate=50, burst=50
            ),
        )
        real = b24.client.call_full
        touched = iter(ids[::7])

        def call_and_touch(method, params=None, **kw):  # type: ignore[no-untyped-def]
            answer = real(method, params, **kw)
            now[0] += timedelta(seconds=1)
            simulator.update_deal(next(touched), {"COMMENTS": "edited"})  # moves to the end of the order
            return answer

        b24.client.call_full = call_and_touch  # type: ignore[method-assign]
        read = list(b24.changed_deals(datetime(2026, 3, 2, 9, 0, tzinfo=MSK)))
        keys = [(d.updated_at, int(d.id)) for d in read]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)  # DATE_MODIFY order, each row once
        assert {d.id for d in read} == set(ids)
        assert simulator.refusals == 0
        assert b24.client.requests_sent <= 12 and b24.client.commands_sent <= len(ids) // 50 + 20
    finally:
        server.stop()
        simulator.close()
