"""What a CRM package offers the runtime: an adapter class with the capabilities its CRM has.

The runtime never asks which CRM it talks to, only what the adapter can do: read deals
(``DealSource``), find deals by a field (``DealSearch``) or records sharing a client's phone,
e-mail or INN (``DuplicateSearch``), count what happened (``FactSource``), carry out writes
(``CommandSink``), report documents for another CRM's deals (``DocumentSource``), receive
webhooks (``WebhookReceiver``). A chat or mail channel is a ``Channel``: a sink of messages only.
An adapter class derives from ``CrmAdapter`` and from each capability it implements, like
django-anymail's backends build on one base and mix in what a provider
supports; a capability it lacks is absent, not a method that fails at run time.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from marshmallow import Schema, missing

from domain import CloseDeal, Command, Deal, Event, UpdateDeal, User
from domain.bookmarks import Bookmark
from domain.duplicates import Duplicate
from domain.errors import AdapterError, FatalError
from domain.facts import Fact
from domain.org import Department


@dataclass(frozen=True)
class WriteResult:
    """What a write left in the CRM: the remote object's id, if it has one."""

    remote_id: str | None = None
    reconciled: bool = False


@dataclass(frozen=True)
class IncomingRequest:
    """A webhook request reduced to what receivers need, free of any web framework."""

    body: bytes
    content_type: str
    headers: Mapping[str, str]
    form: Mapping[str, list[str]] | None = None  # parsed form fields, when form-encoded
    remote_addr: str | None = None


@dataclass(frozen=True, kw_only=True)
class CrmSettings:
    """What every ``crms.<name>`` block holds; each CRM's settings class adds its own keys.

    A CRM's settings class is the one place its defaults live: its schema takes them from
    the class (``defaults_from``), and the adapter reads the loaded object.
    """

    type: str
    poll_every: float | None = None  # seconds between polls; None: not polled
    poll_overlap: float = 120.0  # seconds re-read behind the bookmark
    initial_lookback: float = 0.0  # seconds a deal source reads back on its first poll (no bookmark yet)


class SettingsSchema(Schema):
    """The marshmallow schema of one CRM's block; it loads into its frozen settings class."""

    settings_class: ClassVar[type[CrmSettings]] = CrmSettings

    def load_settings(self, block: Mapping[str, Any]) -> CrmSettings:
        """Validate ``block`` (a ``ValidationError`` says what is wrong) and freeze it."""
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in self.load(block).items()}
        return self.settings_class(**values)


SchemaT = TypeVar("SchemaT", bound=type[SettingsSchema])


def defaults_from(settings_class: type[CrmSettings]) -> Callable[[SchemaT], SchemaT]:
    """Bind a settings schema to its settings class and give its keys the class's defaults.

    A schema field with a default of its own is refused: there would be two to keep in step.
    """

    def bind(schema: SchemaT) -> SchemaT:
        defaults: dict[str, Any] = {}
        for field in dataclasses.fields(settings_class):
            if field.default is not dataclasses.MISSING:
                defaults[field.name] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                defaults[field.name] = field.default_factory
        for name, declared in schema._declared_fields.items():
            if declared.load_default is not missing:
                raise TypeError(f"{schema.__name__}.{name}: its default belongs in {settings_class.__name__}")
            if name in defaults and not declared.required:
                declared.load_default = defaults[name]
        schema.settings_class = settings_class
        return schema

    return bind


SettingsT = TypeVar("SettingsT", bound=CrmSettings)


@dataclass(frozen=True)
class ConfiguredCrm:
    """One CRM of the config as a cross-check sees it: its settings and what it can do."""

    name: str
    settings: CrmSettings
    adapter_class: type[CrmAdapter[Any]]

    def can(self, capability: type) -> bool:
        """Whether the CRM's adapter has ``capability`` (``DealSource``, ``CommandSink``, …)."""
        return issubclass(self.adapter_class, capability)


class CrmAdapter(Generic[SettingsT]):
    """One configured CRM; subclasses add the capabilities below."""

    type: ClassVar[str]

    def __init__(self, name: str, settings: SettingsT) -> None:
        self.name = name
        self.settings = settings

    def interrupt(self) -> None:
        """Cut short retry and throttle waits in flight: the process is stopping, and an
        unfinished call is retried from the database by whoever runs next."""

    def close(self) -> None:
        """Release connections."""


