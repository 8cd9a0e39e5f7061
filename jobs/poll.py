"""Polling: the safety net for lost webhooks (Bitrix24 never resends; 1C has none).

Each run reads deals modified since the stored cursor minus an overlap (a change written
late with an earlier timestamp is still seen), stores each as an inbox row keyed by
deal, modification time and content (so re-reading the overlap adds nothing twice), and moves the
bookmark to the newest modification seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from adapters.contracts import DealSource
from connector.storage.store import Store
from domain import Event, EventKind, EventSource
from domain.bookmarks import Bookmark
from domain.keys import DEALS_STREAM, poll_key
from domain.statuses import InboxStatus

# What a forced backfill queues again: every stored change no worker is on.
FINISHED = (InboxStatus.DONE, InboxStatus.FAILED, InboxStatus.PARKED)

log = logging.getLogger(__name__)


def poll_deals(
    store: Store,
    adapter: DealSource,
    *,
    now: datetime,
    overlap: timedelta,
    initial_lookback: timedelta = timedelta(0),
    checkpoint_every: int = 200,
    since: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    force: bool = False,
) -> int:
    """One polling run for one CRM; returns how many new changes were queued.

    ``since`` reads from that moment instead of the cursor (a backfill); the cursor still
    only moves forward. With no cursor yet, the first run reads from ``now - initial_lookback``.
    ``force`` queues again a change stored before, whatever became of it (processed, failed
    or parked), so its deal goes through the rules once more.
    """
    bookmark = store.cursors.bookmark(adapter.name, DEALS_STREAM)
    newest = bookmark.position if bookmark else now - initial_lookback
    if since is None:
        since = newest - overlap
    queued = seen = 0
    for deal in adapter.changed_deals(since):
        seen += 1
        modified = deal.updated_at or now
        event = Event(
            crm=adapter.name,
            kind=EventKind.DEAL_UPDATED,
            deal_id=deal.id,
            occurred_at=modified,
            dedup_key=poll_key(deal.id, modified, deal.snapshot()),
            source=EventSource.POLL,
        )
        if store.inbox.add(event, now):
            queued += 1
        elif force:
            queued += len(store.inbox.requeue(now, crm=adapter.name, keys=[event.dedup_key], statuses=FINISHED))
        if progress is not None:
            progress(1)
        if modified > newest:
            newest = modified
        if seen % checkpoint_every == 0:
            # Saved as we go: a run cut short resumes near where it stopped.
            store.cursors.save_bookmark(adapter.name, DEALS_STREAM, Bookmark(newest, complete=False), now)
    store.cursors.save_bookmark(adapter.name, DEALS_STREAM, Bookmark(newest), now)
    log.info(
        "polled crm=%s since=%s seen=%d queued=%d cursor=%s",
        adapter.name,
        since.isoformat(),
        seen,
        queued,
        newest.isoformat(),
    )
    return queued
