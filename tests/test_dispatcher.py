"""The dispatcher's reconciling rules, with a recording adapter and a moved clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from adapters.contracts import CommandSink, CrmAdapter, WriteResult
from connector.config import load_config_text
from connector.dispatcher import Dispatcher
from connector.storage.models import OutboxRow
from connector.storage.store import Store
from domain import Command, CreateTask
from domain.errors import AmbiguousWriteError, RateLimited
from tests.helpers import Clock

CONFIG = """
storage: {url: "sqlite://"}
dispatcher: {reconcile_after: 30s, backoff: 1s}
crms: {b24: {type: bitrix24, webhook_url: "https://p.bitrix24.ru/rest/1/c/", application_token: "tok-12345678"}}
"""


class Recording(CrmAdapter, CommandSink):
    """Records the dispatcher's calls; ``landed`` is what the CRM holds."""

    type = "fake"

    def __init__(self) -> None:
        super().__init__("b24", {})
        self.calls: list[str] = []
        self.landed: dict[str, str] = {}
        self.fail_next: Exception | None = None

    def execute(self, command: Command, marker: str) -> WriteResult:
        self.calls.append("execute")
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        self.landed[marker] = "task-1"
        return WriteResult("task-1")

    def find_written(self, command: Command, marker: str) -> WriteResult | None:
        self.calls.append("find")
        return WriteResult(self.landed[marker], reconciled=True) if marker in self.landed else None


def _setup(status: str = "pending", attempts: int = 0) -> tuple[Dispatcher, Recording, Store, Clock]:
    cfg = load_config_text(CONFIG)
    store, adapter, clock = Store("sqlite://"), Recording(), Clock()
    task = CreateTask("7", title="t", responsible_id="2")
    with store.sessions() as s, s.begin():
        s.add(
            OutboxRow(
                idempotency_key="k",
                crm="b24",
                deal_id="7",
                rule="r",
                command=task.kind,
                payload=task.to_payload(),
                status=status,
                attempts=attempts,
                next_try_at=clock.now,
                correlation_id="c",
                created_at=clock.now,
                updated_at=clock.now,
            )
        )
    return Dispatcher(cfg, store, {"b24": adapter}, clock=clock), adapter, store, clock


def _row(store: Store) -> Any:
    with store.sessions() as s:
        return s.get(OutboxRow, 1)


def test_a_try_under_way_when_its_process_died_is_looked_for_only_later() -> None:
    dispatcher, adapter, store, clock = _setup(status="sending", attempts=1)
    clock.now += timedelta(seconds=5)  # the lease ran out, the CRM may still be finishing the request
    assert dispatcher.tick() == 0 and adapter.calls == []
    assert _row(store).next_try_at == clock.now - timedelta(seconds=5) + timedelta(seconds=30)
    clock.now += timedelta(seconds=26)
    assert dispatcher.tick() == 1 and adapter.calls == ["find", "execute"]  # not there: written now


def test_a_lost_answer_is_reconciled_after_the_wait_and_not_written_twice() -> None:
    dispatcher, adapter, store, clock = _setup()

    def land_then_fail(command: Command, marker: str) -> WriteResult:
        adapter.landed[marker] = "task-1"  # the write took effect; only its answer was lost
        raise AmbiguousWriteError("timeout", crm="b24")

    adapter.execute = land_then_fail  # type: ignore[method-assign]
    assert dispatcher.tick() == 0
    row = _row(store)
    assert row.status == "sending" and row.next_try_at >= clock.now + timedelta(seconds=30)
    clock.now += timedelta(seconds=31)
    assert dispatcher.tick() == 1
    row = _row(store)
    assert (row.status, row.remote_id) == ("done", "task-1") and len(adapter.landed) == 1


def test_a_refused_write_goes_back_to_pending_and_is_retried_soon() -> None:
    dispatcher, adapter, store, clock = _setup()
    adapter.fail_next = RateLimited("429", crm="b24", retry_after=2.0)
    assert dispatcher.tick() == 0
    row = _row(store)
    assert row.status == "pending" and row.next_try_at == clock.now + timedelta(seconds=2)
    clock.now += timedelta(seconds=2)
    assert dispatcher.tick() == 1 and adapter.calls == ["execute", "find", "execute"]


def test_lanes_overlap_different_deals_and_keep_one_deals_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import threading
    import time

    cfg = load_config_text(CONFIG.replace("backoff: 1s}", "backoff: 1s, concurrency: 3}"))
    store, clock = Store(f"sqlite:///{tmp_path / 'lanes.db'}"), Clock()
    order: list[tuple[str, str]] = []
    in_flight, most = [0], [0]
    lock = threading.Lock()

    class Slow(Recording):
        def execute(self, command: Command, marker: str) -> WriteResult:
            with lock:
                in_flight[0] += 1
                most[0] = max(most[0], in_flight[0])
                order.append((command.deal_id, command.title))  # type: ignore[attr-defined]
            time.sleep(0.05)  # a CRM round trip: the other lanes go on meanwhile
            with lock:
                in_flight[0] -= 1
            return WriteResult(marker)

    with store.sessions() as s, s.begin():
        for n in range(9):
            deal = str(n % 3)
            task = CreateTask(deal, title=f"{deal}-{n // 3}", responsible_id="2")
            s.add(
                OutboxRow(
                    idempotency_key=f"k{n}",
                    crm="b24",
                    deal_id=deal,
                    rule="r",
                    command=task.kind,
                    payload=task.to_payload(),
                    status="pending",
                    attempts=0,
                    next_try_at=clock.now,
                    correlation_id="c",
                    created_at=clock.now,
                    updated_at=clock.now,
                )
            )
    dispatcher = Dispatcher(cfg, store, {"b24": Slow()}, clock=clock)
    try:
        assert dispatcher.tick() == 9
    finally:
        dispatcher.close()
    assert most[0] == 3  # three deals, three lanes at once
    for deal in "012":
        assert [t for d, t in order if d == deal] == [f"{deal}-0", f"{deal}-1", f"{deal}-2"]
