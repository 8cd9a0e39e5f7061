"""Bitrix24 reads with several batch requests in flight: the rows come in order, an error
surfaces at its page's turn, and the shared throttle keeps them all within the portal's bucket.
Mocked HTTP (responses) for the order and the errors, the simulator end to end for the bucket."""

from __future__ import annotations

import json
import threading
from collections.abc import Generator, Iterator
from typing import Any

import pytest
import responses

from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.bitrix24.client import Bitrix24Client
from adapters.bitrix24.settings import Bitrix24Settings
from adapters.throttle import Throttle
from domain.errors import AuthError, FatalError
from simulators.bitrix24 import Bitrix24Simulator

BASE = "https://x.bitrix24.ru/rest/1/code/"
WAIT = 10.0  # a bound on waiting for another request in flight (never reached when it works)


def client(**kw: Any) -> Bitrix24Client:
    return Bitrix24Client(BASE, rate=1000, burst=1000, backoff_initial=0.001, backoff_max=0.01, **kw)


def _rows(first: int, count: int) -> list[dict[str, str]]:
    return [{"ID": str(i)} for i in range(first, first + count)]


def _batch_answer(starts: list[int], total: int) -> dict[str, Any]:
    result = {f"p{s}": _rows(s + 1, min(50, total - s)) for s in starts}
    nxt = {f"p{s}": s + 50 for s in starts if s + 50 < total}
    return {
        "result": {"result": result, "result_error": [], "result_total": {}, "result_next": nxt, "result_time": []},
        "time": {},
    }


def _starts(request: Any) -> list[int]:
    return [int(key[1:]) for key in json.loads(request.body)["cmd"]]


class Portal:
    """Answers ``batch`` page reads; the batch holding offset 50 answers only once every other
    batch has arrived, so the later pages' answers are in before the earlier ones."""

    def __init__(self, total: int, batches: int, errors: dict[int, dict[str, str]] | None = None) -> None:
        self.total = total
        self.others = threading.Barrier(batches)
        self.errors = errors or {}
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def __call__(self, request: Any) -> tuple[int, dict[str, str], str]:
        starts = _starts(request)
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.others.wait(WAIT)  # every batch is in flight before any is answered
            body = _batch_answer(starts, self.total)
            for s in starts:
                if s in self.errors:
                    body["result"]["result"].pop(f"p{s}", None)
                    body["result"]["result_error"] = {f"p{s}": self.errors[s]}
            return 200, {}, json.dumps(body)
        finally:
            with self.lock:
                self.in_flight -= 1


def _first_page(total: int) -> None:
    responses.post(BASE + "crm.deal.list.json", json={"result": _rows(1, 50), "next": 50, "total": total, "time": {}})


@responses.activate
def test_list_all_sends_the_batches_together_and_yields_rows_in_order() -> None:
    total = 50 + 3 * 2500  # the first page, then three batches of 50 pages
    portal = Portal(total, batches=3)
    _first_page(total)
    responses.add_callback(responses.POST, BASE + "batch.json", callback=portal)
    c = client()
    rows = list(c.list_all("crm.deal.list", {"order": {"ID": "ASC"}}))
    assert [int(r["ID"]) for r in rows] == list(range(1, total + 1))
    assert portal.most_in_flight == 3  # all three were out at once (the barrier needs it)
    assert (c.requests_sent, c.commands_sent) == (4, 151)


@responses.activate
def test_list_all_keeps_no_more_requests_in_flight_than_its_concurrency() -> None:
    total = 50 + 6 * 2500
    portal = Portal(total, batches=2)
    _first_page(total)
    responses.add_callback(responses.POST, BASE + "batch.json", callback=portal)
    rows = list(client(read_concurrency=2).list_all("crm.deal.list", {}))
    assert len(rows) == total and portal.most_in_flight == 2


@responses.activate
def test_a_later_pages_error_surfaces_after_every_row_before_it() -> None:
    total = 50 + 3 * 2500
    portal = Portal(total, batches=3, errors={2550 + 49 * 50: {"error": "ERROR_CORE", "error_description": "bad"}})
    _first_page(total)
    responses.add_callback(responses.POST, BASE + "batch.json", callback=portal)
    seen: list[int] = []
    with pytest.raises(FatalError, match="Bitrix24 error"):
        for row in client().list_all("crm.deal.list", {}):
            seen.append(int(row["ID"]))
    # Every row of the pages before the failed one (the last page of the second batch).
    assert seen == list(range(1, 2550 + 49 * 50 + 1))


@responses.activate
def test_a_failed_request_mid_way_raises_its_own_error_at_its_turn() -> None:
    total = 50 + 3 * 2500
    _first_page(total)
    answered = threading.Barrier(3)

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        starts = _starts(request)
        answered.wait(WAIT)
        if starts[0] == 2550:
            return 401, {}, json.dumps({"error": "NO_AUTH_FOUND", "error_description": "Wrong auth"})
        return 200, {}, json.dumps(_batch_answer(starts, total))

    responses.add_callback(responses.POST, BASE + "batch.json", callback=answer)
    seen: list[int] = []
    with pytest.raises(AuthError):
        for row in client().list_all("crm.deal.list", {}):
            seen.append(int(row["ID"]))
    assert seen == list(range(1, 2551))  # the first page and the first batch, then the error


@responses.activate
def test_stopping_early_sends_no_more_requests_and_joins_the_ones_out() -> None:
    total = 50 + 8 * 2500
    _first_page(total)
    sent: list[list[int]] = []

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        sent.append(_starts(request))
        return 200, {}, json.dumps(_batch_answer(sent[-1], total))

    responses.add_callback(responses.POST, BASE + "batch.json", callback=answer)
    before = threading.active_count()
    rows = client(read_concurrency=2).list_all("crm.deal.list", {})
    assert isinstance(rows, Generator)
    for _ in range(60):  # the first page and a little of the first batch
        next(rows)
    rows.close()
    assert len(sent) <= 3  # the two out at the start, one more sent as the first was taken
    assert threading.active_count() == before


class FakeTime:
    """One clock for the portal's bucket and the client's throttle; sleeping moves it on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


@pytest.fixture
def small_bucket_portal() -> Iterator[tuple[Bitrix24Simulator, FakeTime, str]]:
    fake = FakeTime()
    sim = Bitrix24Simulator(rate=2, burst=3, monotonic=fake)
    for i in range(1, 12_001):
        sim.add_deal({"TITLE": f"D{i}", "OPPORTUNITY": i})
    server = sim.serve()
    yield sim, fake, server.base_url + sim.webhook_base
    server.stop()
    sim.close()


def test_concurrent_batches_stay_within_a_small_bucket(
    small_bucket_portal: tuple[Bitrix24Simulator, FakeTime, str],
) -> None:
    # 12,000 deals: a first page and five batches, all wanting to go at once into a bucket of 3.
    sim, fake, url = small_bucket_portal
    adapter = Bitrix24Adapter("b24", Bitrix24Settings(webhook_url=url, application_token="t" * 8, rate=2, burst=3))
    throttle = adapter.client.throttle = adapter.client.retry.throttle = Throttle(2, 3, clock=fake, sleep=fake.sleep)
    try:
        rows = list(adapter.client.list_all("crm.deal.list", {"order": {"ID": "ASC"}, "select": ["ID"]}))
    finally:
        adapter.close()
    assert [int(r["ID"]) for r in rows] == list(range(1, 12_001))
    assert sim.http_requests == 6 and sim.refusals == 0
    assert throttle.waited > 0  # the bucket, not luck, held them back
