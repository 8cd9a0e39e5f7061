"""Bitrix24 reads with several batch requests in flight: the rows come in order, an error
surfaces at its page's turn, and the shared throttle keeps them all within the portal's bucket.
Mocked HTTP (responses) for the order and the errors, the simulator end to end for the bucket."""

from __future__ import annotations

import json
import threading
from collections.abc import Generator, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import responses

from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.bitrix24.client import Bitrix24Client
from adapters.bitrix24.settings import Bitrix24Settings
from domain.errors import AuthError, FatalError
from simulators.bitrix24 import MSK, Bitrix24Simulator

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


@pytest.fixture
def portal_12000() -> Iterator[tuple[Bitrix24Simulator, str]]:
    sim = Bitrix24Simulator(rate=2, burst=50)
    for i in range(1, 12_001):
        sim.add_deal({"TITLE": f"D{i}", "OPPORTUNITY": i})
    server = sim.serve()
    yield sim, server.base_url + sim.webhook_base
    server.stop()
    sim.close()


def test_concurrent_batches_each_take_their_turn_at_the_shared_throttle(
    portal_12000: tuple[Bitrix24Simulator, str],
) -> None:
    # 12,000 deals at the documented limit: a first page and five batches sent together.
    sim, url = portal_12000
    adapter = Bitrix24Adapter("b24", Bitrix24Settings(webhook_url=url, application_token="t" * 8, rate=2, burst=50))
    throttle = adapter.client.throttle
    assert throttle is not None
    turns: list[str] = []
    real_acquire = throttle.acquire

    def acquire(units: float = 1.0) -> float:
        turns.append(threading.current_thread().name)
        return real_acquire(units)

    throttle.acquire = acquire  # type: ignore[method-assign]
    try:
        rows = list(adapter.client.list_all("crm.deal.list", {"order": {"ID": "ASC"}, "select": ["ID"]}))
    finally:
        adapter.close()
    assert [int(r["ID"]) for r in rows] == list(range(1, 12_001))
    assert sim.http_requests == 6 and sim.refusals == 0
    # Every request, those of the reading threads too, went through the one throttle.
    assert len(turns) == 6 and sum(name.startswith("b24-read") for name in turns) == 5


# --- changed deals: a keyset read split into ranges read side by side ---------------------------


