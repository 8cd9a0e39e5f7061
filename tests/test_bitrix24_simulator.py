"""The Bitrix24 simulator behaves like the documented REST API, over real HTTP on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import requests
from flask import Flask, request

from simulators import FaultKnobs, LeakyBucket, SimulatorServer
from simulators.bitrix24 import Bitrix24Simulator, main, parse_php_params

MSK = timezone(timedelta(hours=3))
TIME_KEYS = {
    "start",
    "finish",
    "duration",
    "processing",
    "date_start",
    "date_finish",
    "operating_reset_at",
    "operating",
}


class FakeClock:
    """A settable 'now' for the simulator (aware) and a monotonic clock for the bucket."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 10, 0, 0, tzinfo=MSK)
        self.mono = 1000.0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Bitrix24Simulator]:
    # A generous bucket so tests that are not about the limit never meet it.
    simulator = Bitrix24Simulator(
        rate=1000.0, burst=1000, clock=clock, monotonic=lambda: clock.mono, faults=FaultKnobs(seed=7)
    )
    yield simulator
    simulator.close()


class _CurrentApp:
    """A WSGI app that forwards to the current test's simulator, so one server serves the module
    (stopping a werkzeug server costs half a second each time)."""

    def __init__(self) -> None:
        self.app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def _shared() -> Iterator[tuple[_CurrentApp, SimulatorServer]]:
    current = _CurrentApp()
    srv = SimulatorServer(current).start()  # type: ignore[arg-type]  # any WSGI app serves
    yield current, srv
    srv.stop()


@pytest.fixture
def server(sim: Bitrix24Simulator, _shared: tuple[_CurrentApp, SimulatorServer]) -> SimulatorServer:
    current, srv = _shared
    current.app = sim.app
    return srv


@pytest.fixture
def url(sim: Bitrix24Simulator, server: SimulatorServer) -> str:
    return server.base_url + sim.webhook_base


def call(url: str, method: str, params: dict[str, Any] | None = None) -> requests.Response:
    return requests.post(f"{url}{method}.json", json=params or {}, timeout=5)


class Receiver:
    """A tiny Flask app on loopback that records outbound events."""

    def __init__(self) -> None:
        self.hits: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        app = Flask("receiver")

        @app.post("/hook")
        def hook() -> tuple[str, int]:
            with self.lock:
                self.hits.append({"content_type": request.content_type, "form": dict(request.form)})
            return "", 200

        self.server = SimulatorServer(app).start()
        self.url = self.server.base_url + "/hook"


@pytest.fixture(scope="module")
def _receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.server.stop()


@pytest.fixture
def receiver(_receiver: Receiver) -> Receiver:
    _receiver.hits.clear()
    return _receiver


# --- envelopes, auth, parameter forms ---------------------------------------------------------


def test_success_envelope_and_time(url: str) -> None:
    resp = call(url, "crm.deal.add", {"fields": {"TITLE": "Roof", "OPPORTUNITY": 1000}})
    assert resp.status_code == 200
    body = resp.json()
    assert body["result"] == 1 and isinstance(body["result"], int)
    assert set(body["time"]) == TIME_KEYS
    assert body["time"]["date_start"] == "2026-03-02T10:00:00+03:00"
    deal = requests.get(f"{url}crm.deal.get", params={"id": "1"}, timeout=5).json()["result"]
    assert deal["OPPORTUNITY"] == "1000.00" and deal["ID"] == "1" and deal["CURRENCY_ID"] == "RUB"
    assert deal["STAGE_ID"] == "NEW" and deal["STAGE_SEMANTIC_ID"] == "P" and deal["CLOSED"] == "N"
    assert deal["DATE_CREATE"] == deal["DATE_MODIFY"] == "2026-03-02T10:00:00+03:00"


def test_wrong_credentials_and_unknown_method(sim: Bitrix24Simulator, server: SimulatorServer, url: str) -> None:
    bad = requests.post(f"{server.base_url}/rest/1/wrong/crm.deal.list.json", json={}, timeout=5)
    assert bad.status_code == 401 and bad.json()["error"] == "NO_AUTH_FOUND"
    bad_user = requests.post(f"{server.base_url}/rest/2/simcode/crm.deal.list", json={}, timeout=5)
    assert bad_user.status_code == 401
    unknown = call(url, "crm.deal.frobnicate")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
    assert sim.calls == {}


