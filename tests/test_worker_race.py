"""A worker that loses a race with another worker on the same deal retries; it does not fail the event."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.exc import IntegrityError

from connector.config import load_config_text
from connector.storage.models import InboxRow
from connector.storage.store import Store
from connector.worker import Worker
from domain import Event, EventKind
from domain.clock import utcnow
from tests.test_dispatcher import CONFIG, Recording


def test_a_lost_race_is_retried_not_failed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config_text(CONFIG)
    store = Store("sqlite://")
    now = utcnow()
    store.add_event(Event("b24", EventKind.DEAL_UPDATED, "7", now, "k1"), now)
    worker = Worker(cfg, store, {"b24": Recording()}, clock=lambda: now)

    def raced(*args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        raise IntegrityError("INSERT INTO deal_snapshots", {}, Exception("duplicate key pk_deal_snapshots"))

    monkeypatch.setattr(worker, "_process_row_now", raced)
    assert worker.tick() == 0
    with store.sessions() as s:
        row = s.get(InboxRow, 1)
        assert row is not None and row.status == "new" and row.attempts == 1
        assert row.next_try_at == now + timedelta(seconds=2) and "concurrent update" in (row.last_error or "")
