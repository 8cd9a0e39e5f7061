"""The states a stored row moves through, and where an event came from.

Each is a ``StrEnum``: the value is what the database column holds, so a row read back
compares equal to its member.
"""

from __future__ import annotations

from enum import StrEnum


class InboxStatus(StrEnum):
    """An inbox row: waiting for the worker, processed, given up on (a configuration problem),
    or parked (the CRM refuses us that deal: waits for `connector replay --inbox`)."""

    NEW = "new"
    DONE = "done"
    FAILED = "failed"
    PARKED = "parked"


# The inbox rows `connector replay --inbox` may queue again.
INBOX_REPLAYABLE = (InboxStatus.FAILED, InboxStatus.PARKED)


class OutboxStatus(StrEnum):
    """An outbox row: waiting, under way (it may have landed), carried out, a dead letter, or a
    dead letter an operator gave up on (kept for the record, no longer asking for attention)."""

    PENDING = "pending"
    SENDING = "sending"
    DONE = "done"
    DEAD = "dead"
    DISCARDED = "discarded"


# The outbox rows the dispatcher still has to carry out.
OUTBOX_DUE = (OutboxStatus.PENDING, OutboxStatus.SENDING)


class TimerStatus(StrEnum):
    """A deadline: running (reminded or not yet), missed, met, or called off."""

    OPEN = "open"
    REMINDED = "reminded"
    BREACHED = "breached"
    DONE = "done"
    CANCELLED = "cancelled"


# The deadlines still running: a scan may fire them, a change may meet or re-arm them.
TIMER_RUNNING = (TimerStatus.OPEN, TimerStatus.REMINDED)


class DeadlinePhase(StrEnum):
    """Which moment of a deadline fell due."""

    REMINDER = "reminder"
    BREACHED = "breached"


class EventSource(StrEnum):
    """How an event reached the inbox."""

    WEBHOOK = "webhook"
    POLL = "poll"
    TIMER = "timer"
    SCHEDULE = "schedule"
    REPLAY = "replay"
    DOCUMENT = "document"
