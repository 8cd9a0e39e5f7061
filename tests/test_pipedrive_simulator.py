"""The Pipedrive simulator behaves like the documented API and webhooks, over real HTTP on loopback."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from flask import Flask, request

from simulators import FaultKnobs, SimulatorServer
from simulators.pipedrive import PipedriveSimulator

TOKEN = "simtoken"
HOOK_USER, HOOK_PASSWORD = "hook-user", "s3cret"


class FakeClock:
    """A settable aware 'now' for the simulator and a monotonic clock for its burst window."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)
        self.mono = 1000.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


class _CurrentApp:
    """A WSGI app forwarding to the current test's app, so one server serves the module
    (stopping a werkzeug server costs half a second each time)."""

    def __init__(self) -> None:
        self.app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


class Receiver:
    """A webhook endpoint that records what it gets and answers the statuses it is told to."""

    def __init__(self) -> None:
        self.app = Flask("pipedrive-receiver")
        self.hits: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()

        @self.app.post("/hook")
        def hook() -> tuple[str, int]:
            auth = request.authorization
            with self.lock:
                self.hits.append({"auth": (auth.username, auth.password) if auth else None, "json": request.get_json()})
                status = self.statuses.pop(0) if self.statuses else 200
            return "", status

    def reset(self) -> None:
        with self.lock:
            self.hits.clear()
            self.statuses.clear()

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [h["json"] for h in self.hits]


# The module's servers: (app switch, simulator server, webhook receiver, receiver server).
Shared = tuple[_CurrentApp, SimulatorServer, Receiver, SimulatorServer]


@pytest.fixture(scope="module")
def _shared() -> Iterator[Shared]:
    current, receiver = _CurrentApp(), Receiver()
    srv = SimulatorServer(current).start()  # type: ignore[arg-type]  # any WSGI app serves
    rcv = SimulatorServer(receiver.app).start()
    yield current, srv, receiver, rcv
    srv.stop()
    rcv.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _make(clock: FakeClock, **kwargs: Any) -> PipedriveSimulator:
    options: dict[str, Any] = {
        "burst_limit": 10_000,
        "clock": clock,
        "monotonic": clock.monotonic,
        "faults": FaultKnobs(seed=7),
        "webhook_retry_delays": (0.05, 0.05, 0.05),
    }
    options.update(kwargs)
    return PipedriveSimulator(**options)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[PipedriveSimulator]:
    simulator = _make(clock)
    yield simulator
    simulator.close()


@pytest.fixture
def base(sim: PipedriveSimulator, _shared: Shared) -> str:
    current, srv, _, _ = _shared
    current.app = sim.app
    return srv.base_url


@pytest.fixture
def receiver(_shared: Shared) -> Receiver:
    _, _, rcv, _ = _shared
    rcv.reset()
    return rcv


@pytest.fixture
def hook_url(_shared: Shared) -> str:
    return _shared[3].base_url + "/hook"


_session = requests.Session()


def api(base: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"x-api-token": TOKEN, **kwargs.pop("headers", {})}
    return _session.request(method, base + path, headers=headers, timeout=10, **kwargs)


