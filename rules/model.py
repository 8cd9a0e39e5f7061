"""What a rule is, what it sees, and what it decides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from connector.domain import Command, Deal, Event, User
from rules.territories import Territory

if TYPE_CHECKING:
    from rules.calendar import WorkCalendar


@dataclass(frozen=True)
class Note:
    """An audit line a rule wants written (no CRM write)."""

    message: str
    kind = "note"


Action = Command | Note


@dataclass(frozen=True)
class RuleContext:
    """Everything a rule may look at. ``now`` is passed in: rules never read the clock."""

    deal: Deal
    event: Event
    now: datetime
    triggers: frozenset[str]
    changes: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    users: Mapping[str, User] = field(default_factory=dict)
    territories: Sequence[Territory] = ()
    calendar: WorkCalendar | None = None

    def template_vars(self, results: Mapping[str, Any]) -> dict[str, Any]:
        deal = self.deal
        return {
            "deal": {
                "id": deal.id, "title": deal.title, "stage": deal.stage, "pipeline": deal.pipeline,
                "responsible_id": deal.responsible_id, "amount": deal.amount, "currency": deal.currency,
                "created_at": deal.created_at, "updated_at": deal.updated_at,
                "address": deal.location.text if deal.location else "",
                "city": deal.location.city if deal.location else "",
                "district": deal.location.district if deal.location else "",
                "fields": deal.fields,
            },
            "event": {"kind": str(self.event.kind), "source": self.event.source, "at": self.event.occurred_at},
            "changes": {k: {"before": b, "after": a} for k, (b, a) in self.changes.items()},
            "now": self.now,
            **results,
        }


Condition = Callable[[RuleContext], bool]


@dataclass(frozen=True)
class Planned:
    """An action with its stable slot name inside the rule (part of its idempotency key)."""

    slot: str
    action: Action


class ActionSpec(ABC):
    """One configured step of a rule's ``do`` list."""

    name: str = ""

    @abstractmethod
    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        """The actions this step takes; it may leave values in ``results`` for later steps."""


@dataclass(frozen=True)
class Rule:
    """A configured regulation: when ``triggers`` fire and ``condition`` holds, do ``actions``."""

    name: str
    crm: str
    triggers: frozenset[str]
    condition: Condition
    actions: Sequence[ActionSpec]
    once_per: str = "deal"
    enabled: bool = True


@dataclass(frozen=True)
class Decision:
    """One action a rule decided on, with the key that makes carrying it out idempotent."""

    rule: str
    key: str
    action: Action
    triggers: frozenset[str]
