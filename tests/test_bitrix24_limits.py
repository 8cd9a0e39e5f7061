"""Bitrix24's two limits on our side: one hit per request (a batch included) and the per-method
operating-time budget; plus the answers that must never become dead letters or retries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import requests
import responses

from adapters.bitrix24.client import Bitrix24Client
from adapters.bitrix24.operating import OperatingBudget
from domain.errors import AmbiguousWriteError, FatalError, MethodSuspended, RetriableError
from simulators import SimulatorServer
from simulators.bitrix24 import Bitrix24Simulator

BASE = "https://x.bitrix24.ru/rest/1/code/"
MSK = timezone(timedelta(hours=3))


class WallClock:
    """One settable time for the simulator (its wall and monotonic clocks) and the client."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 10, 0, 0, tzinfo=MSK)

    def __call__(self) -> datetime:
        return self.now

    def unix(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def portal(clock: WallClock) -> Iterator[tuple[Bitrix24Simulator, SimulatorServer]]:
    sim = Bitrix24Simulator(rate=1000, burst=1000, clock=clock, monotonic=clock.unix)
    server = sim.serve()
    yield sim, server
    server.stop()
    sim.close()


def test_a_method_past_its_budget_is_suspended_until_reset_while_another_keeps_working(
    portal: tuple[Bitrix24Simulator, SimulatorServer], clock: WallClock
) -> None:
    sim, server = portal
    sim.method_time = {"crm.deal.list": 200.0}  # a heavy list: three calls spend 600 s of 480
    client = Bitrix24Client(server.base_url + sim.webhook_base, rate=1000, burst=1000, wall_clock=clock.unix)
    client.operating.slow_share = 1.0  # this test is about the block, not the pacing before it
    for _ in range(3):
        client.call("crm.deal.list", {"select": ["ID"]})
    reset_at = client.operating.figures()["crm.deal.list"][1]
    assert reset_at == int(clock.unix()) + 600
    sent = sim.http_requests
    with pytest.raises(MethodSuspended) as suspended:
        client.call("crm.deal.list", {"select": ["ID"]})
    assert suspended.value.retry_after == pytest.approx(600)
    assert sim.http_requests == sent  # not even asked: the budget said so
    assert client.call("user.get", {"FILTER": {"ID": ["1"]}})[0]["ID"] == "1"  # the other method goes on
    answer = client.batch({"l": ("crm.deal.list", {}), "u": ("user.get", {"FILTER": {"ID": ["1"]}})})
    assert isinstance(answer.errors["l"], MethodSuspended) and answer.result["u"][0]["ID"] == "1"
    assert sim.calls["crm.deal.list"] == 3  # the suspended command never left
    assert client.throttle.waited == 0  # the request budget was not touched
    clock.advance(599)
    with pytest.raises(MethodSuspended):
        client.call("crm.deal.list", {})
    clock.advance(1)  # operating_reset_at: the first 200 s leave the window
    assert client.call("crm.deal.list", {}) == []


def test_a_429_from_the_portal_suspends_only_that_method_and_is_not_retried(
    portal: tuple[Bitrix24Simulator, SimulatorServer], clock: WallClock
) -> None:
    sim, server = portal
    sim.method_time = {"crm.deal.list": 500.0}
    first = Bitrix24Client(server.base_url + sim.webhook_base, rate=1000, burst=1000, wall_clock=clock.unix)
    first.call("crm.deal.list", {})  # spends the budget; this client's figures say so
    other = Bitrix24Client(server.base_url + sim.webhook_base, rate=1000, burst=1000, wall_clock=clock.unix)
    sent = sim.http_requests
    with pytest.raises(MethodSuspended) as suspended:
        other.call("crm.deal.list", {})  # it has no figures yet: the portal answers 429
    assert sim.http_requests == sent + 1  # one request, no retries
    assert suspended.value.retry_after and suspended.value.retry_after > 0
    assert other.call("user.get", {})  # the other method goes on
    assert other.throttle.level < 5  # the bucket was not filled as after a refusal


def test_pacing_spreads_what_is_left_of_a_budget_until_the_window_frees_some() -> None:
    now = [1000.0]
    budget = OperatingBudget(480, clock=lambda: now[0])
    budget.note("crm.deal.list", {"operating": 300.0, "operating_reset_at": 1100, "duration": 10.0})
    assert budget.pace("crm.deal.list") == 0  # below 80 % of the limit: full speed
    budget.note("crm.deal.list", {"operating": 400.0, "operating_reset_at": 1100, "duration": 10.0})
    # 80 s left = 8 calls of 10 s, over the 100 s until the reset: one every 12.5 s after the last.
    assert budget.pace("crm.deal.list") == pytest.approx(12.5)
    assert budget.pace("crm.deal.list") == pytest.approx(25.0)  # calls queue behind each other
    assert budget.pace("user.get") == 0  # per method
    budget.note("crm.deal.list", {"operating": 480.0, "operating_reset_at": 1100, "duration": 10.0})
    assert budget.suspended_for("crm.deal.list") == pytest.approx(100)
    now[0] = 1100.0
    assert budget.suspended_for("crm.deal.list") == 0


@responses.activate
def test_a_truncated_200_after_a_write_is_ambiguous_and_after_a_read_is_asked_again() -> None:
    client = Bitrix24Client(BASE, rate=1000, burst=1000, backoff_initial=0.001, backoff_max=0.01)
    responses.post(BASE + "tasks.task.add.json", body='{"result":{"task":{"id":"37', status=200)
    with pytest.raises(AmbiguousWriteError):
        client.call("tasks.task.add", {"fields": {"TITLE": "x"}}, idempotent=False)
    assert len(responses.calls) == 1  # never resent blindly: reconciled by its marker
    responses.post(BASE + "crm.deal.get.json", body="<html>proxy</html>", status=200)
    responses.post(BASE + "crm.deal.get.json", json={"result": {"ID": "1"}, "time": {}})
    assert client.call("crm.deal.get", {"ID": 1}) == {"ID": "1"}
    responses.post(BASE + "batch.json", body='{"result":{"result":{"t0":', status=200)
    with pytest.raises(AmbiguousWriteError):
        client.batch({"t0": ("tasks.task.add", {"fields": {"TITLE": "x"}})}, idempotent=False)


@responses.activate
def test_portal_deleted_is_fatal_and_not_retried() -> None:
    client = Bitrix24Client(BASE, rate=1000, burst=1000, backoff_initial=0.001, backoff_max=0.01)
    responses.post(
        BASE + "crm.deal.get.json", json={"error": "PORTAL_DELETED", "error_description": "Portal was deleted"}
    )
    with pytest.raises(FatalError) as fatal:
        client.call("crm.deal.get", {"ID": 1})
    assert not isinstance(fatal.value, RetriableError) and "PORTAL_DELETED" in str(fatal.value)
    assert len(responses.calls) == 1


def test_a_webhook_the_portal_does_not_know_is_401_no_auth_found(
    portal: tuple[Bitrix24Simulator, SimulatorServer],
) -> None:
    sim, server = portal
    answer = requests.post(f"{server.base_url}/rest/1/not-the-code/user.get.json", json={}, timeout=5)
    assert answer.status_code == 401 and answer.json()["error"] == "NO_AUTH_FOUND"