def test_deal_not_found_has_empty_code(url: str) -> None:
    resp = call(url, "crm.deal.get", {"ID": 999})
    assert resp.status_code == 400
    assert resp.json() == {"error": "", "error_description": "Not found"}
    assert call(url, "crm.deal.update", {"id": 999, "fields": {"TITLE": "x"}}).status_code == 400
    assert call(url, "crm.deal.delete", {"id": 999}).json()["error_description"] == "Not found"


def test_php_style_query_and_form(sim: Bitrix24Simulator, url: str) -> None:
    sim.add_user("Ivan", "Petrov", department=[3])
    sim.add_user("Olga", active=False)
    query = {"FILTER[ACTIVE]": "true", "FILTER[UF_DEPARTMENT]": "3"}
    resp = requests.get(f"{url}user.get.json", params=query, timeout=5)
    assert [u["NAME"] for u in resp.json()["result"]] == ["Ivan"]
    form = {
        "fields[TITLE]": "Call",
        "fields[RESPONSIBLE_ID]": "2",
        "fields[UF_CRM_TASK][]": "D_1",
        "fields[AUDITORS][0]": "1",
    }
    task = requests.post(f"{url}tasks.task.add", data=form, timeout=5).json()["result"]["task"]
    assert task["ufCrmTask"] == ["D_1"] and task["auditors"] == ["1"] and task["responsibleId"] == "2"


def test_parse_php_params() -> None:
    parsed = parse_php_params(
        [
            ("FILTER[>ID]", "5"),
            ("select[]", "ID"),
            ("select[]", "TITLE"),
            ("order[DATE_MODIFY]", "ASC"),
            ("a[0]", "x"),
            ("a[1]", "y"),
            ("plain", "1"),
            ("m[5]", "z"),
            ("bad]key", "v"),
        ]
    )
    assert parsed == {
        "FILTER": {">ID": "5"},
        "select": ["ID", "TITLE"],
        "order": {"DATE_MODIFY": "ASC"},
        "a": ["x", "y"],
        "plain": "1",
        "m": {"5": "z"},
        "bad]key": "v",
    }


# --- deals: paging, filters, updates, stages ---------------------------------------------------


def test_paging_total_next_and_fast_export(sim: Bitrix24Simulator, url: str) -> None:
    for i in range(120):
        sim.add_deal({"TITLE": f"Deal {i}"})
    pages = [call(url, "crm.deal.list", {"start": s, "select": ["ID"]}).json() for s in (0, 50, 100)]
    assert [len(p["result"]) for p in pages] == [50, 50, 20]
    assert [p.get("next") for p in pages] == [50, 100, None]
    assert all(p["total"] == 120 for p in pages)
    assert pages[0]["result"][0] == {"ID": "1"}
    fast = call(
        url, "crm.deal.list", {"order": {"ID": "ASC"}, "filter": {">ID": 100}, "start": -1, "select": ["ID"]}
    ).json()
    assert "total" not in fast and "next" not in fast
    assert [r["ID"] for r in fast["result"]] == [str(i) for i in range(101, 121)]


def test_filter_operators_order_and_select(sim: Bitrix24Simulator, url: str) -> None:
    sim.add_deal({"TITLE": "Roof repair", "OPPORTUNITY": 500, "ASSIGNED_BY_ID": 1})
    sim.add_deal({"TITLE": "Window", "OPPORTUNITY": 1500, "STAGE_ID": "WON", "UF_CRM_NO_TECH": "Y"})
    sim.add_deal({"TITLE": "roof check", "OPPORTUNITY": 90, "CATEGORY_ID": 1, "STAGE_ID": "C1:LOSE"})

    def ids(flt: dict[str, Any], **extra: Any) -> list[str]:
        body = call(url, "crm.deal.list", {"filter": flt, "select": ["ID"], **extra}).json()
        return [r["ID"] for r in body["result"]]

    assert ids({">OPPORTUNITY": 100}) == ["1", "2"]  # numeric, not string, comparison
    assert ids({">=OPPORTUNITY": 500, "<OPPORTUNITY": 1500}) == ["1"]
    assert ids({"<=ID": 2}) == ["1", "2"]
    assert ids({"!STAGE_ID": "NEW"}) == ["2", "3"]
    assert ids({"@ID": [1, 3]}) == ["1", "3"]
    assert ids({"ID": [2, 3]}) == ["2", "3"]
    assert ids({"%TITLE": "ROOF"}) == ["1", "3"]
    assert ids({"=STAGE_SEMANTIC_ID": "F"}) == ["3"]
    assert ids({"CATEGORY_ID": "1"}) == ["3"]
    assert ids({"UF_CRM_NO_TECH": "Y"}) == ["2"]
    assert ids({}, order={"OPPORTUNITY": "DESC"}) == ["2", "1", "3"]
    row = call(url, "crm.deal.list", {"filter": {"ID": 2}, "select": ["ID", "UF_*"]}).json()["result"][0]
    assert row == {"ID": "2", "UF_CRM_NO_TECH": "Y"}
    default = call(url, "crm.deal.list", {"filter": {"ID": 2}}).json()["result"][0]
    assert "UF_CRM_NO_TECH" not in default and default["TITLE"] == "Window"
    everything = call(url, "crm.deal.list", {"filter": {"ID": 1}, "select": ["*", "UF_*"]}).json()["result"]
    everything = everything[0]
    assert everything["UF_CRM_NO_TECH"] is None and everything["TITLE"] == "Roof repair"


