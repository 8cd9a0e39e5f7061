"""Where each poll stopped (a bookmark per CRM and stream), what a document source remembers of
each document, and the leader's heartbeat: rows of the cursors table."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector.storage.models import CursorRow
from domain.bookmarks import Bookmark
from domain.keys import DOCUMENT_MEMORY_PREFIX

if TYPE_CHECKING:
    from connector.storage.store import Store

# The row the leading process beats in (no CRM of that name can be configured: names are
# lower-case letters, digits, - and _, and start with neither).
HEARTBEAT = ("_connector", "leader")
# Rows saying a CRM's processing is paused (it refused our credentials), under the same name.
PAUSE_PREFIX = "paused:"
STARTED = "started"
REPORT_PREFIX = "report:"


class Cursors:
    """Bookmarks, per-document memory and the leader's heartbeat."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def bookmark(self, crm: str, stream: str) -> Bookmark | None:
        """Where the last poll of ``stream`` stopped, if it ever ran."""
        value = self._get(crm, stream)
        return Bookmark.from_json(value) if value else None

    def save_bookmark(self, crm: str, stream: str, bookmark: Bookmark, now: datetime) -> None:
        self._put(crm, stream, bookmark.to_json(), now)

    @staticmethod
    def latest_bookmark(session: Session, crm: str) -> tuple[datetime, Bookmark] | None:
        """The CRM's most recently saved bookmark and when it was saved (its last poll)."""
        row = session.scalar(
            select(CursorRow)
            .where(
                CursorRow.crm == crm,
                ~CursorRow.stream.startswith(DOCUMENT_MEMORY_PREFIX),
                ~CursorRow.stream.startswith(REPORT_PREFIX),
            )
            .order_by(CursorRow.updated_at.desc())
            .limit(1)
        )
        if row is None or not row.value:
            return None
        return row.updated_at, Bookmark.from_json(row.value)

    def remembered(self, crm: str, streams: Sequence[str]) -> dict[str, dict[str, Any]]:
        """What was remembered under these streams, in one query."""
        if not streams:
            return {}
        with self.store.sessions() as session:
            rows = session.scalars(select(CursorRow).where(CursorRow.crm == crm, CursorRow.stream.in_(list(streams))))
            return {row.stream: json.loads(row.value) for row in rows if row.value}

    def remember(self, crm: str, stream: str, memory: Mapping[str, Any], now: datetime) -> None:
        """Keep ``memory`` (up to 200 characters of JSON) under ``stream``."""
        self._put(crm, stream, json.dumps(memory, ensure_ascii=False), now)

    def beat(self, owner: str, now: datetime) -> None:
        """The leader is alive."""
        self._put(*HEARTBEAT, owner, now)

    def last_beat(self) -> tuple[str | None, datetime | None]:
        """The last leader's name and heartbeat, if one ever beat."""
        with self.store.reading() as session:
            row = session.get(CursorRow, HEARTBEAT)
            return (row.value, row.updated_at) if row is not None else (None, None)

    def started(self, owner: str, now: datetime) -> None:
        """A process that runs the scheduler (polls) started: `status` gives its first poll time."""
        self._put(HEARTBEAT[0], STARTED, owner, now)

    def last_start(self) -> datetime | None:
        """When a scheduler last started, if ever."""
        with self.store.reading() as session:
            row = session.get(CursorRow, (HEARTBEAT[0], STARTED))
            return row.updated_at if row is not None else None

    def pause(self, crm: str, reason: str, now: datetime) -> None:
        """The worker stopped reading ``crm``: kept for `status` and ``/readyz`` of any process."""
        self._put(HEARTBEAT[0], PAUSE_PREFIX + crm, reason[:200], now)

    def resume(self, crm: str) -> None:
        with self.store.sessions() as session:
            row = session.get(CursorRow, (HEARTBEAT[0], PAUSE_PREFIX + crm))
            if row is not None:
                session.delete(row)
                session.commit()

    @staticmethod
    def paused(session: Session) -> dict[str, tuple[datetime, str]]:
        """Each paused CRM: since when and why."""
        rows = session.scalars(
            select(CursorRow).where(CursorRow.crm == HEARTBEAT[0], CursorRow.stream.startswith(PAUSE_PREFIX))
        )
        return {r.stream.removeprefix(PAUSE_PREFIX): (r.updated_at, r.value or "") for r in rows}

    def last_report(self, crm: str, report: str) -> str | None:
        """The last period a plan-vs-fact report was delivered for."""
        return self._get(crm, f"{REPORT_PREFIX}{report}"[:64])

    def save_last_report(self, crm: str, report: str, period: str, now: datetime) -> None:
        self._put(crm, f"{REPORT_PREFIX}{report}"[:64], period, now)

    def _get(self, crm: str, stream: str) -> str | None:
        with self.store.sessions() as session:
            row = session.get(CursorRow, (crm, stream))
            return row.value if row else None

    def _put(self, crm: str, stream: str, value: str, now: datetime) -> None:
        with self.store.sessions() as session:
            row = session.get(CursorRow, (crm, stream))
            if row is None:
                session.add(CursorRow(crm=crm, stream=stream, value=value, updated_at=now))
            else:
                row.value, row.updated_at = value, now
            session.commit()