def walk(base: str, path: str, params: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """All pages of a v2 cursor-paged list."""
    pages, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        body = api(base, "GET", path, params=query).json()
        assert body["success"] is True
        pages.append(body["data"])
        cursor = body["additional_data"]["next_cursor"]
        if cursor is None:
            return pages


# --- auth and envelopes --------------------------------------------------------------------


def test_auth_by_header_or_query_and_401_envelope(sim: PipedriveSimulator, base: str) -> None:
    missing = _session.get(base + "/api/v2/deals", timeout=5)
    wrong = _session.get(base + "/api/v2/deals", headers={"x-api-token": "nope"}, timeout=5)
    for resp in (missing, wrong):
        assert resp.status_code == 401
        body = resp.json()
        assert body["success"] is False and body["data"] is None
        assert body["error"] == "unauthorized access" and body["error_info"]
        assert "x-ratelimit-limit" not in resp.headers
    assert api(base, "GET", "/api/v2/deals").status_code == 200
    assert _session.get(base + "/api/v2/deals", params={"api_token": TOKEN}, timeout=5).status_code == 200
    assert sim.calls["GET /api/v2/deals"] == 2


def test_deal_create_get_and_error_envelopes(sim: PipedriveSimulator, base: str) -> None:
    resp = api(
        base,
        "POST",
        "/api/v2/deals",
        json={"title": "Boiler", "value": 1200, "currency": "usd", "stage_id": 2, "expected_close_date": "2026-04-01"},
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["success"] is True
    deal = body["data"]
    assert deal["title"] == "Boiler" and deal["value"] == 1200 and deal["currency"] == "USD"
    assert deal["stage_id"] == 2 and deal["pipeline_id"] == 1 and deal["status"] == "open"
    assert deal["owner_id"] == sim.user_id and deal["add_time"] == "2026-03-02T10:00:00Z"
    assert deal["update_time"] == deal["add_time"] and deal["lost_reason"] is None
    assert api(base, "GET", f"/api/v2/deals/{deal['id']}").json()["data"] == deal
    assert sim.deals[deal["id"]]["title"] == "Boiler"

    missing = api(base, "GET", "/api/v2/deals/999")
    assert missing.status_code == 404
    assert missing.json()["success"] is False and missing.json()["data"] is None
    assert api(base, "POST", "/api/v2/deals", json={"value": 1}).status_code == 400  # no title
    unknown = api(base, "POST", "/api/v2/deals", json={"title": "x", "user_id": 5})  # a v1 name
    assert unknown.status_code == 400 and "user_id" in unknown.json()["error"]
    assert api(base, "POST", "/api/v2/deals", data={"title": "form"}).status_code == 415
    assert api(base, "PUT", "/api/v2/deals/1").status_code == 405
    assert api(base, "GET", "/api/v2/nowhere").json()["success"] is False
    assert sim.calls["POST /api/v2/deals"] == 4 and sim.calls["GET /api/v2/deals/{id}"] == 2


# --- listing -------------------------------------------------------------------------------


def test_cursor_paging_over_1200_deals(sim: PipedriveSimulator, base: str) -> None:
    for i in range(1200):
        sim.add_deal({"title": f"Deal {i}", "value": i})
    pages = walk(base, "/api/v2/deals", {"limit": 500})
    assert [len(p) for p in pages] == [500, 500, 200]
    assert [d["id"] for page in pages for d in page] == list(range(1, 1201))

    desc = walk(base, "/api/v2/deals", {"limit": 500, "sort_direction": "desc"})
    assert [d["id"] for page in desc for d in page] == list(range(1200, 0, -1))
    default = api(base, "GET", "/api/v2/deals").json()
    assert len(default["data"]) == 100 and default["additional_data"]["next_cursor"]

    assert api(base, "GET", "/api/v2/deals", params={"limit": 501}).status_code == 400
    assert api(base, "GET", "/api/v2/deals", params={"cursor": "garbage!"}).status_code == 400
    by_id_cursor = default["additional_data"]["next_cursor"]
    wrong_sort = api(base, "GET", "/api/v2/deals", params={"cursor": by_id_cursor, "sort_by": "add_time"})
    assert wrong_sort.status_code == 400
    assert api(base, "GET", "/api/v2/deals", params={"sort_by": "title"}).status_code == 400


def test_v1_deals_start_limit_paging(sim: PipedriveSimulator, base: str) -> None:
    for i in range(250):
        sim.add_deal({"title": f"Deal {i}"})
    starts, start = [], 0
    while True:
        body = api(base, "GET", "/v1/deals", params={"start": start, "limit": 100}).json()
        pagination = body["additional_data"]["pagination"]
        starts.append((pagination["start"], len(body["data"]), pagination["more_items_in_collection"]))
        if not pagination["more_items_in_collection"]:
            assert "next_start" not in pagination
            break
        start = pagination["next_start"]
    assert starts == [(0, 100, True), (100, 100, True), (200, 50, False)]
    first = api(base, "GET", "/v1/deals/1").json()["data"]
    assert first["user_id"]["id"] == sim.user_id and first["add_time"] == "2026-03-02 10:00:00"
    assert first["active"] is True and first["deleted"] is False
    beyond = api(base, "GET", "/v1/deals", params={"start": 300}).json()
    assert beyond["data"] is None  # v1 answers an empty page with null
    assert api(base, "GET", "/v1/deals", params={"limit": 900}).json()["additional_data"]["pagination"]["limit"] == 500


def test_updated_since_filter_and_sort(sim: PipedriveSimulator, clock: FakeClock, base: str) -> None:
    first = sim.add_deal({"title": "A"})
    clock.advance(10)
    second = sim.add_deal({"title": "B"})
    clock.advance(10)
    third = sim.add_deal({"title": "C"})  # at 10:00:20
    clock.advance(10)
    sim.update_deal(first, {"value": 5})  # at 10:00:30
    since = {"updated_since": "2026-03-02T10:00:15Z", "sort_by": "update_time"}
    asc = api(base, "GET", "/api/v2/deals", params=since).json()["data"]
    assert [d["id"] for d in asc] == [third, first]
    desc = api(base, "GET", "/api/v2/deals", params={**since, "sort_direction": "desc"}).json()["data"]
    assert [d["id"] for d in desc] == [first, third]
    boundary = api(base, "GET", "/api/v2/deals", params={"updated_since": "2026-03-02T12:00:20+02:00"})
    assert [d["id"] for d in boundary.json()["data"]] == [first, third]  # >= and any offset
    until = api(base, "GET", "/api/v2/deals", params={"updated_until": "2026-03-02T10:00:20Z"}).json()["data"]
    assert [d["id"] for d in until] == [second]
    by_add = api(base, "GET", "/api/v2/deals", params={"sort_by": "add_time", "sort_direction": "desc"})
    assert [d["id"] for d in by_add.json()["data"]] == [third, second, first]
    assert api(base, "GET", "/api/v2/deals", params={"updated_since": "2026-03-02"}).status_code == 400
    assert api(base, "GET", "/api/v2/deals", params={"updated_since": "yesterday"}).status_code == 400


def test_list_filters(sim: PipedriveSimulator, base: str) -> None:
    other = sim.add_user("Mari Maasikas", "mari@example.com")
    a = sim.add_deal({"title": "A", "owner_id": other, "stage_id": 3})
    b = sim.add_deal({"title": "B", "status": "won"})
    sim.add_deal({"title": "C"})

    def ids(**params: Any) -> list[int]:
        return [d["id"] for d in api(base, "GET", "/api/v2/deals", params=params).json()["data"]]

    assert ids(owner_id=other) == [a]
    assert ids(stage_id=3) == [a]
    assert ids(status="won") == [b]
    assert ids(status="open,won") == [1, 2, 3]
    assert ids(ids=f"{a},{b}") == [a, b]
    assert api(base, "GET", "/api/v2/deals", params={"status": "closed"}).status_code == 400


# --- updates -------------------------------------------------------------------------------


def test_patch_lost_reason_rules_and_status_times(sim: PipedriveSimulator, clock: FakeClock, base: str) -> None:
    deal_id = sim.add_deal({"title": "Heat pump"})
    clock.advance(60)
    refused = api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"lost_reason": "Too expensive"})
    assert refused.status_code == 400 and refused.json()["success"] is False
    assert sim.deals[deal_id]["lost_reason"] is None and sim.deals[deal_id]["update_time"].endswith("00:00Z")

    lost = api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"status": "lost", "lost_reason": "Too expensive"})
    assert lost.status_code == 200
    data = lost.json()["data"]
    assert data["status"] == "lost" and data["lost_reason"] == "Too expensive"
    assert data["lost_time"] == data["close_time"] == data["update_time"] == "2026-03-02T10:01:00Z"
    # Already lost: the reason alone may change.
    again = api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"lost_reason": "Went elsewhere"})
    assert again.status_code == 200 and again.json()["data"]["lost_reason"] == "Went elsewhere"

    clock.advance(60)
    won = api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"status": "won"}).json()["data"]
    assert won["won_time"] == won["first_won_time"] == "2026-03-02T10:02:00Z"
    assert won["lost_time"] is None and won["lost_reason"] is None
    reopened = api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"status": "open"}).json()["data"]
    assert reopened["close_time"] is None and reopened["won_time"] is None
    assert reopened["first_won_time"] == "2026-03-02T10:02:00Z"

    clock.advance(60)
    moved = api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"stage_id": 4}).json()["data"]
    assert moved["stage_id"] == 4 and moved["stage_change_time"] == "2026-03-02T10:03:00Z"
    assert api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"stage_id": 99}).status_code == 404
    assert api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"status": "deleted"}).status_code == 400
    assert api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"owner_id": 1}).status_code == 400
    assert api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"value": "12"}).status_code == 400
    assert api(base, "PATCH", "/api/v2/deals/999", json={"title": "x"}).status_code == 404

    key = sim.add_deal_field("Visit address")
    custom = api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"custom_fields": {key: "Tartu mnt 1"}})
    assert custom.json()["data"]["custom_fields"] == {key: "Tartu mnt 1"}
    bad_key = api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"custom_fields": {"address": "x"}})
    assert bad_key.status_code == 400
    with pytest.raises(ValueError):
        sim.update_deal(deal_id, {"lost_reason": "nope"})  # the UI helper keeps the API's rules


