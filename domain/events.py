"""Events: what happened to a deal, from a webhook, a poll, a timer or a schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from domain.statuses import EventSource


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
    source: EventSource = EventSource.WEBHOOK
    previous: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        *,
        crm: str,
        kind: EventKind,
        deal_id: str | None,
        occurred_at: datetime,
        dedup_key: str,
        source: EventSource,
        previous: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
    ) -> Event:
        """``Event(...)`` set in one step, as the worker and the dry-run make one per event:
        the frozen dataclass's own ``__init__`` sets its fields one ``object.__setattr__`` at a
        time (measured: about 3 times as long)."""
        made = object.__new__(cls)
        made.__dict__.update(
            crm=crm,
            kind=kind,
            deal_id=deal_id,
            occurred_at=occurred_at,
            dedup_key=dedup_key,
            source=source,
            previous=previous,
            data={} if data is None else data,
            raw={} if raw is None else raw,
        )
        return made
