"""Batched writes: a CRM with a batch API gets rows of different deals in one call, each row
still written once, against the Bitrix24 simulator at the portal's real limit (2 hits/s,
threshold 50)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.bitrix24.settings import Bitrix24Settings
from connector.config import load_config_text
from connector.dispatcher import Dispatcher
from connector.storage.models import AuditRow, OutboxRow
from connector.storage.outbox import Outbox
from connector.storage.store import Store
from domain import AddComment, CreateTask, OutboxStatus
from simulators import FaultKnobs, SimulatorServer
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import Clock

CONFIG = """
storage: {{url: "sqlite://"}}
dispatcher: {{batch: 500, reconcile_after: 30s, backoff: 1s, concurrency: 4}}
crms: {{b24: {{type: bitrix24, webhook_url: "{url}", application_token: "tok-12345678"}}}}
"""


@pytest.fixture
def portal() -> Iterator[tuple[Bitrix24Simulator, SimulatorServer]]:
    sim = Bitrix24Simulator(rate=2, burst=50, faults=FaultKnobs(seed=14))
    server = sim.serve()
    yield sim, server
    server.stop()
    sim.close()


def _dispatcher(
    db_url: str, sim: Bitrix24Simulator, server: SimulatorServer, writes: list[CreateTask | AddComment]
) -> tuple[Dispatcher, Store, Clock, Bitrix24Adapter]:
    url = server.base_url + sim.webhook_base
    cfg = load_config_text(CONFIG.format(url=url))
    store, clock = Store(db_url), Clock()
    with store.sessions() as session, session.begin():
        for i, command in enumerate(writes):
            Outbox.stage(
                session, key=f"k{i}", crm="b24", command=command, rule="r", now=clock.now, trigger="deal.updated"
            )
    adapter = Bitrix24Adapter(
        "b24", Bitrix24Settings(webhook_url=url, application_token="tok-12345678", backoff_initial=0.01)
    )
    return Dispatcher(cfg, store, {"b24": adapter}, clock=clock), store, clock, adapter


def _drain(dispatcher: Dispatcher, store: Store, clock: Clock, adapter: Bitrix24Adapter, rounds: int = 40) -> None:
    try:
        for _ in range(rounds):
            dispatcher.tick()
            with store.sessions() as session:
                left = session.scalar(select(func.count()).where(OutboxRow.status != OutboxStatus.DONE))
            if not left:
                return
            clock.now += timedelta(seconds=120)  # past every backoff and the reconcile delay
        raise AssertionError(f"{left} rows not done")
    finally:
        dispatcher.close()
        adapter.close()


def _tasks_per_deal(sim: Bitrix24Simulator) -> Counter[str]:
    return Counter(mark for task in sim.tasks.values() for mark in task["UF_CRM_TASK"])


def _tasks(deals: int) -> list[CreateTask | AddComment]:
    return [CreateTask(str(d), title=f"Call back {d}", responsible_id="1") for d in range(1, deals + 1)]


def test_500_task_writes_for_500_deals_take_ten_hits_and_no_refusal(
    db_url: str, portal: tuple[Bitrix24Simulator, SimulatorServer]
) -> None:
    sim, server = portal
    dispatcher, store, clock, adapter = _dispatcher(db_url, sim, server, _tasks(500))
    _drain(dispatcher, store, clock, adapter)
    assert sim.http_requests <= 12 and sim.calls["batch"] == 10
    assert sim.refusals == 0
    per_deal = _tasks_per_deal(sim)
    assert len(per_deal) == 500 and set(per_deal.values()) == {1}
    store.close()


@pytest.mark.slow
def test_with_faults_and_lost_answers_of_applied_batches_each_deal_still_gets_one_task(
    db_url: str, portal: tuple[Bitrix24Simulator, SimulatorServer]
) -> None:
    sim, server = portal
    # 20 % of requests fail: half before any effect (refused or a 500), half after the whole
    # batch was applied, its answer lost. The seed puts four lost answers among the first ten.
    sim.faults = FaultKnobs(error_rate=0.1, error_after_effect_rate=0.1, seed=42)
    dispatcher, store, clock, adapter = _dispatcher(db_url, sim, server, _tasks(500))
    _drain(dispatcher, store, clock, adapter)
    assert sim.faults.injected["answer_lost_after_write"] > 0 and sim.faults.injected["server_error"] > 0
    per_deal = _tasks_per_deal(sim)
    assert len(per_deal) == 500 and set(per_deal.values()) == {1}
    with store.sessions() as session:
        reconciled = session.scalar(select(func.count()).where(AuditRow.message.startswith("found earlier write")))
    assert reconciled and reconciled >= 50  # a lost answer's whole batch was found by marker
    # Look-ups went in batches too: far fewer requests than rows looked up.
    assert sim.calls["tasks.task.list"] >= 50 and sim.http_requests < 60
    store.close()


def test_one_deals_writes_keep_their_order_across_batches(
    tmp_path: Path, portal: tuple[Bitrix24Simulator, SimulatorServer]
) -> None:
    sim, server = portal
    deal_ids = [sim.add_deal({"TITLE": f"D{i}"}) for i in range(60)]
    writes: list[CreateTask | AddComment] = []
    for step in range(2):
        for deal in deal_ids:
            writes.append(AddComment(deal, text=f"step {step}"))
    dispatcher, store, clock, adapter = _dispatcher(f"sqlite:///{tmp_path / 'c.db'}", sim, server, writes)
    _drain(dispatcher, store, clock, adapter)
    for deal in deal_ids:
        texts = [c["COMMENT"].split("\n")[0] for c in sim.comments.values() if c["ENTITY_ID"] == deal]
        assert texts == ["step 0", "step 1"]
    assert sim.calls["batch"] == 4  # two waves of 60 rows: 50 + 10 each
    store.close()


def test_a_truncated_200_after_a_batch_of_writes_is_reconciled_never_a_dead_letter(
    tmp_path: Path, portal: tuple[Bitrix24Simulator, SimulatorServer]
) -> None:
    sim, server = portal
    real_success = sim.success
    cut: list[int] = []

    def truncated(call, result):  # type: ignore[no-untyped-def]
        answer = real_success(call, result)
        if call.method == "batch" and call.wrote and not cut:
            cut.append(1)
            answer.set_data(answer.get_data()[:40])  # the whole batch applied, its 200 cut short
        return answer

    sim.success = truncated  # type: ignore[method-assign]
    dispatcher, store, clock, adapter = _dispatcher(f"sqlite:///{tmp_path / 'c.db'}", sim, server, _tasks(60))
    _drain(dispatcher, store, clock, adapter)
    assert cut
    per_deal = _tasks_per_deal(sim)
    assert len(per_deal) == 60 and set(per_deal.values()) == {1}
    with store.sessions() as session:
        dead = session.scalar(select(func.count()).where(OutboxRow.status == OutboxStatus.DEAD))
        found = session.scalar(select(func.count()).where(AuditRow.message.startswith("found earlier write")))
    assert dead == 0 and found in (10, 50)  # the cut batch's rows (50 or the 10) were found by marker
    store.close()


def test_a_waves_calls_go_out_together_after_the_whole_wave_is_committed_sending(
    tmp_path: Path, portal: tuple[Bitrix24Simulator, SimulatorServer]
) -> None:
    sim, server = portal
    dispatcher, store, clock, adapter = _dispatcher(f"sqlite:///{tmp_path / 'c.db'}", sim, server, _tasks(200))
    together = threading.Barrier(4)  # the wave's four calls of 50: all out before any is answered
    statuses: list[set[str]] = []
    real = adapter.execute_many

    def execute_many(writes):  # type: ignore[no-untyped-def]
        with store.sessions() as session:
            statuses.append(set(session.scalars(select(OutboxRow.status))))
        together.wait(10)
        return real(writes)

    adapter.execute_many = execute_many  # type: ignore[method-assign]
    _drain(dispatcher, store, clock, adapter)
    assert statuses == [{OutboxStatus.SENDING}] * 4  # every row "sending" before the first call
    assert sim.calls["batch"] == 4 and sim.refusals == 0
    per_deal = _tasks_per_deal(sim)
    assert len(per_deal) == 200 and set(per_deal.values()) == {1}
    store.close()
