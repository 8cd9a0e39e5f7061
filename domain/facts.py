"""What happened in a CRM, as plan-vs-fact reports count it: activities marked done, deals, and
deals' moves between stages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

FactKind = Literal["activity", "deal", "stage", "breach"]


@dataclass(frozen=True)
class Fact:
    """One activity actually logged as done (a call made, a meeting held), one deal, one
    deal's entry into a stage (``stage``, with its ``deal_id``), or one deadline the connector
    recorded as breached (``breach``: its responsible at the breach, ``at`` the due moment,
    ``fields`` the deal's as last seen and ``deadline``).

    ``at`` is when an activity was marked done, when a deal was won or lost (None while
    it is open), or when it entered the stage; ``type`` is an activity's type in lower case as
    the CRM names it (call, meeting, email, task, or a type of the CRM's own); ``status`` a
    deal's open, won or lost, or ``planned`` for an activity not done yet (read only for
    reports on the day ahead, with ``at`` when it is scheduled); ``fields`` the record's fields
    under the CRM's own names, for ``where`` filters.
    """

    kind: FactKind
    id: str
    user: str | None
    at: datetime | None = None
    created_at: datetime | None = None
    type: str = ""
    status: str = ""
    stage: str = ""
    amount: Decimal | None = None
    deal_id: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        """A normalised attribute by name, else a raw CRM field."""
        if name in ("kind", "id", "user", "at", "created_at", "type", "status", "stage", "amount", "deal_id"):
            return getattr(self, name)
        return self.fields.get(name)
