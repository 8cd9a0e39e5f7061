"""The Pipedrive client's rolling-window limiter, on an injected clock: no test sleeps."""

from __future__ import annotations

import heapq
import random
import threading
from collections.abc import Iterator

import pytest
import responses

from adapters.pipedrive.adapter import PipedriveAdapter
from adapters.pipedrive.client import PipedriveClient
from adapters.pipedrive.settings import PipedriveSettings, PipedriveSettingsSchema
from adapters.pipedrive.window import RollingWindow, Ticket

BASE = "https://acme.pipedrive.com"
TOKEN = "secret-api-token-42"


class Clock:
    """Monotonic time that moves only when told to, or when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(round(seconds, 6))
            self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def window(clock: Clock, limit: int = 3, seconds: float = 2.0) -> RollingWindow:
    return RollingWindow(limit, seconds, clock=clock, sleep=clock.sleep)


def headers(limit: int, remaining: int) -> dict[str, str]:
    return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(remaining), "x-ratelimit-reset": "2"}


def test_a_request_occupies_its_slot_until_window_after_its_answer(clock: Clock) -> None:
    w = window(clock)
    tickets = [w.acquire() for _ in range(3)]
    assert clock.sleeps == [] and w.in_window() == 3
    clock.now += 0.5  # the answers arrive half a second later
    for t in tickets:
        w.release(t)
    nxt = w.acquire()
    # Not 2 s after the send (the server may have seen it as late as the answer): after the answer.
    assert clock.sleeps == [2.0] and nxt.sent == pytest.approx(102.5) and nxt.waited == pytest.approx(2.0)
    assert w.waited == pytest.approx(2.0)


def test_unanswered_requests_hold_their_slots(clock: Clock) -> None:
    w = window(clock, limit=2)
    first, second = w.acquire(), w.acquire()
    clock.now += 5.0  # long after the window, but neither has been answered
    assert w.in_window() == 2
    got: list[Ticket] = []
    waiter = threading.Thread(target=lambda: got.append(w.acquire()))
    waiter.start()
    w.release(first)  # answered now: the waiter's slot frees a window later
    waiter.join(timeout=10)
    assert not waiter.is_alive() and got[0].slot == first.slot and got[0].sent == pytest.approx(107.0)
    w.release(second)


def test_stopping_never_blocks_on_a_full_window(clock: Clock) -> None:
    stopping = threading.Event()
    w = RollingWindow(1, 2.0, clock=clock, sleep=clock.sleep, stopping=stopping)
    w.acquire()
    stopping.set()
    ticket = w.acquire()  # returns at once: the caller sees the stop and does not send
    assert ticket.slot == -1
    w.release(ticket, sent=False)  # harmless


def test_a_call_never_sent_gives_its_slot_back(clock: Clock) -> None:
    w = window(clock, limit=1)
    first = w.acquire()
    w.release(first, sent=False)
    assert w.in_window() == 0
    w.acquire()
    assert clock.sleeps == []


def test_concurrent_clients_never_exceed_the_limit_at_the_server() -> None:
    """Event-driven: 12 callers in closed loops, random latency, the server's arrival anywhere
    between send and answer. In no window of 2 s do more than 20 requests arrive."""
    rng = random.Random(5)
    clock = Clock()
    limit, span = 20, 2.0
    w = RollingWindow(limit, span, clock=clock, sleep=lambda _s: None)  # waits are read off the ticket
    events: list[tuple[float, int, int, Ticket | None]] = [(clock.now, n, 0, None) for n in range(12)]
    heapq.heapify(events)
    arrivals: list[float] = []
    seq = 12
    while len(arrivals) < 2000:
        at, caller, _, ticket = heapq.heappop(events)
        clock.now = at
        seq += 1
        if ticket is None:  # this caller wants to send
            booked = w.acquire()
            latency = rng.choice([0.001, 0.01, 0.2, 1.5])
            arrivals.append(booked.sent + rng.random() * latency)
            heapq.heappush(events, (booked.sent + latency, caller, seq, booked))
        else:  # its answer arrived
            w.release(ticket)
            heapq.heappush(events, (at + rng.choice([0.0, 0.0, 0.05]), caller, seq, None))
    arrivals.sort()
    j = 0
    most = 0
    for i, a in enumerate(arrivals):
        while arrivals[j] <= a - span:  # the server's window is (a - 2 s, a]
            j += 1
        most = max(most, i - j + 1)
    assert most <= limit
    assert most == limit  # and it is used to the full


def test_our_own_requests_are_never_taken_for_another_client(clock: Clock) -> None:
    w = window(clock, limit=20)
    tickets = []
    for n in range(20):
        t = w.acquire()
        clock.now += 0.01
        w.release(t, headers=headers(20, 19 - n))  # the server counted exactly our requests
        tickets.append(t)
    assert w.foreign_seen == 0
    w.acquire()
    # Only the first request's own occupancy (answered at 100.01) holds the 21st back.
    assert clock.sleeps == [pytest.approx(100.01 + 2.0 - 100.2)]


def test_another_clients_requests_hold_slots_until_they_leave_the_window(clock: Clock) -> None:
    w = window(clock, limit=20)
    t = w.acquire()
    clock.now += 0.1
    w.release(t, headers=headers(20, 5))  # 15 counted, 1 of them ours: 14 from someone else
    assert w.foreign_seen == 14 and w.in_window() == 15
    for _ in range(5):
        w.acquire()
    assert clock.sleeps == []  # the 5 the server said were left
    w.acquire()
    assert clock.sleeps == [pytest.approx(2.0)]  # then until the foreign ones have surely left


def test_foreign_counts_from_two_answers_are_not_added_up(clock: Clock) -> None:
    w = window(clock, limit=20)
    # The same 9 foreign requests seen twice: beside our first request, then beside both of ours.
    for remaining in (10, 9):
        t = w.acquire()
        clock.now += 0.1
        w.release(t, headers=headers(20, remaining))
    assert w.foreign_seen == 9
    assert w.in_window() == 2 + 9  # not 2 + 18


def test_a_lower_limit_from_the_server_is_used(clock: Clock) -> None:
    w = window(clock, limit=40)
    t = w.acquire()
    w.release(t, headers=headers(20, 19))  # a Lite plan, configured as Growth
    for _ in range(19):
        w.acquire()
    assert clock.sleeps == []
    w.acquire()
    assert clock.sleeps == [pytest.approx(2.0)]


def test_a_hold_stops_the_others_and_the_refused_caller_once_exempt(clock: Clock) -> None:
    w = window(clock, limit=20)
    w.hold(1.5)
    other: list[Ticket] = []
    thread = threading.Thread(target=lambda: other.append(w.acquire()))
    thread.start()
    thread.join(timeout=10)
    assert other[0].waited == pytest.approx(1.5)
    clock.now = 100.0  # back to the moment of the refusal
    first = w.acquire()  # the refused caller's retry: its RetryPolicy wait covered the hold
    assert first.waited == 0
    second = w.acquire()
    assert second.waited == pytest.approx(1.5)


def test_limits_are_checked(clock: Clock) -> None:
    with pytest.raises(ValueError):
        RollingWindow(0, 2.0)
    with pytest.raises(ValueError):
        RollingWindow(20, 0)


# --- through the client and its settings ---------------------------------------------------


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as rsps:
        yield rsps


def _client(**kw: object) -> tuple[PipedriveClient, list[float]]:
    c = PipedriveClient(BASE, TOKEN, backoff_initial=0.001, backoff_max=5, **kw)  # type: ignore[arg-type]
    waits: list[float] = []
    c._interruptible_sleep = waits.append  # type: ignore[method-assign, assignment]
    c.retry.sleep = waits.append  # type: ignore[method-assign, assignment]
    return c, waits


def test_a_429_holds_the_clients_other_threads_until_the_reset(mocked: responses.RequestsMock) -> None:
    url = f"{BASE}/api/v2/deals/8"
    mocked.get(
        url,
        json={"success": False, "error": "Request over limit", "data": None},
        status=429,
        headers={"x-ratelimit-limit": "20", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "2", "retry-after": "2"},
    )
    mocked.get(url, json={"success": True, "data": {"id": 8}})
    c, waits = _client()
    assert c.get("/api/v2/deals/8") == {"id": 8}
    assert waits == [pytest.approx(2.0, abs=0.05)]  # the refused call's retry, once
    thread = threading.Thread(target=lambda: c.get("/api/v2/deals/8"))
    mocked.get(url, json={"success": True, "data": {"id": 8}})
    thread.start()
    thread.join(timeout=10)
    assert len(waits) == 2 and 1.5 < waits[1] <= 2.0  # another thread waits out the same reset


def test_defaults_are_the_window_alone_and_old_configs_keep_their_bucket() -> None:
    base = {
        "type": "pipedrive",
        "api_token": TOKEN,
        "webhook_user": "hooks",
        "webhook_password": "hook-password",
        "base_url": BASE,
    }
    schema = PipedriveSettingsSchema()
    loaded = schema.load_settings(base)
    assert isinstance(loaded, PipedriveSettings)
    assert (loaded.burst_limit, loaded.window, loaded.rate, loaded.burst) == (20, 2.0, None, None)
    client = PipedriveAdapter("pd", loaded).client
    assert client.throttle is None and (client.window.limit, client.window.window) == (20, 2.0)

    old = schema.load_settings({**base, "rate": 9})
    assert isinstance(old, PipedriveSettings)
    assert (old.rate, old.burst) == (9.0, 10.0)  # the old default bucket
    client = PipedriveAdapter("pd", old).client
    assert client.throttle is not None and client.throttle.rate == 9.0 and client.window.limit == 20

    growth = schema.load_settings({**base, "burst_limit": 40, "window": "2s"})
    assert isinstance(growth, PipedriveSettings)
    assert PipedriveAdapter("pd", growth).client.window.limit == 40
