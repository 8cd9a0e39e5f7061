"""Bitrix24's deal and user shapes, translated to and from the normalised domain."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from domain import Deal, Location, StageSemantic, User

_SEMANTICS: dict[str, StageSemantic] = {"P": "open", "S": "won", "F": "lost"}
_POSTCODE = re.compile(r"\b(\d{6})\b")
_COORDS = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*;\s*(-?\d+(?:\.\d+)?)\s*$")
_DISTRICT_HINTS = ("р-н", "район", "мкр", "микрорайон", "district")
_STREET_HINTS = (
    "ул.",
    "улица",
    "пр-т",
    "проспект",
    "пер.",
    "переулок",
    "ш.",
    "шоссе",
    "наб.",
    "бульвар",
    "б-р",
    "пр.",
    "street",
    "st.",
)
_CITY_PREFIX = re.compile(r"^(г\.|город|гор\.)\s*", re.IGNORECASE)

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


def parse_address(value: Any) -> Location:
    """Parse an ``address`` user field (``"text|lat;lon|id"``) or plain address text.

    The text is split on commas: a six-digit part is the postcode, a part with a district
    or street word is that, the first remaining part is the city.
    """
    text = value if isinstance(value, str) else ""
    lat = lon = None
    if "|" in text:
        pieces = text.split("|")
        text = pieces[0]
        if len(pieces) > 1 and (m := _COORDS.match(pieces[1])):
            lat, lon = float(m.group(1)), float(m.group(2))
    postcode = ""
    city = district = street = ""
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low = part.lower()
        if m := _POSTCODE.search(part):
            if part == m.group(1):
                postcode = m.group(1)
                continue
            postcode = postcode or m.group(1)
        if not district and any(h in low for h in _DISTRICT_HINTS):
            district = part
        elif not street and any(low.startswith(h) or f" {h}" in low for h in _STREET_HINTS):
            street = part
        elif not city and not any(ch.isdigit() for ch in part):
            city = _CITY_PREFIX.sub("", part)
    return Location(text=text.strip(), city=city, district=district, street=street, postcode=postcode, lat=lat, lon=lon)


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
            city=_CITY_PREFIX.sub("", parts.get("city") or base.city),
            district=parts.get("district") or base.district,
            street=parts.get("street") or base.street,
            postcode=parts.get("postcode") or base.postcode,
            lat=base.lat,
            lon=base.lon,
        )
    semantic = _SEMANTICS.get(str(raw.get("STAGE_SEMANTIC_ID") or "P"), "open")
    return Deal(
        crm=crm,
        id=str(raw.get("ID")),
        title=str(raw.get("TITLE") or ""),
        stage=str(raw.get("STAGE_ID") or ""),
        stage_semantic=semantic,
        pipeline=str(raw.get("CATEGORY_ID") or "0"),
        responsible_id=str(raw["ASSIGNED_BY_ID"]) if raw.get("ASSIGNED_BY_ID") else None,
        amount=_decimal(raw.get("OPPORTUNITY")),
        currency=raw.get("CURRENCY_ID") or None,
        created_at=parse_datetime(raw.get("DATE_CREATE")),
        updated_at=parse_datetime(raw.get("DATE_MODIFY")),
        location=location,
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


def _decimal(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None
