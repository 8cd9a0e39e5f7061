"""Pipedrive's deal and user shapes (API v2, v1 and webhook bodies) in the normalised domain."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from adapters.addresses import parse_address
from adapters.values import to_decimal
from domain import Deal, Location, StageSemantic, User
from domain.facts import Fact

CUSTOM_KEY = re.compile(r"^[0-9a-f]{40}$")
DEAL_STATUSES: dict[str, StageSemantic] = {"open": "open", "won": "won", "lost": "lost"}
# Parts of Pipedrive's structured address custom field, by our Location names.
_ADDRESS_PARTS = {
    "city": "locality",
    "district": "sublocality",
    "street": "route",
    "postcode": "postal_code",
    "region": "admin_area_level_1",
}
# Normalised UpdateDeal keys and the Pipedrive deal fields they land in.
FIELD_NAMES = {
    "responsible_id": "owner_id",
    "stage": "stage_id",
    "title": "title",
    "amount": "value",
    "pipeline": "pipeline_id",
}
# Deal fields that hold ids: the API wants integers.
_INT_FIELDS = {"owner_id", "stage_id", "pipeline_id", "person_id", "org_id"}


def parse_time(value: Any) -> datetime | None:
    """Pipedrive times: ``2026-11-25T10:00:00Z`` (v2), ``2026-11-25 10:00:00`` (v1, UTC), or
    epoch seconds/milliseconds (webhook timestamps); always an aware UTC datetime."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > 100_000_000_000 else value  # milliseconds vs seconds
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.isdigit():
        return parse_time(int(text))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    # v1 times carry no offset but are UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC, as ``updated_since`` wants it."""
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def custom_value(value: Any) -> Any:
    """A custom field's plain value: webhooks v2 wrap it as ``{"type", "value"}`` (or ``id``)."""
    if isinstance(value, Mapping):
        if "value" in value:
            return value["value"]
        if "id" in value and "type" in value:
            return value["id"]
        if "values" in value:
            return [v.get("id") if isinstance(v, Mapping) else v for v in value["values"] or []]
    return value


