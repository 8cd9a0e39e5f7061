"""Bitrix24's deal and user shapes, translated to and from the normalised domain."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from adapters.addresses import parse_address, strip_city_prefix
from adapters.values import to_decimal
from domain import Deal, Location, StageSemantic, User
from domain.facts import Fact

SEMANTICS: dict[str, StageSemantic] = {"P": "open", "S": "won", "F": "lost"}
# Fields every deal read selects, besides the custom ones ("UF_*").
DEAL_SELECT = [
    "ID",
    "TITLE",
    "CATEGORY_ID",
    "STAGE_ID",
    "STAGE_SEMANTIC_ID",
    "CLOSED",
    "ASSIGNED_BY_ID",
    "OPPORTUNITY",
    "CURRENCY_ID",
    "DATE_CREATE",
    "DATE_MODIFY",
    "SOURCE_ID",
    "COMMENTS",
    "UF_*",
]


def parse_datetime(value: Any) -> datetime | None:
    """Bitrix24 datetimes look like ``2026-11-25T10:00:00+03:00``."""
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def format_datetime(value: datetime) -> str:
    """The form Bitrix24 accepts for DEADLINE and filters."""
    return value.isoformat(timespec="seconds")


def deal_from_b24(crm: str, raw: Mapping[str, Any], location_fields: Mapping[str, str]) -> Deal:
    """Build the normalised deal from ``crm.deal.get``/``list`` fields.

    ``location_fields`` names the user fields that hold the address (``address``) or its
    parts (``city``, ``district``, ``street``, ``postcode``, ``region``); deals have no
    address of their own.
    """
    location = None
    if location_fields:
        base = parse_address(raw.get(location_fields["address"])) if "address" in location_fields else Location()
        parts = {k: str(raw.get(f) or "").strip() for k, f in location_fields.items() if k != "address"}
        location = Location(
            text=base.text,
            region=parts.get("region") or base.region,
            city=strip_city_prefix(parts.get("city") or base.city),
            district=parts.get("district") or base.district,
            street=parts.get("street") or base.street,
            postcode=parts.get("postcode") or base.postcode,
            lat=base.lat,
            lon=base.lon,
        )
    get = raw.get
    semantic = SEMANTICS.get(str(get("STAGE_SEMANTIC_ID") or "P"), "open")
    responsible = get("ASSIGNED_BY_ID")
    # ``Deal.of``: a full read builds thousands of these.
    return Deal.of(
        crm=crm,
        id=str(get("ID")),
        title=str(get("TITLE") or ""),
        stage=str(get("STAGE_ID") or ""),
        stage_semantic=semantic,
        pipeline=str(get("CATEGORY_ID") or "0"),
        responsible_id=str(responsible) if responsible else None,
        amount=to_decimal(get("OPPORTUNITY")),
        currency=get("CURRENCY_ID") or None,
        created_at=parse_datetime(get("DATE_CREATE")),
        updated_at=parse_datetime(get("DATE_MODIFY")),
        location=location,
        fields=dict(raw),
    )


# A deal read for plan-vs-fact also tells when it last moved stage (won or lost then) and whose
# it is (clients in work are counted by company).
FACT_DEAL_SELECT = [*DEAL_SELECT, "MOVED_TIME", "COMPANY_ID", "CONTACT_ID"]
# crm.activity TYPE_ID: what the portal logs (calls come from telephony or are logged by hand).
ACTIVITY_TYPES = {"1": "meeting", "2": "call", "3": "task", "4": "email", "6": "todo"}
ACTIVITY_SELECT = ["ID", "TYPE_ID", "PROVIDER_ID", "PROVIDER_TYPE_ID", "SUBJECT", "COMPLETED", "RESPONSIBLE_ID",
                   "OWNER_TYPE_ID", "OWNER_ID", "DIRECTION", "START_TIME", "END_TIME", "CREATED"]  # fmt: skip
# An application's own activity types (crm.activity.type.add) come with this provider; their
# PROVIDER_TYPE_ID is the type a portal defines, e.g. kinds of meetings a regulation counts apart.
CUSTOM_PROVIDER = "REST_APP"


def activity_type(raw: Mapping[str, Any]) -> str:
    """The activity's type in lower case: a custom type's own id, else the standard TYPE_ID's name."""
    custom = str(raw.get("PROVIDER_TYPE_ID") or "")
    if str(raw.get("PROVIDER_ID") or "") == CUSTOM_PROVIDER and custom:
        return custom.lower()
    return ACTIVITY_TYPES.get(str(raw.get("TYPE_ID") or ""), "other")