class DealSource(ABC):
    """A CRM that keeps deals: read them, list what changed, and read its users."""

    name: str
    # Fields the CRM stamps on every change of a deal: they change whenever anything does,
    # so a change of theirs is no change of its own (a `changed` condition would always hold).
    bookkeeping_fields: ClassVar[frozenset[str]] = frozenset()
    # Whether the CRM's webhooks tell the values before a change; where they do not, the
    # worker derives them from the deal's last snapshot.
    webhooks_carry_previous: ClassVar[bool] = False

    # What the CRM's user ids look like: ``check`` refuses a user reference that cannot be one.
    user_id_pattern: ClassVar[str] = r"\d+"

    @classmethod
    def sample_deal(cls, crm: str) -> Deal:
        """A deal shaped like this CRM's, for ``check`` to render the templates against."""
        return Deal(crm=crm, id="1", title="Sample deal", stage="NEW", responsible_id="1")

    @abstractmethod
    def get_deals(self, deal_ids: Iterable[str]) -> dict[str, Deal]:
        """Read deals by id, batched as the CRM allows; ids that do not exist are absent."""

    def get_deal(self, deal_id: str) -> Deal | None:
        """Read one deal, or None when it does not exist."""
        return self.get_deals([deal_id]).get(deal_id)

    @abstractmethod
    def changed_deals(self, since: datetime | None) -> Iterator[Deal]:
        """Deals modified at or after ``since`` (all when None), oldest change first."""

    @abstractmethod
    def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        """Read users by id."""

    @abstractmethod
    def open_deal_counts(self, user_ids: list[str]) -> dict[str, int]:
        """How many open deals each user is responsible for (least-loaded assignment)."""

    # Normalised ``UpdateDeal`` keys and the CRM's own field names they land in.
    field_names: ClassVar[Mapping[str, str]] = {}

    def closed_stage(self, deal: Deal, outcome: str) -> str | None:
        """The stage a deal closed as ``outcome`` ("won", "lost") moves to, if the CRM has one."""
        return None

    def deal_after(self, deal: Deal, command: Command) -> Deal:
        """The deal as this CRM keeps it once ``command`` is carried out, without calling it:
        what a dry-run shows the rules next. A normalised key sets the attribute and the
        CRM's field alike; any other key is the CRM's field."""
        changed: dict[str, Any] = {}
        fields = dict(deal.fields)
        if isinstance(command, UpdateDeal):
            values = command.values
        elif isinstance(command, CloseDeal):
            values = (
                {"stage": self.closed_stage(deal, command.outcome)} if self.closed_stage(deal, command.outcome) else {}
            )
            changed["stage_semantic"] = command.outcome
            if command.reason and command.reason_field:
                values = {**values, command.reason_field: command.reason}
        else:
            return deal
        for key, value in values.items():
            if key in _NORMALISED:
                changed[key] = _NORMALISED[key](value)
                if key in self.field_names:
                    fields[self.field_names[key]] = value
            else:
                fields[key] = value
        return dataclasses.replace(deal, fields=fields, **changed)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# Normalised deal attributes an UpdateDeal may set, and how a written value reads back.
_NORMALISED: dict[str, Callable[[Any], Any]] = {
    "responsible_id": _text,
    "stage": lambda v: str(v or ""),
    "title": lambda v: str(v or ""),
    "pipeline": lambda v: str(v or ""),
    "amount": lambda v: None if v in (None, "") else Decimal(str(v)),
}


class DepartmentSource(ABC):
    """A CRM that keeps the company's structure: departments, their heads and members
    (read by ``connector org-import`` to write an ``org:`` block for the config)."""

    @abstractmethod
    def departments(self) -> tuple[list[Department], dict[str, User]]:
        """Every department with its active members, and those users by id."""


class DealSearch(ABC):
    """A CRM whose deals can be found by a field's value (linking documents to deals)."""

    @abstractmethod
    def find_deal_ids(self, field: str, value: str, limit: int = 2) -> list[str]:
        """Ids of deals whose ``field`` (a CRM field name) equals ``value``, at most ``limit``.

        Callers treat more than one match as ambiguous, so two is enough to know.
        """


