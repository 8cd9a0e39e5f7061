"""A worker that loses a race with another worker on the same deal retries; it does not fail the event."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from adapters.contracts import DealSource
from connector.config import load_config_text
from connector.storage.models import InboxRow
from connector.storage.store import Store
from connector.worker import Worker
from domain import Deal, Event, EventKind, User
from domain.clock import utcnow
from tests.test_dispatcher import CONFIG, Recording


class Deals(Recording, DealSource):
    """A CRM with no deals at all, recording its writes."""

    def get_deals(self, deal_ids: Iterable[str]) -> dict[str, Deal]:
        return {}

    def changed_deals(self, since: datetime | None) -> Iterator[Deal]:
        return iter(())

    def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        return {}

    def open_deal_counts(self, user_ids: list[str]) -> dict[str, int]:
        return {}


def test_a_lost_race_is_retried_not_failed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config_text(CONFIG)
    store = Store("sqlite://")
    now = utcnow()
    store.inbox.add(Event("b24", EventKind.DEAL_UPDATED, "7", now, "k1"), now)
    worker = Worker(cfg, store, {"b24": Deals()}, clock=lambda: now)

    def raced(*args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        raise IntegrityError("INSERT INTO deal_snapshots", {}, Exception("duplicate key pk_deal_snapshots"))

    monkeypatch.setattr(worker, "_process_row_now", raced)
    assert worker.tick() == 0
    with store.sessions() as s:
        row = s.get(InboxRow, 1)
        assert row is not None and row.status == "new" and row.attempts == 1
        assert row.next_try_at == now + timedelta(seconds=2) and "concurrent update" in (row.last_error or "")