def test_delete_is_soft(sim: PipedriveSimulator, base: str) -> None:
    keep, gone = sim.add_deal({"title": "Keep"}), sim.add_deal({"title": "Gone"})
    resp = api(base, "DELETE", f"/api/v2/deals/{gone}")
    assert resp.json() == {"success": True, "data": {"id": gone}}
    assert [d["id"] for d in api(base, "GET", "/api/v2/deals").json()["data"]] == [keep]
    deleted = api(base, "GET", "/api/v2/deals", params={"status": "deleted"}).json()["data"]
    assert [(d["id"], d["status"], d["is_deleted"]) for d in deleted] == [(gone, "deleted", True)]
    assert api(base, "GET", f"/api/v2/deals/{gone}").json()["data"]["status"] == "deleted"
    assert api(base, "PATCH", f"/api/v2/deals/{gone}", json={"title": "x"}).status_code == 410
    assert api(base, "GET", "/v1/deals", params={"status": "deleted"}).json()["data"][0]["deleted"] is True


# --- activities, notes, users ------------------------------------------------------------


def test_activities_create_list_and_done(sim: PipedriveSimulator, clock: FakeClock, base: str) -> None:
    types = api(base, "GET", "/v1/activityTypes").json()["data"]
    assert [t["key_string"] for t in types] == ["call", "meeting", "task", "deadline", "email", "lunch"]
    deal_id = sim.add_deal({"title": "Install"})
    other_deal = sim.add_deal({"title": "Other"})
    body = {
        "subject": "Call the customer",
        "type": "call",
        "owner_id": sim.user_id,
        "deal_id": deal_id,
        "due_date": "2026-03-03",
        "due_time": "09:30",
        "duration": "00:30",
        "note": "<b>ask</b>",
        "done": False,
    }
    created = api(base, "POST", "/api/v2/activities", json=body)
    assert created.status_code == 200
    act = created.json()["data"]
    assert act["id"] >= 70001 and act["deal_id"] == deal_id and act["type"] == "call"
    assert act["due_date"] == "2026-03-03" and act["due_time"] == "09:30" and act["duration"] == "00:30"
    assert act["done"] is False and act["marked_as_done_time"] is None and act["note"] == "<b>ask</b>"
    task = api(base, "POST", "/api/v2/activities", json={"type": "task", "deal_id": deal_id}).json()["data"]
    assert task["subject"] == "Task"  # the web app names an untitled activity by its type
    api(base, "POST", "/api/v2/activities", json={"type": "task", "deal_id": other_deal})

    for bad in (
        {"type": "visit"},
        {"type": "call", "due_time": "9.30"},
        {"type": "call", "due_date": "03.03.2026"},
        {"type": "call", "deal_id": 999},
        {"type": "call", "done": "maybe"},
    ):
        assert api(base, "POST", "/api/v2/activities", json=bad).status_code == 400, bad

    for_deal = api(base, "GET", "/api/v2/activities", params={"deal_id": deal_id}).json()["data"]
    assert [a["id"] for a in for_deal] == [act["id"], task["id"]]
    clock.advance(30)
    done = api(base, "PATCH", f"/api/v2/activities/{act['id']}", json={"done": True}).json()["data"]
    assert done["done"] is True and done["marked_as_done_time"] == "2026-03-02T10:00:30Z"
    assert done["update_time"] == "2026-03-02T10:00:30Z"
    undone = api(base, "GET", "/api/v2/activities", params={"deal_id": deal_id, "done": "false"}).json()["data"]
    assert [a["id"] for a in undone] == [task["id"]]
    finished = api(base, "GET", "/api/v2/activities", params={"done": "true"}).json()["data"]
    assert [a["id"] for a in finished] == [act["id"]]
    assert [a["id"] for a in sim.activities_for_deal(deal_id)] == [act["id"], task["id"]]
    assert api(base, "GET", f"/api/v2/activities/{act['id']}").json()["data"]["done"] is True

    pages = walk(base, "/api/v2/activities", {"limit": 2})
    assert [len(p) for p in pages] == [2, 1]
    assert api(base, "DELETE", f"/api/v2/activities/{task['id']}").json()["data"] == {"id": task["id"]}
    assert [a["id"] for a in sim.activities_for_deal(deal_id)] == [act["id"]]
    assert api(base, "GET", f"/api/v2/activities/{task['id']}").status_code == 404


