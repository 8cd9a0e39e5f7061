"""The worker's failure semantics: a fault in front of the Bitrix24 simulator never loses an
acknowledged delivery, one deal's trouble never touches another's rows, and the worker
recovers by itself when the fault clears (a parked deal: once an operator replays it)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from adapters.contracts import DealSource
from connector.cli import main
from connector.config import load_config_text
from connector.runtime import Runtime
from connector.status import gather
from connector.storage.models import InboxRow
from connector.storage.store import Store
from connector.worker import Worker
from domain import Deal, Event, EventKind, EventSource, User
from domain.clock import utcnow
from jobs.poll import poll_deals
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import CONFIG, TOKEN, Clock
from tests.httpfaults import HttpFaultProxy
from tests.test_dispatcher import CONFIG as PLAIN_CONFIG
from tests.test_dispatcher import Recording

READS = ("crm.deal.get", "batch", "user.get")


@pytest.fixture
def crm() -> Iterator[tuple[Bitrix24Simulator, HttpFaultProxy]]:
    simulator = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50)
    for name in ("Иван", "Олег", "Анна", "Рустам"):
        simulator.add_user(name)
    server = simulator.serve()
    proxy = HttpFaultProxy(server.base_url).start()
    yield simulator, proxy
    proxy.stop()
    server.stop()
    simulator.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def config_text(crm, db_url, monkeypatch) -> str:  # type: ignore[no-untyped-def]
    simulator, proxy = crm
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    return CONFIG.format(db_url=db_url, b24_url=proxy.base_url + simulator.webhook_base)


@pytest.fixture
def runtime(config_text: str, clock: Clock) -> Iterator[Runtime]:
    rt = Runtime(load_config_text(config_text), clock=clock)
    yield rt  # never started: the test ticks the worker and dispatcher itself
    rt.stop()


def _acknowledge(rt: Runtime, simulator: Bitrix24Simulator, count: int, clock: Clock) -> list[str]:
    """``count`` new deals, each with its webhook delivery stored (acknowledged)."""
    ids = []
    for n in range(count):
        deal_id = simulator.add_deal(
            {"TITLE": f"Заявка {n}", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW", "ASSIGNED_BY_ID": "1"}
        )
        event = Event("b24", EventKind.DEAL_CREATED, deal_id, clock(), f"hook:{deal_id}", source=EventSource.WEBHOOK)
        assert rt.store.inbox.add(event, clock())
        ids.append(deal_id)
    return ids


def _rows(rt: Runtime) -> dict[str, InboxRow]:
    with rt.store.sessions() as s:
        return {r.deal_id or "": r for r in s.scalars(select(InboxRow))}


def _drain(rt: Runtime, clock: Clock, rounds: int = 5) -> None:
    for _ in range(rounds):
        clock.advance(700)  # past any backoff
        rt.worker.tick()
        rt.dispatcher.tick()


@pytest.mark.slow
def test_truncated_reads_are_retried_never_failed_and_recover(crm, runtime: Runtime, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    simulator, proxy = crm
    deals = _acknowledge(runtime, simulator, 4, clock)
    proxy.truncate(*READS)
    for _ in range(3):
        runtime.worker.tick()
        clock.advance(700)
    rows = _rows(runtime)
    assert proxy.mangled > 0
    assert {r.status for r in rows.values()} == {"new"}
    assert all(r.attempts == 3 and "could not be decoded" in (r.last_error or "") for r in rows.values())
    proxy.heal()
    _drain(runtime, clock)
    assert {r.status for r in _rows(runtime).values()} == {"done"}
    assert all(len(simulator.tasks_for_deal(d)) == 1 for d in deals)


@pytest.mark.slow
def test_refused_credentials_pause_the_crm_until_a_probe_succeeds(crm, runtime: Runtime, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    simulator, proxy = crm
    deals = _acknowledge(runtime, simulator, 3, clock)
    proxy.unauthorized(*READS)
    assert runtime.worker.tick() == 0
    rows = _rows(runtime)
    assert {r.status for r in rows.values()} == {"new"} and {r.attempts for r in rows.values()} == {0}
    state = gather(runtime.store, runtime.config, clock())
    assert state.crms[0].paused and "refused our credentials" in state.crms[0].paused
    assert any("b24: processing" in line for line in state.attention)
    runtime.store.cursors.beat("me", utcnow())
    ready = runtime.app.test_client().get("/readyz").get_json()
    assert "refused our credentials" in ready["paused"]["b24"]

    refused = proxy.mangled
    clock.advance(1)
    runtime.worker.tick()  # before the next probe: the CRM is not asked
    assert proxy.mangled == refused
    clock.advance(10)
    runtime.worker.tick()  # the probe, still refused: backs off further
    assert proxy.mangled > refused
    assert {r.status for r in _rows(runtime).values()} == {"new"}

    proxy.heal()
    _drain(runtime, clock)
    assert {r.status for r in _rows(runtime).values()} == {"done"}
    assert all(len(simulator.tasks_for_deal(d)) == 1 for d in deals)
    assert gather(runtime.store, runtime.config, clock()).crms[0].paused is None


@pytest.mark.slow
def test_a_denied_deal_is_parked_alone_and_replayed(  # type: ignore[no-untyped-def]
    crm, runtime: Runtime, clock: Clock, config_text: str, tmp_path: Path
) -> None:
    simulator, _ = crm
    deals = _acknowledge(runtime, simulator, 5, clock)
    denied = deals[2]
    simulator.denied_deals.add(denied)
    _drain(runtime, clock, rounds=3)
    rows = _rows(runtime)
    assert rows[denied].status == "parked" and "Access denied" in (rows[denied].last_error or "")
    assert all(rows[d].status == "done" and len(simulator.tasks_for_deal(d)) == 1 for d in deals if d != denied)
    state = gather(runtime.store, runtime.config, clock())
    assert state.crms[0].inbox_parked == 1 and state.parked[0]["deal"] == denied
    assert any(a.action == "parked" for a in runtime.store.audit.for_deal("b24", denied))

    config = tmp_path / "connector.yaml"
    config.write_text(config_text)
    runner = CliRunner()
    simulator.denied_deals.clear()  # the CRM's administrator grants access
    answer = runner.invoke(main, ["replay", "--config", str(config), "--inbox", "--deal", denied])
    assert answer.exit_code == 0 and "1 inbox row(s) queued again" in answer.output
    again = runner.invoke(main, ["replay", "--config", str(config), "--inbox", "--all"])
    assert again.exit_code == 1 and "0 inbox row(s)" in again.output
    _drain(runtime, clock, rounds=2)
    assert _rows(runtime)[denied].status == "done" and len(simulator.tasks_for_deal(denied)) == 1


class OneDeal(Recording, DealSource):
    def get_deals(self, deal_ids: Iterable[str]) -> dict[str, Deal]:
        return {i: Deal(crm="b24", id=i, title="T", stage="C1:NEW", pipeline="1") for i in deal_ids}

    def changed_deals(self, since: datetime | None) -> Iterator[Deal]:
        yield Deal(crm="b24", id="7", title="T", stage="C1:NEW", pipeline="1", updated_at=since)

    def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        return {}

    def open_deal_counts(self, user_ids: list[str]) -> dict[str, int]:
        return {}


def test_an_unexpected_error_is_retried_not_final(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store = Store("sqlite://")
    now = utcnow()
    store.inbox.add(Event("b24", EventKind.DEAL_UPDATED, "7", now, "k1"), now)
    worker = Worker(load_config_text(PLAIN_CONFIG), store, {"b24": OneDeal()}, clock=lambda: now)

    def dropped(*args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        raise OperationalError("UPDATE inbox", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(worker, "_process_row_now", dropped)
    for _ in range(15):
        worker.tick()
        now += timedelta(minutes=11)
    with store.sessions() as s:
        row = s.scalars(select(InboxRow)).one()
        assert row.status == "new" and row.attempts == 15 and "server closed" in (row.last_error or "")


def test_forced_backfill_queues_changes_stored_before() -> None:
    store = Store("sqlite://")
    now = utcnow()
    adapter = OneDeal()
    assert poll_deals(store, adapter, now=now, overlap=timedelta(0), since=now) == 1
    with store.sessions() as s, s.begin():
        s.scalars(select(InboxRow)).one().status = "failed"
    assert poll_deals(store, adapter, now=now, overlap=timedelta(0), since=now) == 0
    assert poll_deals(store, adapter, now=now, overlap=timedelta(0), since=now, force=True) == 1
    with store.sessions() as s:
        row = s.scalars(select(InboxRow)).one()
        assert row.status == "new" and row.attempts == 0
