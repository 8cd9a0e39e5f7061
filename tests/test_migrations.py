"""The Alembic migrations build exactly the schema the models describe, and carry stored keys
and cursors over to the formats the code reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, insert, select

from connector.storage.engine import alembic_config, make_engine
from connector.storage.models import Base, CursorRow, InboxRow
from connector.storage.store import Store
from domain.bookmarks import Bookmark
from domain.keys import document_key


def test_migrations_match_models(db_url: str) -> None:
    store = Store(db_url)
    try:
        with store.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        store.close()
    assert diffs == []


def _upgrade(engine: Engine, revision: str) -> None:
    with engine.connect() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def test_document_events_filed_before_the_upgrade_keep_their_identity(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        _upgrade(engine, "0002")
        now = datetime(2026, 12, 1, tzinfo=UTC)
        row = {
            "crm": "b24",
            "kind": "invoice.issued",
            "deal_id": "7",
            "occurred_at": now,
            "received_at": now,
            "payload": {},
            "status": "done",
            "attempts": 0,
            "next_try_at": now,
            "correlation_id": "c",
        }
        with engine.begin() as conn:
            conn.execute(
                insert(InboxRow),
                [
                    {**row, "source": "document", "dedup_key": "acc:acc:invoice:ref-1:v1"},
                    {**row, "source": "webhook", "dedup_key": "b24:abc"},
                ],
            )
        _upgrade(engine, "head")
        with engine.connect() as conn:
            keys = set(conn.scalars(select(InboxRow.__table__.c.dedup_key)))
        assert keys == {document_key("acc", "invoice", "ref-1", "v1"), "b24:abc"}
    finally:
        engine.dispose()


def test_cursors_of_both_old_formats_become_bookmarks(db_url: str) -> None:
    engine = make_engine(db_url)
    at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    try:
        _upgrade(engine, "0003")
        with engine.begin() as conn:
            conn.execute(
                insert(CursorRow),
                [
                    {"crm": "b24", "stream": "deals", "value": "2026-12-01T09:00:00+00:00", "updated_at": at},
                    {
                        "crm": "acc",
                        "stream": "documents:invoice",
                        "value": json.dumps({"date": "2026-12-01T12:00:00", "complete": False}),
                        "updated_at": at,
                    },
                    {"crm": "acc", "stream": "doc:invoice:ref-1", "value": '{"v": "1", "fp": "x"}', "updated_at": at},
                    {"crm": "_connector", "stream": "leader", "value": "host:1", "updated_at": at},
                ],
            )
        _upgrade(engine, "head")
        store = Store(db_url)
        try:
            assert store.cursors.bookmark("b24", "deals") == Bookmark(datetime(2026, 12, 1, 9, tzinfo=UTC))
            assert store.cursors.bookmark("acc", "documents:invoice") == Bookmark(datetime(2026, 12, 1, 12), False)
            assert store.cursors.remembered("acc", ["doc:invoice:ref-1"]) == {
                "doc:invoice:ref-1": {"v": "1", "fp": "x"}
            }
            assert store.cursors.last_beat()[0] == "host:1"
        finally:
            store.close()
    finally:
        engine.dispose()