class PortalClock:
    """The portal's wall time, moved on by hand (DATE_MODIFY has whole seconds)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=MSK)

    def __call__(self) -> datetime:
        return self.now


def _portal(deals: int, per_second: int) -> tuple[Bitrix24Simulator, PortalClock]:
    clock = PortalClock()
    sim = Bitrix24Simulator(rate=2, burst=50, clock=clock)
    for i in range(deals):
        if i and i % per_second == 0:
            clock.now += timedelta(seconds=1)
        sim.add_deal({"TITLE": f"D{i}"})
    clock.now += timedelta(minutes=5)
    return sim, clock


def _adapter(url: str) -> Bitrix24Adapter:
    return Bitrix24Adapter("b24", Bitrix24Settings(webhook_url=url, application_token="t" * 8, rate=2, burst=50))


def _order(sim: Bitrix24Simulator) -> list[str]:
    return [d["ID"] for d in sorted(sim.deals.values(), key=lambda d: (d["DATE_MODIFY"], int(d["ID"])))]


@pytest.mark.parametrize("per_second", [7, 6000], ids=["spread", "one-second"])
def test_changed_deals_reads_ranges_together_every_deal_once_in_order(per_second: int) -> None:
    sim, _ = _portal(6000, per_second)
    server = sim.serve()
    adapter = _adapter(server.base_url + sim.webhook_base)
    sizes: list[int] = []
    real_batch = adapter.client.batch

    def recording(commands, **kw):  # type: ignore[no-untyped-def]
        sizes.append(len(commands))
        return real_batch(commands, **kw)

    adapter.client.batch = recording  # type: ignore[method-assign]
    try:
        ids = [d.id for d in adapter.changed_deals(None)]
    finally:
        adapter.close()
        server.stop()
    assert ids == _order(sim)
    assert sim.refusals == 0
    # The first page, then one batch per range sent together (three ranges 2,450 rows apart:
    # 50 pages each, the last 22 to the end); where a chain of pages was cut short, one more
    # batch for that range.
    # (the one-second last range ends with a page proving that no later second holds deals)
    assert sorted(sizes[:3]) == ([23, 50, 50] if per_second == 6000 else [22, 50, 50])
    assert sim.http_requests == (4 if per_second == 6000 else 6)


@pytest.mark.parametrize("per_second", [7, 6000], ids=["spread", "one-second"])
def test_deals_that_change_during_the_read_are_all_seen_and_none_is_skipped(per_second: int) -> None:
    sim, clock = _portal(6000, per_second)
    server = sim.serve()
    adapter = _adapter(server.base_url + sim.webhook_base)
    before = _order(sim)
    moved = [before[i] for i in (100, 2600, 3000, 5200)]  # in the first, second and last ranges
    real_call = adapter.client.call_full
    pages: list[str] = []

    def changing(method, params=None, **kw):  # type: ignore[no-untyped-def]
        answer = real_call(method, params, **kw)
        if method == "crm.deal.list" and not pages:  # after the first page, before any range is read
            pages.append(method)
            for deal_id in moved:
                clock.now += timedelta(seconds=1)
                sim.update_deal(deal_id, {"TITLE": "changed"})
        return answer

    adapter.client.call_full = changing  # type: ignore[method-assign]
    try:
        seen = [(d.id, d.fields.get("TITLE")) for d in adapter.changed_deals(None)]
    finally:
        adapter.close()
        server.stop()
    ids = [deal_id for deal_id, _ in seen]
    unchanged = [i for i in before if i not in moved]
    # Every deal that did not change, exactly once and in order; each changed one at least
    # once, and its last sighting is the change (the last range follows deals that move).
    assert [i for i in ids if i not in moved] == unchanged
    for deal_id in moved:
        assert [title for i, title in seen if i == deal_id][-1] == "changed"
    assert ids[-len(moved) :] == moved


@pytest.mark.parametrize("per_second", [7, 6000], ids=["spread", "one-second"])
@pytest.mark.parametrize(
    ("held", "count"),
    [(4950, 60), (2500, 30)],
    ids=["gap: the last range starts past the second's rows", "overlap: the second range starts late"],
)
def test_ranges_that_shift_while_others_are_read_join_without_a_gap_or_a_repeat(
    per_second: int, held: int, count: int
) -> None:
    # The batch of the range at offset ``held`` goes out only once the other two ranges are
    # answered, and ``count`` deals of the first range change just before it: every offset
    # after them moves back by ``count``. Held at 4950, the last range starts 60 rows later
    # than the second range's rows reach (a gap, read by key); held at 2500, the second range
    # starts 30 rows later and its rows run 30 rows into the last range's (an overlap).
    sim, clock = _portal(6000, per_second)
    server = sim.serve()
    adapter = _adapter(server.base_url + sim.webhook_base)
    before = _order(sim)
    moved = before[100 : 100 + count]
    real_batch = adapter.client.batch
    answered = threading.Semaphore(0)
    sent: list[int] = []

    def holding(commands, **kw):  # type: ignore[no-untyped-def]
        _, first = next(iter(commands.values()))
        start = first.get("start")
        sent.append(start)
        if start == held:
            for _ in range(2):
                assert answered.acquire(timeout=WAIT)  # the other two ranges' batches are answered
            for deal_id in moved:
                clock.now += timedelta(seconds=1)
                sim.update_deal(deal_id, {"TITLE": "changed"})
        try:
            return real_batch(commands, **kw)
        finally:
            answered.release()

    adapter.client.batch = holding  # type: ignore[method-assign]
    try:
        seen = [(d.id, d.fields.get("TITLE")) for d in adapter.changed_deals(None)]
    finally:
        adapter.close()
        server.stop()
    ids = [deal_id for deal_id, _ in seen]
    unchanged = [i for i in before if i not in moved]
    assert [i for i in ids if i not in moved] == unchanged  # each once, in order: no gap, no repeat
    assert set(moved) <= set(ids)  # each changed one seen, before or after its change
    if held == 4950:  # the last range was read after the change: it found them at the end
        assert ids[-count:] == moved and all(t == "changed" for _, t in seen[-count:])
    assert sim.refusals == 0


def test_a_ranges_failure_surfaces_after_the_rows_before_it() -> None:
    sim, _ = _portal(6000, 6000)
    server = sim.serve()
    adapter = _adapter(server.base_url + sim.webhook_base)
    order = _order(sim)
    real_batch = adapter.client.batch
    calls: list[int] = []

    def failing(commands, **kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        _, first = next(iter(commands.values()))
        if first.get("start") == 2500:
            raise AuthError("Bitrix24 refused the credentials", crm="b24")  # the second range's batch
        return real_batch(commands, **kw)

    adapter.client.batch = failing  # type: ignore[method-assign]
    seen: list[str] = []
    try:
        with pytest.raises(AuthError):
            for deal in adapter.changed_deals(None):
                seen.append(deal.id)
    finally:
        adapter.close()
        server.stop()
    # The first range whole (its batch runs on past the second's start), in order, then the
    # second range's error.
    assert len(seen) >= 2500 and seen == order[: len(seen)]