def activity_fact(raw: Mapping[str, Any]) -> Fact:
    """A completed ``crm.activity`` as plan-vs-fact reports count it: done when it ended."""
    owner_is_deal = str(raw.get("OWNER_TYPE_ID") or "") == "2"
    return Fact(
        kind="activity",
        id=str(raw.get("ID")),
        user=str(raw["RESPONSIBLE_ID"]) if raw.get("RESPONSIBLE_ID") else None,
        at=parse_datetime(raw.get("END_TIME")),
        created_at=parse_datetime(raw.get("CREATED")),
        type=activity_type(raw),
        deal_id=str(raw["OWNER_ID"]) if owner_is_deal and raw.get("OWNER_ID") else None,
        fields=dict(raw),
    )


def planned_fact(raw: Mapping[str, Any]) -> Fact:
    """A ``crm.activity`` not completed yet, counted when it is scheduled to start."""
    return replace(activity_fact(raw), at=parse_datetime(raw.get("START_TIME")), status="planned")


def deal_fact(raw: Mapping[str, Any]) -> Fact:
    """A deal as plan-vs-fact reports count it: won or lost when it moved into that stage."""
    semantic = SEMANTICS.get(str(raw.get("STAGE_SEMANTIC_ID") or "P"), "open")
    return Fact(
        kind="deal",
        id=str(raw.get("ID")),
        user=str(raw["ASSIGNED_BY_ID"]) if raw.get("ASSIGNED_BY_ID") else None,
        at=parse_datetime(raw.get("MOVED_TIME")) if semantic != "open" else None,
        created_at=parse_datetime(raw.get("DATE_CREATE")),
        status=semantic,
        stage=str(raw.get("STAGE_ID") or ""),
        amount=to_decimal(raw.get("OPPORTUNITY")),
        deal_id=str(raw.get("ID")),
        # A deal without a company or contact says "0": no value, not a company numbered 0.
        fields={**raw, **{k: None for k in ("COMPANY_ID", "CONTACT_ID") if str(raw.get(k) or "0") == "0"}},
    )


def stage_fact(raw: Mapping[str, Any], owner: str | None) -> Fact:
    """A ``crm.stagehistory.list`` row of a deal: it entered ``STAGE_ID`` at ``CREATED_TIME``."""
    return Fact(
        kind="stage",
        id=str(raw.get("ID")),
        user=owner,
        at=parse_datetime(raw.get("CREATED_TIME")),
        stage=str(raw.get("STAGE_ID") or ""),
        status=SEMANTICS.get(str(raw.get("STAGE_SEMANTIC_ID") or "P"), "open"),
        deal_id=str(raw.get("OWNER_ID") or "") or None,
        fields=dict(raw),
    )


def user_from_b24(raw: Mapping[str, Any]) -> User:
    name = " ".join(str(raw.get(k) or "").strip() for k in ("NAME", "LAST_NAME")).strip()
    active = raw.get("ACTIVE")
    # ACTIVE is a real boolean in user.get; older portals sent "Y"/"N".
    return User(id=str(raw.get("ID")), name=name, active=active is True or active == "Y")


# Normalised UpdateDeal keys and the Bitrix24 fields they land in.
FIELD_NAMES = {"responsible_id": "ASSIGNED_BY_ID", "stage": "STAGE_ID", "title": "TITLE", "amount": "OPPORTUNITY"}


def deal_fields_to_b24(values: Mapping[str, Any]) -> dict[str, Any]:
    """Translate normalised UpdateDeal keys; any other key is already a Bitrix24 field name."""
    return {FIELD_NAMES.get(k, k): v for k, v in values.items()}
