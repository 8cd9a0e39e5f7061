"""End to end over loopback HTTP: Pipedrive simulator -> intake -> worker -> dispatcher -> simulator."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from adapters.pipedrive.adapter import PipedriveAdapter
from adapters.pipedrive.settings import PipedriveSettings
from connector.config import load_config_text
from connector.runtime import Runtime
from connector.storage.models import InboxRow, OutboxRow
from domain import EventSource
from simulators import SimulatorServer
from simulators.pipedrive import PipedriveSimulator
from tests.helpers import wait_for

# End to end against the simulators in real threads: the full suite runs them, the fast tier does not.
pytestmark = pytest.mark.slow

API_TOKEN = "pd-test-token-0123456789"
HOOK_USER = "hooks"
HOOK_PASSWORD = "hook-password-123"
ADDRESS_KEY = "5f2b6d2ad1e0c0f3b1f1d8b7a3e2c1d0f9e8d7c6"
RATE, BURST = 5, 10  # what the adapter is told; at most BURST - 1 + 2 * RATE = 19 calls per 2 s

PD_CONFIG = """
storage: {url: "@DB_URL@"}
server: {host: 127.0.0.1, port: 0}
worker: {every: 0.1s}
dispatcher: {every: 0.1s, backoff: 0.2s, lease: 2s, reconcile_after: 0.5s}
crms:
  pd:
    type: pipedrive
    base_url: "@PD_URL@"
    api_token: "${PD_TOKEN}"
    webhook_user: hooks
    webhook_password: "${PD_HOOK_PASSWORD}"
    backoff_initial: 0.05s
    rate: @RATE@
    burst: @BURST@
    max_attempts: 6
    location_fields: {address: @ADDRESS_KEY@}
territories:
  - {match: {city: Tallinn, district: Kesklinn}, captain: 10002, backup: 10003}
  - {match: {postcode: "101*"}, captain: 10004}
rules:
  - name: captain-by-location
    crm: pd
    on: [deal.created, deal.updated]
    when: {stage: ["1"]}
    do:
      - assign_captain: {fallback: 10001}
      - create_task:
          title: "Check technical feasibility: {{ deal.title }}"
          description: "Address: {{ deal.address }}"
          responsible: captain
          due: 24h
  - name: lost-needs-reason
    crm: pd
    on: [deal.updated]
    when: {all: [{outcome: lost}, {field: lost_reason, empty: true}]}
    once_per: stage
    do:
      - create_task:
          title: "Укажите причину проигрыша: {{ deal.title }}"
          responsible: responsible
          due: 1 working day