def test_notes_users_and_stages(sim: PipedriveSimulator, base: str) -> None:
    mari = sim.add_user("Mari Maasikas", "mari@example.com")
    sim.add_user("Former", active=False)
    users = api(base, "GET", "/v1/users").json()["data"]
    assert [(u["id"], u["name"], u["active_flag"]) for u in users][1:] == [
        (mari, "Mari Maasikas", True),
        (mari + 1, "Former", False),
    ]
    assert {"id", "name", "email", "active_flag", "timezone_name"} <= set(users[0])
    assert api(base, "GET", "/v1/users/me").json()["data"]["id"] == sim.user_id

    deal_id = sim.add_deal({"title": "Noted"})
    note = api(base, "POST", "/v1/notes", json={"content": "<p>Called</p>", "deal_id": deal_id})
    assert note.status_code == 201
    assert note.json()["data"]["deal_id"] == deal_id and note.json()["data"]["id"] >= 90001
    form_note = api(base, "POST", "/v1/notes", data={"content": "form body", "deal_id": deal_id})
    assert form_note.status_code == 201
    assert api(base, "POST", "/v1/notes", json={"content": "orphan"}).status_code == 400
    assert api(base, "POST", "/v1/notes", json={"deal_id": deal_id}).status_code == 400
    listed = api(base, "GET", "/v1/notes", params={"deal_id": deal_id}).json()
    assert [n["content"] for n in listed["data"]] == ["<p>Called</p>", "form body"]
    assert listed["additional_data"]["pagination"]["more_items_in_collection"] is False
    stages = api(base, "GET", "/v1/stages").json()["data"]
    assert [s["id"] for s in stages] == [1, 2, 3, 4, 5] and {s["pipeline_id"] for s in stages} == {1}


