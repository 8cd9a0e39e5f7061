"""The normalised domain the rules see: deals, events and the commands they produce.

Adapters translate each CRM's payloads into these types and carry the commands back
out; nothing here knows a CRM's field names or envelopes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, Literal

StageSemantic = Literal["open", "won", "lost"]


@dataclass(frozen=True)
class Location:
    """Where a deal's service address is, as far as the CRM tells."""

    text: str = ""
    region: str = ""
    city: str = ""
    district: str = ""
    street: str = ""
    postcode: str = ""
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True)
class Deal:
    """A deal as the rules see it, read fresh from its CRM.

    ``fields`` holds every field under the CRM's own name (custom fields included), so
    that a rule configured with a CRM field name can read it; the typed attributes are
    the normalised view shared by all CRMs.
    """

    crm: str
    id: str
    title: str = ""
    stage: str = ""
    stage_semantic: StageSemantic = "open"
    pipeline: str = ""
    responsible_id: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    location: Location | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        """A normalised attribute by name, else a raw CRM field."""
        if name in _DEAL_ATTRS and name != "fields":
            return getattr(self, name)
        return self.fields.get(name, default)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view used to detect what changed between two readings."""
        return {
            "title": self.title,
            "stage": self.stage,
            "stage_semantic": self.stage_semantic,
            "pipeline": self.pipeline,
            "responsible_id": self.responsible_id,
            "amount": str(self.amount) if self.amount is not None else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "fields": _jsonable(self.fields),
        }


_DEAL_ATTRS = {f.name for f in fields(Deal)}


@dataclass(frozen=True)
class User:
    """A CRM user, as far as assignment needs to know."""

    id: str
    name: str = ""
    active: bool = True


class EventKind(StrEnum):
    """What happened, in CRM-neutral words."""

    DEAL_CREATED = "deal.created"
    DEAL_UPDATED = "deal.updated"
    DEAL_DELETED = "deal.deleted"
    TIMER_DUE = "timer.due"
    SCHEDULE = "schedule"
    INVOICE_ISSUED = "invoice.issued"
    PAYMENT_RECEIVED = "payment.received"
    ORDER_STATUS_CHANGED = "order.status_changed"


@dataclass(frozen=True)
class Event:
    """One normalised event: a webhook delivery, a polled change or a due timer.

    ``previous`` holds field values before the change when the CRM tells them (Pipedrive
    does, Bitrix24 does not: the worker derives them from its last snapshot). ``raw`` keeps
    the payload as received, minus secrets.
    """

    crm: str
    kind: EventKind
    deal_id: str | None
    occurred_at: datetime
    dedup_key: str
    source: Literal["webhook", "poll", "timer", "schedule", "replay", "document"] = "webhook"
    previous: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


# --- commands: what the rules ask the CRM to do -------------------------------------------


@dataclass(frozen=True)
class Command:
    """A write to carry out in a CRM; subclasses are stored in the outbox as JSON."""

    kind: ClassVar[str] = "command"
    deal_id: str

    def to_payload(self) -> dict[str, Any]:
        """JSON-ready fields of this command."""
        return _jsonable(asdict(self))


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


@dataclass(frozen=True)
class UpdateDeal(Command):
    """Set deal fields. Keys ``responsible_id``, ``stage`` and ``title`` are normalised
    names the adapter maps; any other key is a CRM field name taken from the config."""

    kind: ClassVar[str] = "update_deal"
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AddComment(Command):
    """Add a comment to the deal's timeline (a Pipedrive note)."""

    kind: ClassVar[str] = "add_comment"
    text: str = ""


@dataclass(frozen=True)
class CloseDeal(Command):
    """Close the deal as won or lost, writing the reason where the CRM keeps it."""

    kind: ClassVar[str] = "close_deal"
    outcome: Literal["won", "lost"] = "lost"
    reason: str = ""
    reason_field: str | None = None


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


COMMANDS: dict[str, type[Command]] = {
    c.kind: c for c in (CreateTask, UpdateDeal, AddComment, CloseDeal, CreateCounterparty)
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


def _jsonable(value: Any) -> Any:
    """``value`` exactly as ``json.loads(json.dumps(value, default=_default, ensure_ascii=False))``
    gives it back: built directly for the plain values a deal and a command hold (the round
    trip through a JSON string was a tenth of a dry-run's time: a snapshot per event, a
    payload per command); anything else (a subclass, a key that is not text, a cycle, an
    integer too long for text) takes the round trip itself, so json decides and raises.
    """
    try:
        return _convert(value)
    except (_NotPlain, RecursionError):
        return json.loads(json.dumps(value, default=_default, ensure_ascii=False))


class _NotPlain(Exception):
    """A value the direct conversion leaves to the JSON round trip."""


# Ints past this many bits may be too long for int <-> str (sys.get_int_max_str_digits, at
# least 640 digits): for them the round trip decides, raising what json raises.
_INT_BITS_SURELY_SHORT = 2000
# Exact types the round trip gives back as they are (float: repr round-trips, NaN included).
_AS_IS = frozenset({str, bool, float, type(None)})
# Exact types json hands to ``_default``.
_DEFAULTED = frozenset({datetime, Decimal, set, frozenset})


def _convert(value: Any) -> Any:
    cls = type(value)
    if cls in _AS_IS:
        return value
    if cls is int:
        if value.bit_length() > _INT_BITS_SURELY_SHORT:
            raise _NotPlain
        return value
    if cls is list or cls is tuple:
        return [_convert(v) for v in value]
    if cls is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain  # how json writes other keys (and their collisions) is json's to say
            out[key] = item if type(item) is str else _convert(item)
        return out
    if cls in _DEFAULTED:
        return _convert(_default(value))
    raise _NotPlain


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
