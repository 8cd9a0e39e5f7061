"""The bottom layer: the vocabulary every other layer shares.

Deals, events and commands in CRM-neutral terms, the typed errors a CRM call can end in,
the clock, the value types of the config, the statuses of stored rows and the keys that
make deliveries and writes idempotent. It imports nothing of the project's own:
rules, adapters and the runtime all build on it.
"""

from domain.clock import Clock, utcnow
from domain.commands import (
    COMMANDS,
    AddComment,
    CloseDeal,
    Command,
    CreateCounterparty,
    CreateOrder,
    CreateTask,
    SendMessage,
    UpdateDeal,
    command_from_payload,
    marker_for,
)
from domain.deals import Deal, Location, StageSemantic, User
from domain.events import Event, EventKind
from domain.statuses import EventSource, InboxStatus, OutboxStatus, TimerStatus

__all__ = [
    "COMMANDS",
    "AddComment",
    "Clock",
    "CloseDeal",
    "Command",
    "CreateCounterparty",
    "CreateOrder",
    "CreateTask",
    "Deal",
    "Event",
    "EventKind",
    "EventSource",
    "InboxStatus",
    "Location",
    "OutboxStatus",
    "SendMessage",
    "StageSemantic",
    "TimerStatus",
    "UpdateDeal",
    "User",
    "command_from_payload",
    "marker_for",
    "utcnow",
]