# --- limits --------------------------------------------------------------------------------


def test_burst_window_429_headers_and_recovery(
    clock: FakeClock, _shared: tuple[_CurrentApp, SimulatorServer, Receiver, SimulatorServer]
) -> None:
    sim = _make(clock, burst_limit=5)
    _shared[0].app = sim.app
    base = _shared[1].base_url
    try:
        remaining = []
        for _ in range(3):
            remaining.append(api(base, "GET", "/v1/users").headers["x-ratelimit-remaining"])
        clock.advance(1.5)
        for _ in range(2):
            resp = api(base, "GET", "/v1/users")
            remaining.append(resp.headers["x-ratelimit-remaining"])
        assert remaining == ["4", "3", "2", "1", "0"]
        assert resp.headers["x-ratelimit-limit"] == "5" and resp.headers["x-ratelimit-reset"] == "1"

        refused = api(base, "GET", "/v1/users")
        assert refused.status_code == 429
        assert refused.json()["success"] is False and refused.json()["data"] is None
        assert refused.headers["x-ratelimit-limit"] == "5"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert refused.headers["x-ratelimit-reset"] == "1"  # the first three leave the window in 0.5 s
        assert refused.headers["retry-after"] == "1"
        assert sim.refusals == 1 and sim.max_window_count == 6

        clock.advance(0.5)  # rolling, not fixed: the three old requests left, the two recent remain
        assert [api(base, "GET", "/v1/users").status_code for _ in range(4)] == [200, 200, 200, 429]
        clock.advance(1.5)
        after = api(base, "GET", "/v1/users")
        assert after.status_code == 200 and after.headers["x-ratelimit-remaining"] == "1"
        assert sim.refusals == 2 and sim.calls["GET /v1/users"] == 9
    finally:
        sim.close()


