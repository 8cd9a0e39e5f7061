"""PostgreSQL behind a fault proxy that resets and blackholes connections: the worker, the
dispatcher and the leader recover by themselves, no session is left idle in a transaction
holding locks, and a database that stops answering does not hang anything for ever."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from adapters.registry import build_adapter
from connector.config import Config, load_config_text
from connector.dispatcher import Dispatcher
from connector.leader import Leadership
from connector.runtime import build_calendar
from connector.storage.engine import DatabaseSettings, make_engine
from connector.storage.inbox import Inbox
from connector.storage.models import InboxRow, OutboxRow
from connector.storage.store import Store
from connector.worker import Worker
from domain import Event, EventKind
from domain.clock import utcnow
from simulators.bitrix24 import Bitrix24Simulator
from simulators.server import SimulatorServer
from tests.faultproxy import FaultProxy
from tests.helpers import CONFIG, TOKEN, wait_for

PG_URL = os.environ.get("CONNECTOR_TEST_PG_URL")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not PG_URL, reason="CONNECTOR_TEST_PG_URL is not set: no PostgreSQL server to test against"),
]
# Short limits, so that a test sees them act within seconds.
LIMITS = (
    "statement_timeout: 1s, lock_timeout: 1s, connect_timeout: 2s, idle_in_transaction_timeout: 2s, "
    "idle_session_timeout: 3s, intake_statement_timeout: 1s"
)


@pytest.fixture
def pg() -> Iterator[str]:
    """The PostgreSQL test database, emptied."""
    assert PG_URL is not None
    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()
    yield PG_URL


@pytest.fixture
def proxy(pg: str) -> Iterator[FaultProxy]:
    with FaultProxy.for_url(pg) as p:
        yield p


@pytest.fixture
def sim() -> Iterator[tuple[Bitrix24Simulator, SimulatorServer]]:
    simulator = Bitrix24Simulator(application_token=TOKEN, rate=200, burst=200)
    for name in ("Иван", "Олег", "Анна"):
        simulator.add_user(name)
    server = simulator.serve()
    yield simulator, server
    server.stop()
    simulator.close()


def _config(db_url: str, b24_url: str, monkeypatch: pytest.MonkeyPatch, extra: str = "") -> Config:
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    text_ = CONFIG.format(db_url=db_url, b24_url=b24_url).replace(
        f'storage: {{url: "{db_url}"}}', f'storage: {{url: "{db_url}", {LIMITS}}}'
    )
    return load_config_text(text_ + extra)


def _deal(simulator: Bitrix24Simulator, n: int = 0) -> str:
    return simulator.add_deal(
        {
            "TITLE": f"Заявка {n}",
            "CATEGORY_ID": "1",
            "STAGE_ID": "C1:NEW",
            "UF_CRM_ADDRESS": "Казань, Советский район, ул. Мира, 1",
        }
    )


def _idle_in_transaction(pg: str) -> list[tuple[Any, ...]]:
    """Sessions of the test database idle inside a transaction (read past the proxy)."""
    engine = create_engine(pg)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
                        "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                    )
                )
            )
    finally:
        engine.dispose()


def _status(store: Store, model: Any, row_id: int) -> str | None:
    with contextlib.suppress(Exception), store.sessions() as s:
        row = s.get(model, row_id)
        return row.status if row is not None else None
    return None


def _tick_quietly(tick: Any) -> bool:
    """A tick during or right after a fault may fail; the next one must recover. False, so
    that ``_tick_quietly(tick) or done()`` ticks, then asks."""
    with contextlib.suppress(Exception):
        tick()
    return False


def test_a_client_silent_after_a_batched_write_is_cut_off_by_the_idle_timeout(pg) -> None:  # type: ignore[no-untyped-def]
    """A batch (``executemany``) inside a transaction, then silence, as from a client that
    vanished there: the server must end the session after ``idle_in_transaction_timeout``.
    psycopg's pipelined batch ends with Sync then Flush, and a Flush disarms the server's
    timer until the next message, which a vanished client never sends."""
    engine = make_engine(pg, DatabaseSettings(idle_in_transaction_timeout=0.5))
    conn = engine.connect()
    try:
        conn.exec_driver_sql("CREATE TEMPORARY TABLE batch (n integer)")
        conn.commit()
        conn.execute(text("INSERT INTO batch (n) VALUES (:n)"), [{"n": 1}, {"n": 2}])
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        conn.execute(text("INSERT INTO batch (n) VALUES (:n)"), [{"n": 3}, {"n": 4}])  # the last word
        assert wait_for(lambda: pid not in [row[0] for row in _idle_in_transaction(pg)], timeout=5), pid
    finally:
        conn.invalidate()
        conn.close()
        engine.dispose()


def _message_types(chunk: bytes) -> bytes:
    """The types of the protocol messages a chunk from a client holds, in order (a chunk
    that ends inside a message ends with ``?``)."""
    types, at = b"", 0
    while at + 5 <= len(chunk):
        types += chunk[at : at + 1]
        at += 1 + int.from_bytes(chunk[at + 1 : at + 5], "big")
    return types if at == len(chunk) else types + b"?"


def test_every_write_of_a_batch_ends_with_a_sync(pg) -> None:  # type: ignore[no-untyped-def]
    """The server arms its idle-in-transaction timer only on a Sync (or a simple query): a
    client that vanishes after a write ending otherwise (mid-batch, or after a Flush) would
    leave its transaction open for good. So every write of a batch ends with Sync."""
    with FaultProxy.for_url(pg) as proxy:
        engine = make_engine(proxy.url(pg))
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("CREATE TEMPORARY TABLE batch (n integer)")
                proxy.record()
                conn.execute(text("INSERT INTO batch (n) VALUES (:n)"), [{"n": n} for n in range(5)])
                conn.rollback()
        finally:
            engine.dispose()
        assert proxy.recorded
        types = [_message_types(chunk) for chunk in proxy.recorded]
        assert b"E" in b"".join(types), types  # the batch went through the extended protocol
        assert [t for t in types if not t.endswith((b"S", b"Q"))] == [], types


@pytest.mark.slow
def test_worker_claims_again_when_a_reset_left_a_transaction_holding_its_row(pg, proxy, sim, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    simulator, server = sim
    cfg = _config(proxy.url(pg), server.base_url + simulator.webhook_base, monkeypatch)
    store = Store.for_config(cfg.storage)
    cut_off = Store.for_config(cfg.storage, apply_migrations=False)  # another worker, about to be cut off
    adapters = {name: build_adapter(name, s) for name, s in cfg.crms.items()}
    try:
        deal = _deal(simulator)
        now = utcnow()
        store.inbox.add(Event("b24", EventKind.DEAL_CREATED, deal, now, f"created:{deal}"), now)
        with store.sessions() as s:
            row_id = s.query(InboxRow.id).scalar()
        # That worker is inside its transaction, the row locked, when its connection resets.
        session = cut_off.sessions()
        session.begin()
        assert Inbox.lock_new(session, row_id) is not None
        assert proxy.reset() >= 1
        with contextlib.suppress(Exception):
            session.close()

        worker = Worker(cfg, store, adapters, owner="worker-after-reset", calendar=build_calendar(cfg))
        assert wait_for(lambda: _tick_quietly(worker.tick) or _status(store, InboxRow, row_id) == "done", timeout=20)
        assert wait_for(lambda: not _idle_in_transaction(pg), timeout=10), _idle_in_transaction(pg)
    finally:
        for adapter in adapters.values():
            adapter.close()
        cut_off.close()
        store.close()


@pytest.mark.slow
def test_dispatcher_finishes_a_write_whose_lock_a_reset_left_behind(pg, proxy, sim, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    simulator, server = sim
    cfg = _config(proxy.url(pg), server.base_url + simulator.webhook_base, monkeypatch)
    store = Store.for_config(cfg.storage)
    adapters = {name: build_adapter(name, s) for name, s in cfg.crms.items()}
    resets: list[int] = []
    heal = threading.Timer(1.5, proxy.heal)

    def reset_before_the_commit(row: OutboxRow, result: Any) -> None:
        if not resets:  # the write is made; the commit that records it cannot be, for a while
            resets.append(proxy.reset())
            proxy.refuse()
            heal.start()

    dispatcher = Dispatcher(cfg, store, adapters, owner="dispatcher-a", after_call=reset_before_the_commit)
    try:
        deal = _deal(simulator)
        now = utcnow()
        store.inbox.add(Event("b24", EventKind.DEAL_CREATED, deal, now, f"created:{deal}"), now)
        worker = Worker(cfg, store, adapters, calendar=build_calendar(cfg))
        assert wait_for(lambda: worker.tick() > 0 or _status(store, InboxRow, 1) == "done", timeout=10)
        with store.sessions() as s:
            outbox_ids = list(s.scalars(select(OutboxRow.id)))
        with contextlib.suppress(Exception):
            dispatcher.tick()
        assert resets

        def all_done() -> bool:
            _tick_quietly(dispatcher.tick)
            return all(_status(store, OutboxRow, i) == "done" for i in outbox_ids)

        assert wait_for(all_done, timeout=30)
        assert len(simulator.tasks_for_deal(deal)) == 1  # found, not written again
        assert wait_for(lambda: not _idle_in_transaction(pg), timeout=10), _idle_in_transaction(pg)
    finally:
        heal.cancel()
        if heal.is_alive():
            heal.join()
        dispatcher.close()
        for adapter in adapters.values():
            adapter.close()
        store.close()


@pytest.mark.slow
def test_leadership_comes_back_after_a_reset_and_never_idles_in_a_transaction(pg, proxy) -> None:  # type: ignore[no-untyped-def]
    store = Store(proxy.url(pg))
    leader = Leadership(store, "a", check_every=1.0)
    try:
        assert leader.held(utcnow())
        assert leader.held(utcnow())  # confirmed on its connection
        assert not _idle_in_transaction(pg)
        proxy.reset()  # the lock's session lives on in the server, silent
        assert wait_for(lambda: leader.held(utcnow()), timeout=20, step=0.5)
        assert not _idle_in_transaction(pg)
    finally:
        leader.release()
        store.close()


@pytest.mark.slow
def test_a_blackholed_database_hangs_neither_worker_nor_leader(pg, proxy, sim, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    simulator, server = sim
    cfg = _config(proxy.url(pg), server.base_url + simulator.webhook_base, monkeypatch)
    store = Store.for_config(cfg.storage)
    adapters = {name: build_adapter(name, s) for name, s in cfg.crms.items()}
    worker = Worker(cfg, store, adapters, calendar=build_calendar(cfg))
    leader = Leadership(store, "a", check_every=1.0)
    outcomes: dict[str, Any] = {}

    def timed(name: str, call: Any) -> threading.Thread:
        def run() -> None:
            began = time.monotonic()
            try:
                outcomes[name] = call()
            except Exception as exc:  # noqa: BLE001 - failing is fine; hanging is not
                outcomes[name] = exc
            outcomes[f"{name}_seconds"] = time.monotonic() - began

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    try:
        deal = _deal(simulator)
        now = utcnow()
        store.inbox.add(Event("b24", EventKind.DEAL_CREATED, deal, now, f"created:{deal}"), now)
        assert leader.held(utcnow())
        proxy.blackhole()
        threads = [timed("worker", worker.tick), timed("leader", lambda: leader.held(utcnow()))]
        for thread in threads:
            thread.join(timeout=20)
        hung = [t for t in threads if t.is_alive()]
        proxy.heal()
        for thread in hung:
            thread.join(timeout=30)
        assert not hung, f"still waiting on the database after 20 s: {outcomes}"
        assert outcomes["leader"] is False
        proxy.heal()
        assert wait_for(lambda: _tick_quietly(worker.tick) or _status(store, InboxRow, 1) == "done", timeout=20)
        assert wait_for(lambda: leader.held(utcnow()), timeout=20, step=0.5)
    finally:
        proxy.heal()
        leader.release()
        for adapter in adapters.values():
            adapter.close()
        store.close()


@pytest.mark.slow
def test_runtime_under_repeated_resets_gives_every_deal_one_task(pg, proxy, sim, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import connector.runtime as runtime_module
    from connector.runtime import Runtime

    simulator, server = sim
    monkeypatch.setattr(runtime_module, "LEADER_CHECK", 1.0)
    cfg = _config(proxy.url(pg), server.base_url + simulator.webhook_base, monkeypatch)
    cfg.crms["b24"] = dataclasses.replace(cfg.crms["b24"], poll_every=1.0)
    rt = Runtime(cfg)
    stop = threading.Event()

    def resetting() -> None:
        while not stop.wait(0.7):
            proxy.reset()

    resetter = threading.Thread(target=resetting, daemon=True)
    try:
        rt.start()
        simulator.handler_url = f"{rt.intake_url}/hooks/bitrix24/b24"
        resetter.start()
        deals = []
        for n in range(40):
            deals.append(_deal(simulator, n))
            time.sleep(0.1)
        stop.set()
        resetter.join()
        simulator.webhooks.wait_idle()
        assert wait_for(lambda: all(simulator.tasks_for_deal(d) for d in deals), timeout=120, step=0.5), [
            d for d in deals if not simulator.tasks_for_deal(d)
        ]
        time.sleep(2.0)  # a late duplicate would show now
        assert [d for d in deals if len(simulator.tasks_for_deal(d)) != 1] == []
        assert wait_for(lambda: not _idle_in_transaction(pg), timeout=10), _idle_in_transaction(pg)
    finally:
        stop.set()
        rt.stop()
