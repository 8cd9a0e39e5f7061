"""Retention: processed inbox rows, written outbox rows and audit lines older than
``storage.retention`` are purged on the leader's schedule; what waits for a person stays."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update

from connector.config import load_config_text
from connector.metrics import PURGED
from connector.runtime import Runtime
from connector.storage.audit import Audit
from connector.storage.models import AuditRow, InboxRow, OutboxRow
from connector.storage.outbox import Outbox
from connector.storage.store import Store
from domain import CreateTask, Event, EventKind
from domain.clock import utcnow
from jobs.retention import purge_expired, retention_of
from tests.helpers import CONFIG, TOKEN

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=utcnow().tzinfo)
OLD = NOW - timedelta(days=91)
RECENT = NOW - timedelta(days=89)


def _inbox(store: Store, key: str, status: str, processed_at: datetime | None) -> None:
    store.inbox.add(Event("b24", EventKind.DEAL_UPDATED, "1", OLD, key), OLD)
    with store.sessions() as s, s.begin():
        s.execute(update(InboxRow).where(InboxRow.dedup_key == key).values(status=status, processed_at=processed_at))


def _outbox(store: Store, key: str, status: str, done_at: datetime | None) -> None:
    with store.sessions() as s, s.begin():
        Outbox.stage(s, key=key, crm="b24", command=CreateTask("1", "t", "2"), rule="r", now=OLD, trigger="t")
    with store.sessions() as s, s.begin():
        s.execute(update(OutboxRow).where(OutboxRow.idempotency_key == key).values(status=status, done_at=done_at))


def _fill(store: Store) -> None:
    _inbox(store, "old-done", "done", OLD)
    _inbox(store, "old-done-2", "done", OLD)
    _inbox(store, "old-done-3", "done", OLD)
    _inbox(store, "recent-done", "done", RECENT)
    _inbox(store, "old-failed", "failed", None)
    _inbox(store, "old-new", "new", None)
    _outbox(store, "old-done", "done", OLD)
    _outbox(store, "recent-done", "done", RECENT)
    _outbox(store, "old-dead", "dead", None)
    _outbox(store, "old-pending", "pending", None)
    with store.sessions() as s, s.begin():
        Audit.record(s, at=RECENT, crm="b24", action="note", message="recent")
        Audit.record(s, at=OLD, crm="b24", action="note", message="old")


def _left(store: Store) -> tuple[set[str], set[str], set[str]]:
    with store.sessions() as s:
        return (
            set(s.scalars(select(InboxRow.dedup_key))),
            set(s.scalars(select(OutboxRow.idempotency_key))),
            set(s.scalars(select(AuditRow.message))),
        )


def test_purge_deletes_what_expired_and_keeps_what_waits(db_url: str) -> None:
    store = Store(db_url)
    try:
        _fill(store)
        before = {t: PURGED.labels(t)._value.get() for t in ("inbox", "outbox", "audit")}
        purged = purge_expired(store, NOW, timedelta(days=90), batch=2)  # several batches
        assert purged["inbox"] == 3 and purged["outbox"] == 1
        assert purged["audit"] >= 1  # "old", and the decisions audited at OLD
        inbox, outbox, audit = _left(store)
        assert inbox == {"recent-done", "old-failed", "old-new"}
        assert outbox == {"recent-done", "old-dead", "old-pending"}
        assert "recent" in audit and "old" not in audit
        after = {t: PURGED.labels(t)._value.get() for t in ("inbox", "outbox", "audit")}
        assert {t: after[t] - before[t] for t in after} == purged
        assert purge_expired(store, NOW, timedelta(days=90)) == {"inbox": 0, "outbox": 0, "audit": 0}
    finally:
        store.close()


def test_retention_is_never_shorter_than_the_replay_window() -> None:
    assert retention_of(90 * 86400.0, 86400.0) == timedelta(days=90)
    assert retention_of(3600.0, 86400.0) == timedelta(days=1)


def test_the_leader_runs_the_purge_on_its_schedule_with_the_configured_retention(db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    text = CONFIG.format(db_url=db_url, b24_url="http://127.0.0.1:9/rest/1/x/").replace(
        f'storage: {{url: "{db_url}"}}', f'storage: {{url: "{db_url}", retention: 30d, purge_every: 10m}}'
    )
    clock = [NOW]
    rt = Runtime(load_config_text(text), clock=lambda: clock[0])
    try:
        _fill(rt.store)
        rt.start(serve=False, roles=["scheduler"])
        job = rt.scheduler.get_job("retention")
        assert job is not None and job.trigger.interval == timedelta(minutes=10)
        clock[0] = NOW - timedelta(days=61)  # 30 days after OLD: nothing is that old yet
        assert rt.purge() == 0
        clock[0] = NOW
        assert rt.purge() > 0
        inbox, outbox, _ = _left(rt.store)
        assert inbox == {"old-failed", "old-new"} and outbox == {"old-dead", "old-pending"}
    finally:
        rt.stop()