def test_changed_since_compares_datetimes_across_offsets(sim: Bitrix24Simulator, clock: FakeClock, url: str) -> None:
    sim.add_deal({"TITLE": "old"})
    clock.advance(3600)
    sim.add_deal({"TITLE": "new"})
    since_utc = (clock.now - timedelta(minutes=30)).astimezone(UTC).isoformat(timespec="seconds")
    body = call(url, "crm.deal.list", {"filter": {">=DATE_MODIFY": since_utc}, "order": {"DATE_MODIFY": "ASC"}}).json()
    assert [r["TITLE"] for r in body["result"]] == ["new"]


def test_update_sets_stage_semantics_and_ignores_read_only(sim: Bitrix24Simulator, clock: FakeClock, url: str) -> None:
    deal_id = sim.add_deal({"TITLE": "A", "CATEGORY_ID": "1", "UF_CRM_ADDRESS": "Kazan|55.79;49.12|7"})
    clock.advance(60)
    resp = call(
        url,
        "crm.deal.update",
        {
            "ID": deal_id,
            "FIELDS": {"STAGE_ID": "C1:LOSE", "CATEGORY_ID": "0", "ID": "77", "UF_CRM_REASON": "price"},
            "PARAMS": {"REGISTER_SONET_EVENT": "N"},
        },
    )
    assert resp.json()["result"] is True
    deal = call(url, "crm.deal.get", {"id": deal_id}).json()["result"]
    assert (deal["STAGE_ID"], deal["STAGE_SEMANTIC_ID"], deal["CLOSED"]) == ("C1:LOSE", "F", "Y")
    assert deal["CATEGORY_ID"] == "1" and deal["ID"] == deal_id
    assert deal["DATE_MODIFY"] == "2026-03-02T10:01:00+03:00" != deal["DATE_CREATE"]
    assert deal["UF_CRM_ADDRESS"] == "Kazan|55.79;49.12|7" and deal["UF_CRM_REASON"] == "price"
    call(url, "crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "C1:WON"}})
    assert sim.deals[deal_id]["STAGE_SEMANTIC_ID"] == "S"
    assert call(url, "crm.deal.delete", {"id": deal_id}).json()["result"] is True
    assert deal_id not in sim.deals


def test_status_list(url: str) -> None:
    body = call(url, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE"}, "order": {"SORT": "ASC"}}).json()
    stages = {s["STATUS_ID"]: s["SEMANTICS"] for s in body["result"]}
    assert list(stages) == [
        "NEW",
        "PREPARATION",
        "PREPAYMENT_INVOICE",
        "EXECUTING",
        "FINAL_INVOICE",
        "WON",
        "LOSE",
        "APOLOGY",
    ]
    assert (stages["NEW"], stages["WON"], stages["LOSE"], stages["APOLOGY"]) == (None, "S", "F", "F")
    assert body["total"] == 8
    c1 = call(url, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE_1"}}).json()["result"]
    assert [s["STATUS_ID"] for s in c1] == ["C1:NEW", "C1:PREPARATION", "C1:EXECUTING", "C1:WON", "C1:LOSE"]
    assert {s["CATEGORY_ID"] for s in c1} == {"1"} and c1[0]["EXTRA"]["SEMANTICS"] == "process"


# --- batch -------------------------------------------------------------------------------------


def test_batch_substitution_sections_and_counts(sim: Bitrix24Simulator, url: str) -> None:
    uid = sim.add_user("Ivan", "Petrov")
    sim.add_deal({"TITLE": "A", "ASSIGNED_BY_ID": uid})
    cmd = {
        "a": "crm.deal.get?ID=1",
        "b": "user.get?ID=$result[a][ASSIGNED_BY_ID]",
        "c": "crm.deal.get?ID=404",
        "d": "crm.deal.list?select[]=ID&filter[%3EID]=0",
    }
    resp = call(url, "batch", {"halt": 0, "cmd": cmd})
    assert resp.status_code == 200
    inner = resp.json()["result"]
    assert inner["result"]["a"]["TITLE"] == "A"
    assert inner["result"]["b"][0]["NAME"] == "Ivan"
    assert inner["result_error"] == {"c": {"error": "", "error_description": "Not found"}}
    assert inner["result_total"] == {"b": 1, "d": 1}
    assert inner["result_next"] == []  # an empty section is a JSON list, as PHP encodes it
    assert set(inner["result_time"]) == {"a", "b", "d"}
    assert sim.calls["batch"] == 1 and sim.calls["crm.deal.get"] == 2 and sim.calls["user.get"] == 1


def test_batch_chains_list_pages_by_row_reference(sim: Bitrix24Simulator, url: str) -> None:
    # The documented fast export inside one batch: each page starts after row 49 of the page
    # before it ($result[key][49][ID], as $result[user_by_name][0][ID] in the batch docs).
    for i in range(120):
        sim.add_deal({"TITLE": f"Deal {i}"})
    page = "crm.deal.list?order[ID]=ASC&select[0]=ID&select[1]=DATE_MODIFY&start=-1"
    cmd = {
        "c0": f"{page}&filter[%3EID]=0",
        "c1": f"{page}&filter[%3EID]=%24result%5Bc0%5D%5B49%5D%5BID%5D",
        "c2": f"{page}&filter[%3EID]=$result[c1][49][ID]&filter[%3E%3DDATE_MODIFY]=$result[c1][49][DATE_MODIFY]",
    }
    inner = call(url, "batch", {"halt": 0, "cmd": cmd}).json()["result"]
    ids = [[int(r["ID"]) for r in inner["result"][k]] for k in ("c0", "c1", "c2")]
    assert ids == [list(range(1, 51)), list(range(51, 101)), list(range(101, 121))]
    assert inner["result_total"] == [] and inner["result_error"] == []  # start=-1: no count
    assert sim.calls["crm.deal.list"] == 3


def test_batch_halt_limit_and_no_nesting(url: str) -> None:
    halted = call(url, "batch", {"halt": 1, "cmd": {"x": "crm.deal.get?ID=5", "y": "user.get"}})
    halted = halted.json()["result"]
    assert list(halted["result_error"]) == ["x"] and halted["result"] == []
    nested = call(url, "batch", {"cmd": {"n": "batch?cmd[a]=user.get"}}).json()["result"]
    assert nested["result_error"]["n"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    too_many = call(url, "batch", {"halt": 0, "cmd": {f"k{i}": "user.get" for i in range(51)}})
    assert too_many.status_code == 400
    assert too_many.json()["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"
    fifty = call(url, "batch", {"halt": 0, "cmd": {f"k{i}": "user.get" for i in range(50)}})
    assert fifty.status_code == 200 and len(fifty.json()["result"]["result"]) == 50


def test_batch_from_form_encoded_commands(sim: Bitrix24Simulator, url: str) -> None:
    # What the adapter's client sends: PHP-encoded params inside each command string.
    sim.add_deal({"TITLE": "X"})
    resp = requests.post(
        f"{url}batch",
        data={"halt": "0", "cmd[d1]": "crm.deal.get?ID=1", "cmd[d2]": "crm.deal.list?filter%5BID%5D%5B0%5D=1"},
        timeout=5,
    )
    inner = resp.json()["result"]
    assert inner["result"]["d1"]["TITLE"] == "X" and inner["result"]["d2"][0]["ID"] == "1"


# --- the leaky bucket and faults ----------------------------------------------------------------


def test_bucket_refuses_the_51st_call_and_recovers(sim: Bitrix24Simulator, clock: FakeClock, url: str) -> None:
    sim.bucket = LeakyBucket(2.0, 50, clock=lambda: clock.mono)
    answers = [call(url, "user.get").status_code for _ in range(51)]
    assert answers[:50] == [200] * 50
    refused = call(url, "user.get")
    assert refused.status_code == 503
    assert refused.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    assert answers[50] == 503 and sim.refusals == 2 and sim.calls["user.get"] == 50
    clock.advance(1.0)  # drains two units
    assert [call(url, "user.get").status_code for _ in range(3)] == [200, 200, 503]


def test_a_batch_is_one_hit_of_the_bucket(sim: Bitrix24Simulator, clock: FakeClock, url: str) -> None:
    sim.bucket = LeakyBucket(2.0, 50, clock=lambda: clock.mono)
    for _ in range(50):  # 50 full batches: 2,500 commands in 50 hits
        assert call(url, "batch", {"cmd": {f"k{i}": "user.get" for i in range(50)}}).status_code == 200
    refused = call(url, "batch", {"cmd": {"k": "user.get"}})
    assert refused.status_code == 503 and refused.json()["error"] == "QUERY_LIMIT_EXCEEDED"
    assert sim.calls["user.get"] == 2500 and sim.calls["batch"] == 50 and sim.http_requests == 51
    too_long = call(url, "batch", {"cmd": {f"k{i}": "user.get" for i in range(51)}})
    assert too_long.status_code == 400 and too_long.json()["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"
    assert sim.calls["user.get"] == 2500  # refused whole, before any command ran


def test_error_after_effect_writes_then_fails(sim: Bitrix24Simulator, url: str) -> None:
    sim.faults.error_after_effect_rate = 1.0
    resp = call(url, "crm.deal.add", {"fields": {"TITLE": "ghost"}})
    assert resp.status_code == 500 and resp.json()["error"] == "INTERNAL_SERVER_ERROR"
    assert [d["TITLE"] for d in sim.deals.values()] == ["ghost"]
    assert call(url, "user.get").status_code == 200  # reads are not affected


def test_error_and_limit_rates_have_no_effect(sim: Bitrix24Simulator, url: str) -> None:
    sim.faults.error_rate = 1.0
    codes = {call(url, "crm.deal.add", {"fields": {"TITLE": "x"}}).json()["error"] for _ in range(12)}
    assert codes == {"INTERNAL_SERVER_ERROR", "QUERY_LIMIT_EXCEEDED"}
    assert sim.deals == {} and sim.calls == {}
    sim.faults.error_rate, sim.faults.limit_rate = 0.0, 1.0
    before = sim.refusals
    resp = call(url, "user.get")
    assert resp.status_code == 503 and resp.json()["error"] == "QUERY_LIMIT_EXCEEDED"
    assert sim.refusals == before + 1


def test_operation_time_limit_and_overload(sim: Bitrix24Simulator, clock: FakeClock, url: str) -> None:
    sim.block_method("crm.deal.list", 30)
    blocked = call(url, "crm.deal.list")
    assert blocked.status_code == 429 and blocked.json()["error"] == "OPERATION_TIME_LIMIT"
    assert call(url, "user.get").status_code == 200
    clock.advance(29.5)
    assert call(url, "crm.deal.list").status_code == 429
    clock.advance(0.5)  # the block lasts its 30 seconds on the simulator's clock, no longer
    assert call(url, "crm.deal.list").status_code == 200
    sim.overloaded = True
    assert call(url, "user.get").json()["error"] == "OVERLOAD_LIMIT"


def test_operating_time_adds_up_per_method_over_a_sliding_ten_minutes(
    sim: Bitrix24Simulator, clock: FakeClock, url: str
) -> None:
    sim.method_time = {"crm.deal.list": 100.0, "user.get": 1.0}
    first = call(url, "crm.deal.list").json()["time"]
    assert first["operating"] == 100.0 and first["operating_reset_at"] == int(first["start"]) + 600
    clock.advance(300)
    second = call(url, "crm.deal.list").json()["time"]
    # The first call's time leaves the window 600 s after it: that is when part of the limit frees.
    assert second["operating"] == 200.0 and second["operating_reset_at"] == first["operating_reset_at"]
    assert call(url, "user.get").json()["time"]["operating"] == 1.0  # counted per method
    for _ in range(3):
        assert call(url, "crm.deal.list").status_code == 200  # 500 s: past the 480 s limit now
    blocked = call(url, "crm.deal.list")
    assert blocked.status_code == 429 and blocked.json()["error"] == "OPERATION_TIME_LIMIT"
    assert call(url, "user.get").status_code == 200  # the other methods go on
    batch = call(url, "batch", {"cmd": {"a": "crm.deal.list", "b": "user.get"}}).json()["result"]
    assert batch["result_error"]["a"]["error"] == "OPERATION_TIME_LIMIT"
    assert batch["result_time"]["b"]["operating"] == 3.0 and "operating_reset_at" in batch["result_time"]["b"]
    clock.advance(300)  # the first call's 100 s leave the window: 400 s remain, under the limit
    assert call(url, "crm.deal.list").status_code == 200


# --- tasks, users, comments ---------------------------------------------------------------------


def test_tasks_add_requires_responsible_and_lists_by_deal(sim: Bitrix24Simulator, url: str) -> None:
    uid = sim.add_user("Pavel", "Sidorov", position="Engineer")
    missing = call(url, "tasks.task.add", {"fields": {"TITLE": "Check"}})
    assert missing.status_code == 400 and missing.json()["error"] == "ERROR_CORE"
    unknown = call(url, "tasks.task.add", {"fields": {"TITLE": "Check", "RESPONSIBLE_ID": 99}})
    assert unknown.status_code == 400
    assert call(url, "tasks.task.add", {"FIELDS": {"TITLE": "x"}}).json()["error"] == "100"
    fields = {
        "TITLE": "Check",
        "RESPONSIBLE_ID": uid,
        "DESCRIPTION": "look [m1]",
        "UF_CRM_TASK": ["D_10"],
        "DEADLINE": "2026-12-31T18:00:00+03:00",
        "AUDITORS": [1],
        "PRIORITY": 2,
    }
    task = call(url, "tasks.task.add", {"fields": fields}).json()["result"]["task"]
    assert task["id"] == "3701" and task["status"] == "2" and task["responsibleId"] == uid
    assert task["ufCrmTask"] == ["D_10"] and task["deadline"] == "2026-12-31T18:00:00+03:00"
    assert task["createdBy"] == "1" and task["auditors"] == ["1"] and task["priority"] == "2"
    assert task["responsible"]["workPosition"] == "Engineer"
    other = {"TITLE": "Other", "RESPONSIBLE_ID": uid, "UF_CRM_TASK": ["D_11"]}
    call(url, "tasks.task.add", {"fields": other})
    listed = call(
        url, "tasks.task.list", {"filter": {"UF_CRM_TASK": "D_10"}, "select": ["ID", "DESCRIPTION", "UF_CRM_TASK"]}
    ).json()
    assert listed["total"] == 1
    assert listed["result"]["tasks"] == [{"id": "3701", "description": "look [m1]", "ufCrmTask": ["D_10"]}]
    assert [t["ID"] for t in sim.tasks_for_deal("10")] == ["3701"]
    done = call(url, "tasks.task.complete", {"taskId": 3701}).json()["result"]["task"]
    assert done["status"] == "5" and done["closedDate"]
    open_tasks = call(url, "tasks.task.list", {"filter": {"!STATUS": 5, "RESPONSIBLE_ID": uid}}).json()
    assert [t["title"] for t in open_tasks["result"]["tasks"]] == ["Other"]
    assert "ufCrmTask" not in open_tasks["result"]["tasks"][0]  # UF fields only when selected
    upd = call(url, "tasks.task.update", {"taskId": 3702, "fields": {"TITLE": "Renamed"}}).json()
    assert upd["result"]["task"]["title"] == "Renamed"
    assert call(url, "tasks.task.get", {"taskId": 3702}).json()["result"]["task"]["title"] == "Renamed"
    assert call(url, "tasks.task.get", {"taskId": 9}).json()["result"] == []
    assert call(url, "tasks.task.complete", {"taskId": 9}).status_code == 400


def test_user_get_active_is_boolean(sim: Bitrix24Simulator, url: str) -> None:
    a = sim.add_user("Anna", "Ivanova", department=[1, 5], position="Captain")
    b = sim.add_user("Boris", active=False)
    sim.add_user("Fixed", user_id="17")
    users = call(url, "user.get", {"FILTER": {"ID": [a, b, "17"]}}).json()
    by_id = {u["ID"]: u for u in users["result"]}
    assert by_id[a]["ACTIVE"] is True and by_id[b]["ACTIVE"] is False
    assert by_id[a]["UF_DEPARTMENT"] == [1, 5] and by_id[a]["WORK_POSITION"] == "Captain"
    assert users["total"] == 3 and "17" in by_id
    active = call(url, "user.get", {"FILTER": {"ACTIVE": True}}).json()["result"]
    assert b not in {u["ID"] for u in active} and a in {u["ID"] for u in active}
    assert call(url, "user.get", {"filter": {"ACTIVE": "N"}}).json()["result"][0]["ID"] == b


def test_timeline_comments(sim: Bitrix24Simulator, url: str) -> None:
    deal_id = sim.add_deal({"TITLE": "A"})
    resp = call(
        url,
        "crm.timeline.comment.add",
        {"fields": {"ENTITY_ID": deal_id, "ENTITY_TYPE": "deal", "COMMENT": "hello [m2]"}},
    )
    comment_id = resp.json()["result"]
    assert isinstance(comment_id, int)
    assert call(url, "crm.timeline.comment.add", {"FIELDS": {"ENTITY_ID": deal_id}}).status_code == 400
    orphan = call(
        url, "crm.timeline.comment.add", {"fields": {"ENTITY_ID": 404, "ENTITY_TYPE": "deal", "COMMENT": "x"}}
    )
    assert orphan.json()["error"] == "OWNER_NOT_FOUND"
    listed = call(
        url,
        "crm.timeline.comment.list",
        {"filter": {"ENTITY_ID": deal_id, "ENTITY_TYPE": "deal"}, "select": ["ID", "COMMENT"]},
    ).json()
    assert listed["result"] == [{"ID": str(comment_id), "COMMENT": "hello [m2]"}] and listed["total"] == 1


# --- outbound events ---------------------------------------------------------------------------


def test_deal_events_arrive_form_encoded(sim: Bitrix24Simulator, receiver: Receiver, url: str) -> None:
    sim.handler_url = receiver.url
    deal_id = sim.add_deal({"TITLE": "A"})
    call(url, "crm.deal.update", {"id": deal_id, "fields": {"TITLE": "B"}})
    sim.delete_deal(deal_id)
    assert sim.webhooks.wait_idle(5)
    events = [h["form"]["event"] for h in receiver.hits]
    assert events == ["ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMDEALDELETE"]
    hit = receiver.hits[1]
    assert hit["content_type"].startswith("application/x-www-form-urlencoded")
    form = hit["form"]
    assert form["data[FIELDS][ID]"] == deal_id
    assert form["auth[application_token]"] == "simtoken"
    assert form["auth[domain]"] == "sim.bitrix24.ru"
    assert form["auth[client_endpoint]"] == "https://sim.bitrix24.ru/rest/"
    assert form["auth[server_endpoint]"] == "https://oauth.bitrix.info/rest/"
    assert form["auth[member_id]"] and form["event_handler_id"].isdigit()
    assert form["ts"] == str(int(datetime(2026, 3, 2, 10, tzinfo=MSK).timestamp()))
    assert all(d.status == 200 for d in sim.webhooks.log)


def test_event_bind_redirects_and_task_events(sim: Bitrix24Simulator, receiver: Receiver, url: str) -> None:
    sim.handler_url = "http://127.0.0.1:9/never"

    def bind(event: str) -> dict[str, Any]:
        return call(url, "event.bind", {"event": event, "handler": receiver.url}).json()

    assert bind("onCrmDealUpdate")["result"] is True and bind("ONTASKUPDATE")["result"] is True
    assert bind("NOPE")["error"] == "ERROR_EVENT_NOT_FOUND"
    deal_id = sim.add_deal({"TITLE": "A"})  # ADD still goes to handler_url (nobody listens there)
    sim.update_deal(deal_id, {"TITLE": "B"})
    task = call(url, "tasks.task.add", {"fields": {"TITLE": "t", "RESPONSIBLE_ID": 1}}).json()
    task = task["result"]["task"]
    call(url, "tasks.task.complete", {"taskId": task["id"]})
    assert sim.webhooks.wait_idle(5)
    forms = [h["form"] for h in receiver.hits]
    assert [f["event"] for f in forms] == ["ONCRMDEALUPDATE", "ONTASKUPDATE"]
    assert forms[1]["data[FIELDS_AFTER][ID]"] == task["id"] == forms[1]["data[FIELDS_BEFORE][ID]"]
    assert sim.webhooks.log[0].status is None and sim.webhooks.log[0].error  # no retry follows


def test_dropped_and_duplicated_events(sim: Bitrix24Simulator, receiver: Receiver) -> None:
    sim.handler_url = receiver.url
    sim.faults.drop_webhook_rate = 1.0
    sim.add_deal({"TITLE": "lost"})
    assert sim.webhooks.wait_idle(5)
    assert receiver.hits == [] and sim.webhooks.log[-1].dropped
    sim.faults.drop_webhook_rate, sim.faults.duplicate_webhooks = 0.0, 3
    deal_id = sim.add_deal({"TITLE": "echo"})
    assert sim.webhooks.wait_idle(5)
    assert [h["form"]["data[FIELDS][ID]"] for h in receiver.hits] == [deal_id] * 3


def test_calls_counter_and_main_help(sim: Bitrix24Simulator, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    call(url, "crm.deal.list")
    call(url, "crm.deal.list")
    call(url, "batch", {"cmd": {"a": "crm.deal.list", "b": "user.get"}})
    assert sim.calls == {"crm.deal.list": 3, "batch": 1, "user.get": 1}
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--handler-url" in capsys.readouterr().out


def test_concurrent_writes_get_distinct_ids(sim: Bitrix24Simulator, url: str) -> None:
    ids: list[int] = []

    def worker() -> None:
        with requests.Session() as session:
            for _ in range(10):
                resp = session.post(f"{url}crm.deal.add", json={"fields": {"TITLE": "t"}}, timeout=5)
                ids.append(resp.json()["result"])

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == list(range(1, 61)) and len(sim.deals) == 60
    assert sim.calls["crm.deal.add"] == 60


def _scan(sim: Bitrix24Simulator, flt: dict[str, Any], order: dict[str, Any], start: Any) -> Any:
    """The list answer as the simulator used to compute it: render all, filter, sort, page."""
    import simulators.bitrix24 as mod

    rows = [sim._render_deal(d) for d in sim.deals.values()]
    rows = mod._filter_rows(rows, flt, sim._tz)
    rows = mod._order_rows(rows, order, sim._tz)
    return mod._page(rows, start)


def test_indexed_list_answers_like_a_full_scan(sim: Bitrix24Simulator, clock: FakeClock) -> None:
    # Several deals per second, some seconds crowded, a few edits: the keyset filters the
    # adapter sends and others, in both offset and fast-export (start=-1) paging.
    for i in range(260):
        sim.add_deal(
            {
                "TITLE": f"D{i}",
                "OPPORTUNITY": (i * 37) % 1000,
                "CATEGORY_ID": i % 2,
                **({"UF_CRM_X": str(i % 3)} if i % 4 == 0 else {}),
            }
        )
        if i % 7 == 0 or 100 < i < 180 and i % 40 == 0:
            clock.advance(1)
    for deal_id in ("5", "77", "130"):
        clock.advance(1)
        sim.update_deal(deal_id, {"COMMENTS": "edited"})
    moment = sim.deals["40"]["DATE_MODIFY"]
    utc = datetime.fromisoformat(moment).astimezone(UTC).isoformat()
    by_modify = {"DATE_MODIFY": "ASC", "ID": "ASC"}
    filters: list[dict[str, Any]] = [
        {},
        {">ID": 100},
        {">ID": "100"},
        {"=DATE_MODIFY": moment, ">ID": 30},
        {">DATE_MODIFY": moment},
        {">=DATE_MODIFY": utc},
        {"<DATE_MODIFY": moment, ">=ID": 3},
        {"DATE_MODIFY": utc},
        {">ID": "$result[a][49][ID]"},
        {"CATEGORY_ID": 1, ">ID": 10},
        {"UF_CRM_X": "1"},
        {">OPPORTUNITY": 500},
        {"@ID": [1, 2, 250]},
        {"<=ID": 0},
        {">ID": 1000},
    ]
    orders: list[dict[str, Any]] = [
        {},
        {"ID": "ASC"},
        by_modify,
        {"DATE_MODIFY": "ASC"},
        {"ID": "DESC"},
        {"OPPORTUNITY": "DESC"},
        {"UF_CRM_X": "ASC"},
    ]
    for flt in filters:
        for order in orders:
            for start in (-1, 0, 200, "x"):
                assert _indexed(sim, flt, order, start) == _scan(sim, flt, order, start), (flt, order, start)
    sim.delete_deal("41")  # the kept index follows changes
    assert _indexed(sim, {">ID": 39}, {}, -1) == _scan(sim, {">ID": 39}, {}, -1)


def _indexed(sim: Bitrix24Simulator, flt: dict[str, Any], order: dict[str, Any], start: Any) -> Any:
    chunk, total, nxt = sim._query_deals(flt, order, start)
    return [sim._render_deal(r) for r in chunk], total, nxt