"""


def config_text(db_url: str, pd_url: str) -> str:
    """The test config for a database and a simulator URL."""
    values = {
        "@DB_URL@": db_url,
        "@PD_URL@": pd_url,
        "@RATE@": str(RATE),
        "@BURST@": str(BURST),
        "@ADDRESS_KEY@": ADDRESS_KEY,
    }
    text = PD_CONFIG
    for key, value in values.items():
        text = text.replace(key, value)
    return text


@pytest.fixture
def sim() -> Iterator[tuple[PipedriveSimulator, SimulatorServer]]:
    simulator = PipedriveSimulator(api_token=API_TOKEN, burst_limit=20, webhook_retry_delays=(0.2, 0.5, 1.0))
    for name in ("Ivan", "Oleg", "Anna", "Rustam"):  # users 10002..10005
        simulator.add_user(name)
    simulator.add_deal_field("Address", "address", key=ADDRESS_KEY)
    server = simulator.serve()
    yield simulator, server
    server.stop()
    simulator.close()


@pytest.fixture
def runtime(sim, db_url, monkeypatch) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    _, server = sim
    monkeypatch.setenv("PD_TOKEN", API_TOKEN)
    monkeypatch.setenv("PD_HOOK_PASSWORD", HOOK_PASSWORD)
    rt = Runtime(load_config_text(config_text(db_url, server.base_url)))
    yield rt
    rt.stop()


def _subscribe(simulator: PipedriveSimulator, rt: Runtime, password: str = HOOK_PASSWORD, version: str = "2.0") -> int:
    return simulator.add_webhook(
        f"{rt.intake_url}/hooks/pipedrive/pd",
        event_action="*",
        event_object="deal",
        version=version,
        http_auth_user=HOOK_USER,
        http_auth_password=password,
    )


def _inbox_count(rt: Runtime) -> int:
    """Deliveries stored from webhooks (the first poll at start may add rows of its own)."""
    with rt.store.sessions() as s:
        query = select(func.count(InboxRow.id)).where(InboxRow.source == EventSource.WEBHOOK)
        return int(s.scalar(query) or 0)


def _outbox_states(rt: Runtime) -> set[str]:
    with rt.store.sessions() as s:
        return set(s.scalars(select(OutboxRow.status)))


def _new_deal(
    simulator: PipedriveSimulator, title: str, address: str | None, stage: int = 1, owner: int = 10001
) -> int:
    fields: dict[str, object] = {"title": title, "stage_id": stage, "owner_id": owner, "value": 1200, "currency": "EUR"}
    if address is not None:
        fields["custom_fields"] = {ADDRESS_KEY: address}
    return simulator.add_deal(fields)


@pytest.mark.parametrize("version", ["2.0", "1.0"])
def test_captain_assigned_and_one_activity(sim, runtime: Runtime, version: str) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = sim
    runtime.start()
    _subscribe(simulator, runtime, version=version)
    deal_id = _new_deal(simulator, "Fibre to the office", "Tallinn, Kesklinn district, Narva mnt 5")
    assert wait_for(
        lambda: (
            len(simulator.activities_for_deal(deal_id)) == 1
            and simulator.deals[deal_id]["owner_id"] == 10002
            and _outbox_states(runtime) == {"done"}
        )
    )
    activity = simulator.activities_for_deal(deal_id)[0]
    assert activity["subject"] == "Check technical feasibility: Fibre to the office"
    assert activity["owner_id"] == 10002 and activity["type"] == "task" and activity["done"] is False
    assert activity["due_date"] and activity["due_time"]
    assert "crmc:" in activity["note"] and "Narva mnt 5" in activity["note"]
    with runtime.store.sessions() as s:
        row = s.scalars(select(OutboxRow).where(OutboxRow.command == "create_task")).one()
    assert row.remote_id == str(activity["id"])
    assert any("territory" in a.message for a in runtime.store.audit.for_deal("pd", str(deal_id)))


def test_duplicate_deliveries_leave_one_activity(sim, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = sim
    simulator.faults.duplicate_webhooks = 3  # each delivery three times, same meta.id
    runtime.start()
    _subscribe(simulator, runtime)
    _subscribe(simulator, runtime)  # registered twice (n8n's bug): each event comes with two meta ids
    deal_id = _new_deal(simulator, "Twice registered", "Tallinn, Kesklinn district")
    assert simulator.wait_webhooks()
    assert wait_for(lambda: _outbox_states(runtime) == {"done"} and simulator.activities_for_deal(deal_id))
    assert simulator.wait_webhooks()
    assert wait_for(lambda: _inbox_pending(runtime) == 0)
    assert _inbox_count(runtime) == 2  # one row per meta.id, the repeats dropped at the door
    assert len(simulator.activities_for_deal(deal_id)) == 1


def _inbox_pending(rt: Runtime) -> int:
    with rt.store.sessions() as s:
        return int(s.scalar(select(func.count(InboxRow.id)).where(InboxRow.status == "new")) or 0)


def test_wrong_basic_auth_is_401_and_nothing_stored(sim, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = sim
    runtime.start()
    _subscribe(simulator, runtime, password="not-the-password")
    _new_deal(simulator, "Forged", "Tallinn, Kesklinn district")
    assert simulator.wait_webhooks()  # the refused delivery and its three retries
    assert wait_for(lambda: any(d.status == 401 for d in simulator.sender.log))
    url = f"{runtime.intake_url}/hooks/pipedrive/pd"
    body = {
        "meta": {"action": "change", "entity": "deal", "entity_id": "1", "id": "x-1", "version": "2.0"},
        "data": {"id": 1},
        "previous": {"stage_id": 2},
    }
    assert requests.post(url, json=body, timeout=5).status_code == 401
    assert requests.post(url, json=body, auth=(HOOK_USER, "wrong"), timeout=5).status_code == 401
    assert requests.post(url, json=body, auth=("intruder", HOOK_PASSWORD), timeout=5).status_code == 401
    assert all(d.status == 401 for d in simulator.sender.log if d.status is not None)
    assert _inbox_count(runtime) == 0
    # Right credentials, broken body: 400, still nothing stored.
    assert (
        requests.post(
            url,
            data=b"{not json",
            auth=(HOOK_USER, HOOK_PASSWORD),
            headers={"Content-Type": "application/json"},
            timeout=5,
        ).status_code
        == 400
    )
    assert _inbox_count(runtime) == 0


def test_lost_without_reason_asks_owner_for_it(sim, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = sim
    runtime.start()
    _subscribe(simulator, runtime)
    # Stage 2, so the captain rule (stage 1) stays out of it.
    no_reason = _new_deal(simulator, "Lost quietly", None, stage=2, owner=10003)
    with_reason = _new_deal(simulator, "Lost loudly", None, stage=2, owner=10003)
    assert simulator.wait_webhooks()
    assert wait_for(lambda: _inbox_pending(runtime) == 0 and _inbox_count(runtime) == 2)
    simulator.update_deal(no_reason, {"status": "lost"})
    simulator.update_deal(with_reason, {"status": "lost", "lost_reason": "Too expensive"})
    assert wait_for(lambda: len(simulator.activities_for_deal(no_reason)) == 1 and _outbox_states(runtime) == {"done"})
    activity = simulator.activities_for_deal(no_reason)[0]
    assert activity["subject"] == "Укажите причину проигрыша: Lost quietly"
    assert activity["owner_id"] == 10003 and activity["due_date"]
    assert wait_for(lambda: _inbox_pending(runtime) == 0)
    assert simulator.activities_for_deal(with_reason) == []
    # Giving the reason afterwards asks nothing more.
    simulator.update_deal(no_reason, {"lost_reason": "No budget"})
    assert simulator.wait_webhooks()
    assert wait_for(lambda: _inbox_pending(runtime) == 0)
    assert len(simulator.activities_for_deal(no_reason)) == 1


def _storm(simulator: PipedriveSimulator, runtime: Runtime) -> list[int]:
    """Five new deals through a 429 storm: each gets exactly one activity, after refusals."""
    simulator.faults.limit_rate = 0.3  # calls refused with 429 and the rate headers, on top of the burst limit
    simulator.faults._rng.seed(11)
    simulator.block_after_refusals = 6  # a client hammering through the 429s would meet the CDN's 403
    runtime.start()
    _subscribe(simulator, runtime)
    ids = [_new_deal(simulator, f"Storm {i}", "Tallinn, Kesklinn district") for i in range(5)]
    assert wait_for(
        lambda: _outbox_states(runtime) == {"done"} and all(simulator.activities_for_deal(d) for d in ids), timeout=45
    )
    assert simulator.refusals > 0
    assert [len(simulator.activities_for_deal(d)) for d in ids] == [1] * 5
    return ids


def test_429_storm_every_write_once_and_rate_kept(sim, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = sim
    ids = _storm(simulator, runtime)
    assert all(simulator.deals[d]["owner_id"] == 10002 for d in ids)
    # Every request (refused ones too) counted in the rolling 2 s window: never more than told.
    assert simulator.max_window_count <= BURST + 2 * RATE
    assert simulator.max_window_count <= simulator.burst_limit
    adapter = runtime.adapters["pd"]
    assert isinstance(adapter, PipedriveAdapter) and adapter.client.rate_limited > 0


def test_429_storm_with_the_window_alone_every_write_once(sim, db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The config defaults (no rate/burst: the rolling window alone) through a 429 storm."""
    simulator, server = sim
    monkeypatch.setenv("PD_TOKEN", API_TOKEN)
    monkeypatch.setenv("PD_HOOK_PASSWORD", HOOK_PASSWORD)
    text = config_text(db_url, server.base_url).replace(f"    rate: {RATE}\n    burst: {BURST}\n", "")
    assert "rate:" not in text
    rt = Runtime(load_config_text(text))
    try:
        _storm(simulator, rt)
        assert simulator.max_window_count <= simulator.burst_limit
        adapter = rt.adapters["pd"]
        assert isinstance(adapter, PipedriveAdapter) and adapter.client.throttle is None
        assert adapter.client.rate_limited > 0
    finally:
        rt.stop()