def test_hammering_after_429_gets_the_cdn_403(sim: PipedriveSimulator, clock: FakeClock, base: str) -> None:
    sim.burst_limit, sim.block_after_refusals, sim.block_seconds = 1, 2, 30.0
    assert [api(base, "GET", "/api/v2/deals").status_code for _ in range(4)] == [200, 429, 429, 429]
    blocked = api(base, "GET", "/api/v2/deals")
    assert blocked.status_code == 403 and blocked.headers["content-type"].startswith("text/html")
    clock.advance(31)
    assert api(base, "GET", "/api/v2/deals").status_code == 200


def test_max_window_count_stays_under_limit_for_a_paced_client(
    sim: PipedriveSimulator, clock: FakeClock, base: str
) -> None:
    sim.burst_limit = 4
    for _ in range(6):
        assert api(base, "GET", "/api/v2/deals").status_code == 200
        assert api(base, "GET", "/api/v2/deals").status_code == 200
        clock.advance(1.0)
    assert sim.max_window_count == 4 and sim.refusals == 0


def test_daily_budget_costs_headers_and_reset(
    clock: FakeClock, _shared: tuple[_CurrentApp, SimulatorServer, Receiver, SimulatorServer]
) -> None:
    sim = _make(clock, daily_budget=25)
    _shared[0].app = sim.app
    base = _shared[1].base_url
    try:
        deal_id = sim.add_deal({"title": "Budget"})
        listed = api(base, "GET", "/api/v2/deals")  # v2 list: 10
        assert listed.headers["x-daily-requests-left"] == "15"
        assert listed.headers["x-daily-ratelimit-token-remaining"] == "15"
        assert listed.headers["x-daily-ratelimit-token-limit"] == "25"
        assert api(base, "GET", f"/api/v2/deals/{deal_id}").headers["x-daily-requests-left"] == "14"  # get: 1
        assert (
            api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"value": 3}).headers["x-daily-requests-left"] == "9"
        )  # update: 5
        refused = api(base, "GET", "/v1/deals")  # v1 list: 20 > 9
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) == 14 * 3600  # until midnight UTC
        assert sim.refusals == 1 and sim.daily_budget_left == 9
        assert api(base, "POST", "/v1/notes", json={"content": "x", "deal_id": deal_id}).status_code == 429
        created = api(base, "POST", "/api/v2/activities", json={"type": "task"})  # v2 create: 5
        assert created.status_code == 200 and created.headers["x-daily-requests-left"] == "4"
        assert api(base, "GET", "/api/v2/deals").status_code == 429  # 10 > 4 left
        clock.advance(14 * 3600)  # the next UTC day
        again = api(base, "GET", "/api/v2/deals")
        assert again.status_code == 200 and again.headers["x-daily-requests-left"] == "15"
    finally:
        sim.close()


def test_fault_knobs(sim: PipedriveSimulator, base: str) -> None:
    sim.faults.error_rate = 1.0
    failed = api(base, "POST", "/api/v2/deals", json={"title": "Lost"})
    assert failed.status_code in (500, 503) and failed.json()["success"] is False
    assert sim.deals == {}  # no effect
    sim.faults.error_rate = 0.0
    sim.faults.error_after_effect_rate = 1.0
    answered = api(base, "POST", "/api/v2/deals", json={"title": "Done anyway"})
    assert answered.status_code == 500 and [d["title"] for d in sim.deals.values()] == ["Done anyway"]
    assert api(base, "GET", "/api/v2/deals").status_code == 200  # reads are not affected
    sim.faults.error_after_effect_rate = 0.0
    sim.faults.limit_rate = 1.0
    limited = api(base, "GET", "/api/v2/deals")
    assert limited.status_code == 429 and limited.headers["retry-after"] and sim.refusals == 1


# --- webhooks ------------------------------------------------------------------------------


def _subscribe(base: str, url: str, **extra: Any) -> int:
    body = {
        "subscription_url": url,
        "event_action": "*",
        "event_object": "deal",
        "version": "2.0",
        "http_auth_user": HOOK_USER,
        "http_auth_password": HOOK_PASSWORD,
        **extra,
    }
    resp = api(base, "POST", "/v1/webhooks", json=body)
    assert resp.status_code == 201, resp.text
    return int(resp.json()["data"]["id"])


