"""Retention: what the connector no longer needs is purged on a schedule, under the leader.

Processed inbox rows, written outbox rows and audit lines older than ``storage.retention``
(90 days by default) are deleted in batches of short transactions, so the tables and their
indexes stop growing with time and a purge never holds the intake up. Failed inbox rows and
dead letters stay until a person deals with them. A delivery is recognised as a duplicate
only while its inbox row is kept, so the retention never goes below the intake's replay
window, which refuses older deliveries anyway.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from connector.metrics import PURGED
from connector.storage.retention import TABLES, purge_batch
from connector.storage.store import Store

log = logging.getLogger(__name__)

BATCH = 1000
MAX_BATCHES = 200  # per table and run: a large backlog is worked off over several runs


def purge_expired(
    store: Store, now: datetime, keep: timedelta, *, batch: int = BATCH, max_batches: int = MAX_BATCHES
) -> dict[str, int]:
    """Delete what expired ``keep`` before ``now``; returns how many rows went, per table."""
    before = now - keep
    purged: dict[str, int] = {}
    for table in TABLES:
        total = 0
        for _ in range(max_batches):
            gone = purge_batch(store, table, before, batch)
            total += gone
            if gone < batch:
                break
        purged[table] = total
        if total:
            PURGED.labels(table).inc(total)
    if any(purged.values()):
        log.info(
            "retention purged inbox=%d outbox=%d audit=%d older_than=%s",
            purged["inbox"],
            purged["outbox"],
            purged["audit"],
            before.isoformat(timespec="seconds"),
        )
    return purged


def retention_of(storage_retention: float, replay_window: float) -> timedelta:
    """How long rows are kept: the configured retention, never less than the replay window."""
    return timedelta(seconds=max(storage_retention, replay_window))
