"""Polling a document source: documents that changed since its bookmarks, filed as events of
the deals of the CRM they belong to.

The source (1C, say) reads and links its documents; this job gives it its bookmarks, its
memory of what it filed before, the inbox and the audit, through the ``DocumentFiling`` port.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from adapters.contracts import DealSource, DocumentSource
from connector.storage.audit import UNLINKED, Audit
from connector.storage.store import Store
from domain import Event
from domain.bookmarks import Bookmark
from domain.keys import document_memory, document_stream, unlinked_audit_key


class _Filing:
    """The store as one source's document poll sees it, at one moment."""

    def __init__(self, store: Store, source: str, now: datetime) -> None:
        self.store, self.source, self.now = store, source, now

    def bookmark(self, stream: str) -> Bookmark | None:
        return self.store.cursors.bookmark(self.source, document_stream(stream))

    def save_bookmark(self, stream: str, bookmark: Bookmark) -> None:
        self.store.cursors.save_bookmark(self.source, document_stream(stream), bookmark, self.now)

    def remembered(self, stream: str, refs: Sequence[str]) -> dict[str, dict[str, Any]]:
        keys = {document_memory(stream, ref): ref for ref in refs}
        return {keys[key]: memory for key, memory in self.store.cursors.remembered(self.source, list(keys)).items()}

    def file(self, event: Event, stream: str, ref: str, memory: Mapping[str, Any]) -> bool:
        added = self.store.inbox.add(event, self.now)
        self.store.cursors.remember(self.source, document_memory(stream, ref), memory, self.now)
        return added

    def unlinked(self, *, ref: str, version: str, message: str, detail: Mapping[str, Any]) -> None:
        with self.store.sessions() as session, session.begin():
            Audit.record(
                session,
                at=self.now,
                crm=self.source,
                action=UNLINKED,
                message=message,
                trigger="poll",
                detail=dict(detail),
                key=unlinked_audit_key(self.source, ref, version),
            )


def poll_documents(store: Store, source: DocumentSource, deals: DealSource, *, now: datetime) -> int:
    """One poll of ``source``; returns how many events were queued for ``deals``' CRM."""
    return source.poll_documents(_Filing(store, source.name, now), deals)