class FactSource(ABC):
    """A CRM whose activity log and deals can be counted for plan-vs-fact reports."""

    # Whether its facts include deals' entries into stages (conversions, time between stages).
    stage_history: ClassVar[bool] = False
    # Whether it reads activities planned and not done yet (``read_planned``).
    planned_activities: ClassVar[bool] = False

    @abstractmethod
    def read_facts(self, since: datetime, until: datetime) -> Iterator[Fact]:
        """Activities marked done in ``since`` … ``until`` (calls made, meetings held: never
        ones only planned), deals changed since ``since`` (created, won or lost then or later:
        the deals open at the window's start are these and the open ones), the deals open now,
        and (with ``stage_history``) the deals' entries into stages then."""

    def read_planned(self, since: datetime, until: datetime) -> Iterator[Fact]:
        """Activities not done yet that are scheduled in ``since`` … ``until`` (``at`` is when),
        with status ``planned``; a CRM that reads them sets ``planned_activities``."""
        raise NotImplementedError(f"{type(self).__name__} does not read planned activities")


class DuplicateSearch(ABC):
    """A CRM that finds other records (deals, contacts, companies, leads) sharing a client's
    phone, e-mail or INN with a deal: repeat clients and double entries."""

    @abstractmethod
    def find_duplicates(self, deal: Deal, by: str, values: Sequence[str]) -> list[Duplicate]:
        """Records whose ``by`` (``phone`` in E.164, ``email`` lower-cased, ``inn``) is one of
        ``values``, leaving out ``deal`` itself and the client records it is bound to."""


class DealLookup(Protocol):
    """What linking a document to a deal needs of the deals' CRM."""

    name: str

    def get_deals(self, deal_ids: Iterable[str]) -> dict[str, Deal]: ...

    def find_deal_ids(self, field: str, value: str, limit: int = 2) -> list[str]: ...


# A handler carries out one command: (adapter, command, marker) -> what it wrote.
Handler = Callable[[Any, Any, str], WriteResult]
# One write of a batch: the command and the marker its created objects carry.
Write = tuple[Command, str]


class CommandSink(ABC):
    """A CRM that carries out writes, each command type by its own handler.

    ``handlers`` is the table the config is checked against: a rule step whose command has
    no handler in its CRM's table is refused by ``connector check``, not at run time.
    """

    name: str
    handlers: ClassVar[Mapping[type[Command], Handler]] = {}
    # How many writes one ``execute_many`` call should carry: 1 for a CRM without a batch API.
    batch_limit: ClassVar[int] = 1

    @classmethod
    def accepts(cls, command: type[Command]) -> bool:
        """Whether this CRM can carry out ``command``."""
        return command in cls.handlers

    def execute(self, command: Command, marker: str) -> WriteResult:
        """Carry out one write; objects it creates carry ``marker`` so they can be found."""
        handler = self.handlers.get(type(command))
        if handler is None:
            raise FatalError(f"{type(self).__name__} cannot carry out {command.kind}", crm=self.name)
        return handler(self, command, marker)

    def execute_many(self, writes: Sequence[Write]) -> list[WriteResult | AdapterError]:
        """Carry out several writes; each answer is its result or the error it ended in.

        One call per write unless the CRM batches them (``batch_limit`` > 1: the dispatcher then
        hands it up to that many writes of different deals at once); a failed write does not stop
        the others.
        """
        outcomes: list[WriteResult | AdapterError] = []
        for command, marker in writes:
            try:
                outcomes.append(self.execute(command, marker))
            except AdapterError as exc:
                outcomes.append(exc)
        return outcomes

    def find_written_many(self, writes: Sequence[Write]) -> list[WriteResult | AdapterError | None]:
        """``find_written`` for several writes; a CRM with a batch API looks them up together."""
        found: list[WriteResult | AdapterError | None] = []
        for command, marker in writes:
            try:
                found.append(self.find_written(command, marker))
            except AdapterError as exc:
                found.append(exc)
        return found

    @abstractmethod
    def find_written(self, command: Command, marker: str) -> WriteResult | None:
        """Find the effect of an earlier try of ``command`` by its marker, if any (a write
        whose repetition changes nothing, such as setting fields, needs no search: None)."""


LOST_ANSWER_POLICIES = ("resend", "drop")
# What the outbox records as the remote id of a message dropped after a lost answer.
LOST_AND_DROPPED = "answer-lost:not-resent"


@dataclass(frozen=True, kw_only=True)
class ChannelSettings(CrmSettings):
    """What every ``channels.<name>`` block holds; each channel type adds its own keys.

    ``on_lost_answer``: what to do with a message whose answer was lost (it may or may not
    have been delivered, and a chat cannot be searched for it): ``resend`` it (never lost;
    a duplicate when the lost call had posted) or ``drop`` it (never twice; lost when the
    lost call had not posted).
    """

    on_lost_answer: str = "resend"


