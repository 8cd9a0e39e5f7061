"""Deals and users as the rules see them, in CRM-neutral terms.

Adapters translate each CRM's payloads into these types; nothing here knows a CRM's field
names or envelopes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from domain.jsonable import jsonable

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

    @classmethod
    def of(
        cls,
        *,
        crm: str,
        id: str,
        title: str,
        stage: str,
        stage_semantic: StageSemantic,
        pipeline: str,
        responsible_id: str | None,
        amount: Decimal | None,
        currency: str | None,
        created_at: datetime | None,
        updated_at: datetime | None,
        location: Location | None,
        fields: dict[str, Any],
    ) -> Deal:
        """The deal ``Deal(...)`` builds from every attribute, built without the frozen
        dataclass's ``object.__setattr__`` per attribute: about half the cost of a deal in a
        full read, which builds thousands."""
        deal = object.__new__(cls)
        deal.__dict__.update(
            crm=crm,
            id=id,
            title=title,
            stage=stage,
            stage_semantic=stage_semantic,
            pipeline=pipeline,
            responsible_id=responsible_id,
            amount=amount,
            currency=currency,
            created_at=created_at,
            updated_at=updated_at,
            location=location,
            fields=fields,
        )
        return deal

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
            "fields": jsonable(self.fields),
        }


_DEAL_ATTRS = {f.name for f in fields(Deal)}


@dataclass(frozen=True)
class User:
    """A CRM user, as far as assignment needs to know."""

    id: str
    name: str = ""
    active: bool = True