def test_webhook_v2_create_change_delete_shapes(
    sim: PipedriveSimulator, base: str, receiver: Receiver, hook_url: str, clock: FakeClock
) -> None:
    hook_id = _subscribe(base, hook_url)
    key = sim.add_deal_field("Visit address", "address")
    deal_id = sim.add_deal({"title": "Solar roof", "value": 900})  # in the UI
    clock.advance(5)
    sim.update_deal(deal_id, {"stage_id": 2})  # in the UI
    clock.advance(5)
    api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"status": "lost", "lost_reason": "Budget"})
    api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"custom_fields": {key: "Tartu mnt 1"}})
    api(base, "PATCH", f"/api/v2/deals/{deal_id}", json={"value": 900})  # no change: no webhook
    api(base, "DELETE", f"/api/v2/deals/{deal_id}")
    assert sim.wait_webhooks(5)
    assert all(h["auth"] == (HOOK_USER, HOOK_PASSWORD) for h in receiver.hits)
    create, stage, lost, custom, delete = receiver.bodies()

    meta = create["meta"]
    assert meta["action"] == "create" and meta["entity"] == "deal" and meta["entity_id"] == str(deal_id)
    assert meta["version"] == "2.0" and meta["change_source"] == "app" and meta["attempt"] == 1
    assert meta["webhook_id"] == str(hook_id) and meta["is_bulk_edit"] is False
    assert meta["company_id"] == str(sim.company_id) and meta["user_id"] == str(sim.user_id)
    assert meta["timestamp"] == "2026-03-02T10:00:00.000Z" and meta["host"] == "sim.pipedrive.com"
    assert uuid.UUID(meta["id"]).version == 4 and uuid.UUID(meta["correlation_id"]).version == 4
    assert create["previous"] is None
    assert create["data"]["id"] == deal_id and create["data"]["title"] == "Solar roof"
    assert create["data"]["update_time"] is None and create["data"]["stage_change_time"] is None

    assert stage["meta"]["action"] == "change" and stage["meta"]["change_source"] == "app"
    assert stage["previous"] == {"stage_id": 1}  # only what changed: "stage_id" in previous
    assert stage["data"]["stage_id"] == 2 and stage["data"]["update_time"] == "2026-03-02T10:00:05Z"

    assert lost["meta"]["change_source"] == "api"
    assert lost["previous"] == {"status": "open", "lost_reason": None, "lost_time": None, "close_time": None}
    assert lost["data"]["status"] == "lost" and lost["data"]["lost_reason"] == "Budget"

    assert custom["previous"] == {"custom_fields": {key: None}}
    assert custom["data"]["custom_fields"][key] == {"type": "address", "value": "Tartu mnt 1"}

    assert delete["meta"]["action"] == "delete" and delete["data"] is None
    assert delete["previous"]["id"] == deal_id and delete["previous"]["status"] == "lost"
    assert len({b["meta"]["id"] for b in receiver.bodies()}) == 5


def test_webhook_matching_by_action_and_object(
    sim: PipedriveSimulator, base: str, receiver: Receiver, hook_url: str
) -> None:
    _subscribe(base, hook_url, event_action="change")
    _subscribe(
        base, hook_url, event_object="activity", event_action="create", http_auth_user=None, http_auth_password=None
    )
    deal_id = sim.add_deal({"title": "Only changes"})
    sim.update_deal(deal_id, {"title": "Renamed"})
    api(base, "POST", "/api/v2/activities", json={"type": "call", "deal_id": deal_id, "subject": "Ring"})
    assert sim.wait_webhooks(5)
    got = [(h["json"]["meta"]["entity"], h["json"]["meta"]["action"], h["auth"]) for h in receiver.hits]
    assert got == [("deal", "change", (HOOK_USER, HOOK_PASSWORD)), ("activity", "create", None)]
    activity = receiver.bodies()[1]["data"]
    assert activity["subject"] == "Ring" and activity["deal_id"] == deal_id and activity["type"] == "call"