def flatten(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A deal's fields under Pipedrive's names, custom fields lifted to the top level by key.

    v2 nests custom fields under ``custom_fields``; v1 already has them at the top level.
    """
    out: dict[str, Any] = {k: v for k, v in raw.items() if k != "custom_fields"}
    custom = raw.get("custom_fields")
    if isinstance(custom, Mapping):
        for key, value in custom.items():
            out[str(key)] = custom_value(value)
    if "owner_id" not in out and "user_id" in out:  # v1 calls the owner user_id
        owner = out["user_id"]
        out["owner_id"] = owner.get("id") if isinstance(owner, Mapping) else owner
    return out


def location_from(
    fields: Mapping[str, Any], raw_custom: Mapping[str, Any], location_fields: Mapping[str, str]
) -> Location | None:
    """The deal's location from the configured custom fields: an address field (text or
    Pipedrive's structured address) and/or separate part fields."""
    if not location_fields:
        return None
    base = Location()
    structured: Mapping[str, Any] = {}
    if "address" in location_fields:
        key = location_fields["address"]
        value = raw_custom.get(key, fields.get(key))
        if isinstance(value, Mapping):
            structured = value
            text = value.get("formatted_address") or value.get("value") or ""
            base = parse_address(text)
        else:
            base = parse_address(value)
    parts = {k: str(fields.get(f) or "").strip() for k, f in location_fields.items() if k != "address"}
    for name, key in _ADDRESS_PARTS.items():
        if not parts.get(name) and structured.get(key):
            parts[name] = str(structured[key]).strip()
    return Location(
        text=base.text,
        region=parts.get("region") or base.region,
        city=parts.get("city") or base.city,
        district=parts.get("district") or base.district,
        street=parts.get("street") or base.street,
        postcode=parts.get("postcode") or base.postcode,
        lat=base.lat,
        lon=base.lon,
    )


def deal_from_pd(crm: str, raw: Mapping[str, Any], location_fields: Mapping[str, str]) -> Deal:
    """Build the normalised deal from an API v2 (or v1, or webhook) deal object."""
    fields = flatten(raw)
    custom = raw.get("custom_fields") if isinstance(raw.get("custom_fields"), Mapping) else raw
    status = str(fields.get("status") or "open")
    owner = fields.get("owner_id")
    return Deal(
        crm=crm,
        id=str(fields.get("id")),
        title=str(fields.get("title") or ""),
        stage=_id_text(fields.get("stage_id")),
        # Won and lost are a status in Pipedrive, not a stage: the deal keeps its stage.
        stage_semantic=DEAL_STATUSES.get(status, "open"),
        pipeline=_id_text(fields.get("pipeline_id")),
        responsible_id=_id_text(owner) or None,
        amount=to_decimal(fields.get("value")),
        currency=fields.get("currency") or None,
        created_at=parse_time(fields.get("add_time")),
        updated_at=parse_time(fields.get("update_time")),
        location=location_from(fields, custom or {}, location_fields),
        fields=fields,
    )


def normalised_previous(previous: Mapping[str, Any]) -> dict[str, Any]:
    """A webhook's ``previous`` (changed fields only) under Pipedrive's names plus the
    normalised ones the rules use (``stage``, ``responsible_id``, ``stage_semantic`` ...)."""
    out = flatten(previous)
    if "user_id" in previous and "owner_id" not in previous:
        out.pop("user_id", None)
    aliases = {
        "stage_id": "stage",
        "owner_id": "responsible_id",
        "title": "title",
        "value": "amount",
        "pipeline_id": "pipeline",
    }
    for raw_key, name in aliases.items():
        if raw_key in out:
            value = out[raw_key]
            out[name] = str(value) if value is not None and raw_key != "title" else value
    if "status" in out:
        out["stage_semantic"] = DEAL_STATUSES.get(str(out["status"]), "open")
    return out


def user_from_pd(raw: Mapping[str, Any]) -> User:
    """A ``/v1/users`` row."""
    active = raw.get("active_flag")
    return User(id=str(raw.get("id")), name=str(raw.get("name") or ""), active=active is True or active == 1)


def deal_fields_to_pd(values: Mapping[str, Any]) -> dict[str, Any]:
    """Translate normalised UpdateDeal keys into a v2 PATCH body; 40-hex keys are custom fields."""
    body: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for key, value in values.items():
        name = FIELD_NAMES.get(key, key)
        if CUSTOM_KEY.match(name):
            custom[name] = value
        elif name in _INT_FIELDS and value not in (None, ""):
            body[name] = int(value)
        elif name == "value" and value is not None:
            body[name] = float(value) if not isinstance(value, int) else value
        else:
            body[name] = value
    if custom:
        body["custom_fields"] = custom
    return body


def _id_text(value: Any) -> str:
    if isinstance(value, Mapping):  # v1 expands ids into objects
        value = value.get("id", value.get("value"))
    return "" if value is None or value == "" else str(value)


def activity_fact(raw: Mapping[str, Any]) -> Fact:
    """An activity marked done (v2), as plan-vs-fact reports count it."""
    return Fact(
        kind="activity",
        id=str(raw.get("id")),
        user=_id_text(raw.get("owner_id")) or None,
        at=parse_time(raw.get("marked_as_done_time")),
        created_at=parse_time(raw.get("add_time")),
        type=str(raw.get("type") or "").lower(),
        deal_id=_id_text(raw.get("deal_id")) or None,
        fields=dict(raw),
    )


def planned_fact(raw: Mapping[str, Any]) -> Fact:
    """An activity not done yet (v2), counted when it is due: ``due_date`` and ``due_time``
    (UTC). An all-day activity has no time; noon UTC keeps it on its date in any zone from
    UTC-11 to UTC+11, which is what a day's plan asks of it."""
    day, clock = str(raw.get("due_date") or ""), str(raw.get("due_time") or "")
    at = parse_time(f"{day}T{clock[:5] or '12:00'}:00Z") if day else None
    return replace(activity_fact(raw), at=at, status="planned")


def deal_fact(raw: Mapping[str, Any]) -> Fact:
    """A deal (v2), as plan-vs-fact reports count it: closed at its won or lost time."""
    fields = flatten(raw)
    status = str(fields.get("status") or "open")
    closed = fields.get("won_time") if status == "won" else fields.get("lost_time") if status == "lost" else None
    return Fact(
        kind="deal",
        id=str(fields.get("id")),
        user=_id_text(fields.get("owner_id")) or None,
        at=parse_time(closed),
        created_at=parse_time(fields.get("add_time")),
        status=status if status in DEAL_STATUSES else "open",
        stage=_id_text(fields.get("stage_id")),
        amount=to_decimal(fields.get("value")),
        deal_id=str(fields.get("id")),
        fields=fields,
    )