def test_throttle_keeps_under_the_burst_window(sim) -> None:  # type: ignore[no-untyped-def]
    """Many concurrent reads through one adapter: Pipedrive's rolling 2 s window is never overrun."""
    simulator, server = sim
    settings = PipedriveSettings(
        base_url=server.base_url,
        api_token=API_TOKEN,
        webhook_user=HOOK_USER,
        webhook_password=HOOK_PASSWORD,
        rate=RATE,
        burst=BURST,
        backoff_initial=0.05,
    )
    adapter = PipedriveAdapter("pd", settings)
    deal_id = str(_new_deal(simulator, "Read often", None))
    calls, threads = 30, 3
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(threads) as pool:
            deals = list(pool.map(lambda _: adapter.get_deal(deal_id), range(calls)))
    finally:
        adapter.close()
    elapsed = time.monotonic() - started
    assert all(d is not None and d.id == deal_id for d in deals)
    assert simulator.refusals == 0  # never refused: we waited instead
    assert simulator.max_window_count <= BURST + 2 * RATE <= simulator.burst_limit
    # Unthrottled, 30 loopback calls take a fraction of a second; the bucket spreads them out.
    assert elapsed >= (calls - BURST) / RATE * 0.9
    assert adapter.client.requests_sent == calls


def test_poller_recovers_dropped_webhooks(sim, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = sim
    simulator.faults.drop_webhook_rate = 1.0
    runtime.start()
    _subscribe(simulator, runtime)
    runtime.pause()  # polls below run before the connector's own writes touch update_time
    ids = [_new_deal(simulator, f"Dropped {i}", "Tallinn, Kesklinn district") for i in range(6)]
    assert simulator.wait_webhooks()
    assert _inbox_count(runtime) == 0
    assert runtime.poll("pd") == 6
    assert runtime.poll("pd") == 0  # the overlap re-reads, the dedup key drops
    runtime.resume()
    assert wait_for(
        lambda: all(len(simulator.activities_for_deal(d)) == 1 for d in ids) and _outbox_states(runtime) == {"done"},
        timeout=30,
    )
    assert all(simulator.deals[d]["owner_id"] == 10002 for d in ids)


def test_lost_answers_after_effect_still_one_activity_per_deal(sim, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    """Writes that land but answer 500: the dispatcher finds its activity by the marker."""
    simulator, _ = sim
    simulator.faults.error_after_effect_rate = 0.5
    simulator.faults._rng.seed(7)
    runtime.start()
    _subscribe(simulator, runtime)
    ids = [_new_deal(simulator, f"Lost answer {i}", "Tallinn, Kesklinn district") for i in range(5)]
    assert wait_for(
        lambda: _outbox_states(runtime) == {"done"} and all(simulator.activities_for_deal(d) for d in ids), timeout=30
    )
    assert [len(simulator.activities_for_deal(d)) for d in ids] == [1] * 5
    assert all(simulator.deals[d]["owner_id"] == 10002 for d in ids)
    reconciled = [
        a for d in ids for a in runtime.store.audit.for_deal("pd", str(d)) if a.detail and a.detail.get("reconciled")
    ]
    assert reconciled  # at least one activity was found again rather than created twice


def test_demo_scenario(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from io import StringIO

    from rich.console import Console

    from connector.demo.pipedrive_scenario import run_pipedrive_scenario

    for name in ("PD_SIM_URL", "PD_SIM_TOKEN", "PD_HOOK_PASSWORD", "PD_DEMO_DB_URL"):
        monkeypatch.setenv(name, "")  # restored afterwards: the scenario sets them for its config
    out = StringIO()
    assert run_pipedrive_scenario(Console(file=out, width=200), timeout=30)
    text = out.getvalue()
    assert "Укажите причину проигрыша" in text and "Проверить техническую возможность" in text
    for name in ("PD_SIM_TOKEN", "PD_HOOK_PASSWORD"):
        assert os.environ[name] not in text  # secrets never printed


def test_stop_cuts_crm_waits_short_and_leaves_work_claimable(sim, db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Stopping while Pipedrive refuses everything: the process stops at once, the row stays new."""
    simulator, server = sim
    monkeypatch.setenv("PD_TOKEN", API_TOKEN)
    monkeypatch.setenv("PD_HOOK_PASSWORD", HOOK_PASSWORD)
    text = config_text(db_url, server.base_url).replace("backoff_initial: 0.05s", "backoff_initial: 30s")
    rt = Runtime(load_config_text(text))
    rt.start()
    _subscribe(simulator, rt)
    simulator.faults.limit_rate = 1.0  # every call refused: the client sits in a 30 s backoff
    _new_deal(simulator, "Refused", "Tallinn, Kesklinn district")
    assert wait_for(lambda: simulator.refusals > 0)
    started = time.monotonic()
    rt.stop()
    assert time.monotonic() - started < 5
    with rt.store.sessions() as s:
        assert s.scalar(select(InboxRow.status)) == "new"  # not lost, not failed: claimable again
