"""The bottom layer: the vocabulary every other layer shares.

Deals, events and commands in CRM-neutral terms, the typed errors a CRM call can end in,
the clock, and the value types of the config. It imports nothing of the project's own:
rules, adapters and the runtime all build on it.
"""

from domain.clock import Clock, utcnow
from domain.commands import (
    COMMANDS,
    AddComment,
    CloseDeal,
    Command,
    CreateCounterparty,
    CreateTask,
    UpdateDeal,
    command_from_payload,
    marker_for,
)
from domain.deals import Deal, Location, StageSemantic, User
from domain.events import Event, EventKind

__all__ = [
    "COMMANDS",
    "AddComment",
    "Clock",
    "CloseDeal",
    "Command",
    "CreateCounterparty",
    "CreateTask",
    "Deal",
    "Event",
    "EventKind",
    "Location",
    "StageSemantic",
    "UpdateDeal",
    "User",
    "command_from_payload",
    "marker_for",
    "utcnow",
]