class Channel(CommandSink):
    """A place to post messages (a chat, a mailbox): it carries out ``SendMessage`` only.

    Unlike a CRM it keeps no marker a later try could find, so ``find_written`` finds
    nothing, and a try whose answer was lost is settled by ``after_lost_answer``.
    """

    lost_answer_policy: str = "resend"

    def find_written(self, command: Command, marker: str) -> WriteResult | None:
        return None

    def after_lost_answer(self, command: Command, marker: str) -> WriteResult:
        """Settle a message whose last try lost its answer. ``drop``: record it as sent
        without sending (at most once); ``resend``: send it again (at least once: each lost
        answer of a call that had in fact posted costs one duplicate)."""
        if self.lost_answer_policy == "drop":
            return WriteResult(remote_id=LOST_AND_DROPPED, reconciled=True)
        return self.execute(command, marker)


class DocumentFiling(Protocol):
    """What a document poll gets from the runtime: its bookmarks, its memory of what it filed,
    and the inbox. Streams and refs are the source's own names."""

    now: datetime

    def bookmark(self, stream: str) -> Bookmark | None:
        """Where the last poll of ``stream`` stopped."""
        ...

    def save_bookmark(self, stream: str, bookmark: Bookmark) -> None:
        """Move ``stream``'s bookmark (saved at once: a poll cut short resumes from it)."""
        ...

    def remembered(self, stream: str, refs: Sequence[str]) -> dict[str, dict[str, Any]]:
        """What was filed before for these documents, by ref."""
        ...

    def file(self, event: Event, stream: str, ref: str, memory: Mapping[str, Any]) -> bool:
        """Store the event in the inbox, then remember ``memory`` for the document; False
        when the inbox already held the event."""
        ...

    def unlinked(self, *, ref: str, version: str, message: str, detail: Mapping[str, Any]) -> None:
        """Report a document no deal could be found for (once per version)."""
        ...


class DocumentSource(ABC):
    """A system whose documents (invoices, payments, orders) are events of another CRM's deals."""

    name: str
    deal_crm: str  # the configured CRM whose deals the documents belong to

    @abstractmethod
    def poll_documents(self, filing: DocumentFiling, deals: DealSource) -> int:
        """Read what changed since the bookmarks and file it as events of ``deals``' deals;
        returns how many events were queued."""


@dataclass(frozen=True)
class CrmInventory:
    """What a CRM showed ``check --online``: who the credentials are and what exists there.

    ``None`` is "not read" (or not a thing this CRM has), so nothing is checked against it.
    """

    account: str = ""  # who the credentials are: a user, a base
    permissions: tuple[str, ...] = ()  # scopes, rights or entity sets granted
    missing_permissions: tuple[str, ...] = ()  # ones the connector needs but was not given
    pipelines: Mapping[str, tuple[str, ...]] | None = None  # pipeline id -> its stage ids
    users: Mapping[str, User] | None = None
    fields: Mapping[str, str] | None = None  # deal field name -> its label
    # The adapter's own settings checked against the CRM: settings key -> what is wrong.
    settings_problems: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # What the CRM side must be told to send webhooks (events, auth); the URL is the caller's.
    webhook_setup: str = ""


class Inspectable(ABC):
    """A CRM that can show what exists in it (the connection test, ``check --online``)."""

    @abstractmethod
    def inspect(self) -> CrmInventory:
        """Authenticate and read permissions, pipelines and stages, users and deal fields;
        an ``AdapterError`` says why it could not."""


# A validator checks one thing about a delivery and raises a ``WebhookError`` to refuse it.
Validator = Callable[[IncomingRequest], None]


class WebhookReceiver(ABC):
    """A CRM that sends webhooks: ``validate`` the request, then ``parse`` it into events.

    ``validators`` run in order before anything is parsed (django-anymail's shape): shared
    ones live in ``adapters.webhooks``.
    """

    validators: Sequence[Validator] = ()

    def validate(self, request: IncomingRequest) -> None:
        """Refuse a delivery that is not genuine (a ``WebhookError`` says the HTTP answer)."""
        for validator in self.validators:
            validator(request)

    @abstractmethod
    def parse(self, request: IncomingRequest, *, received_at: datetime) -> list[Event]:
        """The events of a validated delivery; a ``WebhookError`` refuses a malformed one."""

    def receive(self, request: IncomingRequest, *, received_at: datetime) -> list[Event]:
        """Validate, then parse."""
        self.validate(request)
        return self.parse(request, received_at=received_at)
