"""The storage's limits: read-only sessions never wait for SQLite's write lock, the busy timeout
is the configured one, the settings come from the config's storage section, and a row
another session holds locked is skipped, not waited for."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from connector.config import load_config_text
from connector.leader import leader_seen
from connector.status import gather
from connector.storage.engine import DatabaseSettings
from connector.storage.inbox import Inbox
from connector.storage.models import InboxRow
from connector.storage.store import Store
from domain import Event, EventKind
from domain.clock import utcnow
from tests.helpers import CONFIG, TOKEN


def test_settings_come_from_the_storage_section(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    text_ = CONFIG.format(db_url="sqlite://", b24_url="http://127.0.0.1:9/rest/1/x/").replace(
        'storage: {url: "sqlite://"}', 'storage: {url: "sqlite://", statement_timeout: 7s, busy_timeout: 250ms}'
    )
    settings = DatabaseSettings.from_storage(load_config_text(text_).storage)
    assert settings.statement_timeout == 7.0 and settings.busy_timeout == 0.25
    assert settings.lock_timeout == DatabaseSettings().lock_timeout  # the default


def test_readers_never_wait_for_the_sqlite_write_lock(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url, settings=DatabaseSettings(busy_timeout=0.5))
    writer = Store(url, apply_migrations=False, settings=DatabaseSettings(busy_timeout=0.5))
    config = load_config_text(CONFIG.format(db_url=url, b24_url="http://127.0.0.1:9/rest/1/x/"))
    now = utcnow()
    try:
        with writer.sessions() as holding, holding.begin():  # BEGIN IMMEDIATE: the write lock, held
            Inbox.stage(holding, Event("b24", EventKind.DEAL_UPDATED, "1", now, "k"), now)
            holding.flush()
            began = time.monotonic()
            with store.reading() as s:
                assert s.scalar(select(InboxRow.id)) is None  # the committed snapshot
            gather(store, config, now)  # what `connector status`, the status page read
            leader_seen(store, now, now - now)
            store.audit.for_deal(None, "1")
            assert time.monotonic() - began < 0.5
            with pytest.raises(OperationalError, match="locked"), store.sessions() as s, s.begin():
                s.execute(text("SELECT 1"))  # a writer waits busy_timeout, then gives up
            assert time.monotonic() - began >= 0.5
    finally:
        writer.close()
        store.close()


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("CONNECTOR_TEST_PG_URL"), reason="no PostgreSQL server to test against")
def test_a_row_locked_by_another_worker_is_skipped_not_waited_for(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: nothing to skip")
    store = Store(db_url, settings=DatabaseSettings(lock_timeout=30))
    now = utcnow()
    try:
        store.inbox.add(Event("b24", EventKind.DEAL_UPDATED, "1", now, "k"), now)
        with store.sessions() as first, first.begin():
            assert Inbox.lock_new(first, 1) is not None
            began = time.monotonic()
            with store.sessions() as second, second.begin():
                assert Inbox.lock_new(second, 1) is None
            assert time.monotonic() - began < 5
    finally:
        store.close()
