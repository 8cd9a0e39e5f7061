"""What every CRM adapter offers the core.

One adapter per CRM type (``adapters/<type>/``), like django-anymail's one backend per
provider: it reads deals and users, lists what changed since a cursor, carries out write
commands, and can find its own earlier write by a marker so a retried write is reconciled
instead of duplicated.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from domain import Command, Deal, Event, User


@dataclass(frozen=True)
class WriteResult:
    """What a write left in the CRM: the remote object's id, if it has one."""

    remote_id: str | None = None
    reconciled: bool = False


@dataclass(frozen=True)
class IncomingRequest:
    """A webhook request reduced to what parsers need, free of any web framework."""

    body: bytes
    content_type: str
    headers: Mapping[str, str]
    form: Mapping[str, list[str]] | None = None  # parsed form fields, when form-encoded
    remote_addr: str | None = None


class WebhookParser(ABC):
    """Verifies and parses one CRM's webhook deliveries into normalised events."""

    @abstractmethod
    def parse(self, request: IncomingRequest, *, received_at: datetime) -> list[Event]:
        """Verify the request and return its events; raise a ``WebhookError`` to refuse it."""


class CrmAdapter(ABC):
    """One configured CRM: reads, polls and writes through its API."""

    type: ClassVar[str]

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        self.name = name
        self.settings = settings

    @abstractmethod
    def get_deals(self, deal_ids: Iterable[str]) -> dict[str, Deal]:
        """Read deals by id; ids that do not exist are absent from the answer."""

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
    def execute(self, command: Command, marker: str) -> WriteResult:
        """Carry out one write; objects it creates carry ``marker`` so they can be found."""

    @abstractmethod
    def find_written(self, command: Command, marker: str) -> WriteResult | None:
        """Find the effect of an earlier try of ``command`` (by its marker), if any."""

    def webhook_parser(self) -> WebhookParser | None:
        """The parser for this CRM's webhooks; None for a CRM that only gets polled."""
        return None

    def find_deal_ids(self, field: str, value: str, limit: int = 2) -> list[str]:
        """Ids of deals whose ``field`` (a CRM field name) equals ``value``, at most ``limit``.

        Used to link documents from another system (a 1C invoice) to their deal; callers
        treat more than one match as ambiguous, so two is enough to know.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot search deals by field")

    def open_deal_counts(self, user_ids: list[str]) -> dict[str, int]:
        """How many open deals each user is responsible for (least-loaded assignment)."""
        raise NotImplementedError(f"{type(self).__name__} cannot count open deals")

    def interrupt(self) -> None:  # noqa: B027 - optional hook
        """Cut short retry and throttle waits in flight: the process is stopping, and an
        unfinished call is retried from the database by whoever runs next."""

    def close(self) -> None:  # noqa: B027 - optional hook, most adapters keep nothing open
        """Release connections."""
