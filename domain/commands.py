"""Commands: the writes rules ask a CRM (or another system) to carry out."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from domain.jsonable import jsonable


@dataclass(frozen=True)
class Command:
    """A write to carry out in a CRM; subclasses are stored in the outbox as JSON."""

    kind: ClassVar[str] = "command"
    deal_id: str

    def to_payload(self) -> dict[str, Any]:
        """JSON-ready fields of this command."""
        return jsonable(asdict(self))

    def describe(self) -> str:
        """One line for the audit and the CLI, from the values as the outbox stores them."""
        return self.kind

    def destination(self) -> str | None:
        """The configured system that carries this out when it is not the deal's own CRM."""
        return None


@dataclass(frozen=True)
class CreateTask(Command):
    """Create a task bound to the deal (a Bitrix24 task, a Pipedrive activity)."""

    kind: ClassVar[str] = "create_task"
    title: str = ""
    description: str = ""
    responsible_id: str = ""
    deadline: datetime | None = None
    auditors: tuple[str, ...] = ()
    priority: Literal["low", "normal", "high"] = "normal"
    task_type: str = "task"

    def describe(self) -> str:
        due = str(jsonable(self.deadline) or "none")[:16].replace("T", " ")
        return f"task {jsonable(self.title)!r} for user {jsonable(self.responsible_id)} due {due}"


@dataclass(frozen=True)
class UpdateDeal(Command):
    """Set deal fields. Keys ``responsible_id``, ``stage`` and ``title`` are normalised
    names the adapter maps; any other key is a CRM field name taken from the config."""

    kind: ClassVar[str] = "update_deal"
    values: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return "set " + ", ".join(f"{k}={v}" for k, v in jsonable(self.values).items())


@dataclass(frozen=True)
class AddComment(Command):
    """Add a comment to the deal's timeline (a Pipedrive note)."""

    kind: ClassVar[str] = "add_comment"
    text: str = ""

    def describe(self) -> str:
        return f"comment {jsonable(self.text)[:80]!r}"


@dataclass(frozen=True)
class CloseDeal(Command):
    """Close the deal as won or lost, writing the reason where the CRM keeps it."""

    kind: ClassVar[str] = "close_deal"
    outcome: Literal["won", "lost"] = "lost"
    reason: str = ""
    reason_field: str | None = None

    def describe(self) -> str:
        return f"close as {jsonable(self.outcome)}: {jsonable(self.reason)}"


@dataclass(frozen=True)
class CreateCounterparty(Command):
    """Create a counterparty (a client record) in an accounting system from a CRM card.

    ``target`` names the configured system that keeps counterparties (a 1C base); the
    deal stays in its own CRM. ``deal_id`` is the deal the card came from (for the audit).
    """

    kind: ClassVar[str] = "create_counterparty"
    target: str = ""
    name: str = ""
    full_name: str = ""
    inn: str = ""
    kpp: str = ""
    phone: str = ""
    email: str = ""
    comment: str = ""

    def describe(self) -> str:
        return f"counterparty {jsonable(self.name)!r} (INN {jsonable(self.inn) or '—'}) in {jsonable(self.target)}"

    def destination(self) -> str | None:
        return self.target


@dataclass(frozen=True)
class CreateOrder(Command):
    """Create a customer order in an accounting system from a CRM deal's data (seed 004: the
    manager no longer retypes the application into the order).

    ``target`` names the configured system (a 1C base); the client is its counterparty with
    ``inn`` (else the one named ``counterparty``). ``comment`` carries the order's details and
    the deal's number, so the order links back to its deal when it is read.
    """

    kind: ClassVar[str] = "create_order"
    target: str = ""
    counterparty: str = ""
    inn: str = ""
    amount: str = ""
    ship_by: str = ""  # the desired shipment date, ISO; empty: none
    comment: str = ""

    def describe(self) -> str:
        client = jsonable(self.counterparty) or f"INN {jsonable(self.inn)}"
        return f"order for {client!r} on {jsonable(self.amount) or '—'} in {jsonable(self.target)}"

    def destination(self) -> str | None:
        return self.target


@dataclass(frozen=True)
class SendMessage(Command):
    """Post a text to a configured channel (a chat, a mailbox); ``deal_id`` is the deal it is about."""

    kind: ClassVar[str] = "send_message"
    channel: str = ""
    text: str = ""

    def describe(self) -> str:
        return f"message to {jsonable(self.channel)}: {jsonable(self.text)[:80]!r}"

    def destination(self) -> str | None:
        return self.channel


COMMANDS: dict[str, type[Command]] = {
    c.kind: c for c in (CreateTask, UpdateDeal, AddComment, CloseDeal, CreateCounterparty, CreateOrder, SendMessage)
}


def command_from_payload(kind: str, payload: dict[str, Any]) -> Command:
    """Rebuild a command stored in the outbox."""
    cls = COMMANDS[kind]
    data = dict(payload)
    if cls is CreateTask:
        if data.get("deadline"):
            data["deadline"] = datetime.fromisoformat(data["deadline"])
        data["auditors"] = tuple(data.get("auditors") or ())
    return cls(**data)


def marker_for(idempotency_key: str) -> str:
    """A short, stable tag written into a CRM object so a later try can find it."""
    return "crmc:" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