def test_webhook_retries_keep_meta_id_and_count_attempts(
    sim: PipedriveSimulator, base: str, receiver: Receiver, hook_url: str
) -> None:
    _subscribe(base, hook_url)
    receiver.statuses = [500, 503]
    sim.add_deal({"title": "Retry me"})
    assert sim.wait_webhooks(5)
    bodies = receiver.bodies()
    assert [b["meta"]["attempt"] for b in bodies] == [1, 2, 3]
    assert len({b["meta"]["id"] for b in bodies}) == 1
    assert [d.status for d in sim.sender.log] == [500, 503, 200]

    receiver.reset()
    receiver.statuses = [500] * 10
    sim.add_deal({"title": "Never answered"})
    assert sim.wait_webhooks(5)
    assert [b["meta"]["attempt"] for b in receiver.bodies()] == [1, 2, 3, 4]  # then Pipedrive gives up


def test_webhook_v1_body_and_retry_counter(
    sim: PipedriveSimulator, base: str, receiver: Receiver, hook_url: str
) -> None:
    hook_id = _subscribe(base, hook_url, version="1.0", event_action="updated")
    assert api(base, "GET", "/v1/webhooks").json()["data"][0]["event_action"] == "change"
    deal_id = sim.add_deal({"title": "Old style"})
    receiver.statuses = [500]
    sim.update_deal(deal_id, {"stage_id": 3})
    assert sim.wait_webhooks(5)
    first, retried = receiver.bodies()
    assert first["v"] == 1 and first["event"] == "updated.deal" and first["retry"] == 0
    assert retried["retry"] == 1 and retried["meta"] == first["meta"]
    meta = first["meta"]
    assert meta["action"] == "updated" and meta["object"] == "deal" and meta["id"] == deal_id
    assert meta["webhook_id"] == hook_id and meta["change_source"] == "app"
    assert isinstance(meta["timestamp"], int) and meta["company_id"] == sim.company_id
    assert first["current"]["stage_id"] == 3 and first["previous"]["stage_id"] == 1
    assert first["previous"]["title"] == "Old style"  # v1 previous is the whole object
    assert first["current"]["update_time"] == "2026-03-02 10:00:00"


def test_webhooks_api_and_ban(clock: FakeClock, receiver: Receiver, hook_url: str, _shared: Shared) -> None:
    sim = _make(clock, webhook_retry_delays=())
    _shared[0].app = sim.app
    base = _shared[1].base_url
    try:
        bad = {"subscription_url": hook_url, "event_action": "moved", "event_object": "deal"}
        assert api(base, "POST", "/v1/webhooks", json=bad).status_code == 400
        assert (
            api(
                base, "POST", "/v1/webhooks", json={**bad, "event_action": "*", "subscription_url": "not a url"}
            ).status_code
            == 400
        )
        hook_id = _subscribe(base, hook_url)
        listed = api(base, "GET", "/v1/webhooks").json()
        assert listed["success"] is True and [h["id"] for h in listed["data"]] == [hook_id]
        assert listed["data"][0]["version"] == "2.0" and listed["data"][0]["http_auth_user"] == HOOK_USER

        sim.webhook_ban_threshold = 2
        receiver.statuses = [500] * 5
        for i in range(3):
            sim.add_deal({"title": f"Deal {i}"})
            assert sim.wait_webhooks(5)
        assert len(receiver.hits) == 2  # the third event met a banned webhook and was lost
        assert sim.sender.log[-1].dropped and sim.sender.log[-1].error == "banned"
        assert sim.webhooks[hook_id]["last_http_status"] == 500

        assert api(base, "DELETE", f"/v1/webhooks/{hook_id}").json() == {"status": "ok", "success": True}
        assert api(base, "DELETE", f"/v1/webhooks/{hook_id}").status_code == 404
        assert sim.add_webhook(hook_url) != hook_id
    finally:
        sim.close()


def test_main_serves_a_seeded_company() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.pipedrive",
            "--port",
            "0",
            "--token",
            "cli-token",
            "--seed-deals",
            "3",
            "--burst-limit",
            "50",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base = line.split("base_url=")[1].split()[0]
        deals = requests.get(base + "/api/v2/deals", headers={"x-api-token": "cli-token"}, timeout=5)
        assert [d["title"] for d in deals.json()["data"]] == ["Seed deal 1", "Seed deal 2", "Seed deal 3"]
        assert deals.headers["x-ratelimit-limit"] == "50"
    finally:
        proc.terminate()
        proc.wait(timeout=5)
