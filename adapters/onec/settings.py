"""The ``crms.<name>`` block for a 1C:Enterprise base published through the standard OData interface."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from adapters.onec.mapping import ENTITY_KEYS, PROFILES, build_entities
from domain.fields import HttpUrl, Span

LINK_KINDS = ("comment", "deal_field", "inn")
DEFAULT_LINK = [{"by": "comment", "pattern": r"(?:сделка|deal)\s*#?(\d+)"}]


class OneCSettings(Schema):
    type = fields.String(required=True)
    base_url = HttpUrl(required=True, metadata={"doc": "http://HOST/BASE/odata/standard.odata/"})
    username = fields.String(
        required=True,
        validate=validate.Length(min=1),
        metadata={"doc": "infobase user with the OData role (Cyrillic is fine)"},
    )
    password = fields.String(required=True, metadata={"doc": "infobase password", "secret": True})
    deal_crm = fields.String(
        required=True,
        validate=validate.Regexp(r"^[a-z0-9_-]+$"),
        metadata={"doc": "the configured CRM whose deals the documents belong to"},
    )
    profile = fields.String(
        load_default="trade_11",
        validate=validate.OneOf(tuple(PROFILES)),
        metadata={"doc": "default entity sets and fields: trade_11 or accounting_3"},
    )
    entities = fields.Dict(
        keys=fields.String(validate=validate.OneOf(ENTITY_KEYS)),
        values=fields.Raw(allow_none=True),
        load_default=dict,
        metadata={
            "doc": "overrides per entity (invoice, payment, cash, order, "
            "counterparty, order_state); null switches one off"
        },
    )
    link = fields.List(
        fields.Dict(),
        load_default=lambda: [dict(d) for d in DEFAULT_LINK],
        metadata={"doc": "ordered linking strategies: comment, deal_field, inn"},
    )
    poll_every = Span(load_default=60.0, metadata={"doc": "how often to read new and changed documents"})
    poll_overlap = Span(load_default=600.0, metadata={"doc": "re-read this far behind the cursor"})
    recheck = Span(
        load_default=3 * 86400.0,
        metadata={
            "doc": "always re-read documents dated this far back: 1C's Date is editable and "
            "documents are often posted (or bank statements loaded) days later"
        },
    )
    page_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=5000))
    timezone = fields.String(load_default="Europe/Moscow", metadata={"doc": "the base's wall-clock zone"})
    currency = fields.String(load_default="RUB", metadata={"doc": "currency of documents in the base currency"})
    currencies = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        load_default=dict,
        metadata={"doc": "Catalog_Валюты Ref_Key -> ISO code, for other currencies"},
    )
    shipment_statuses = fields.List(
        fields.String(),
        load_default=lambda: ["КОтгрузке"],
        metadata={"doc": "order statuses meaning 'ready for shipment'"},
    )
    contact_kinds = fields.Dict(
        keys=fields.String(validate=validate.OneOf(("phone", "email"))),
        values=fields.String(),
        load_default=dict,
        metadata={
            "doc": "Вид_Key of the base's phone/e-mail contact kinds; without "
            "them a new counterparty's phone and e-mail go to its comment"
        },
    )
    timeout = Span(load_default=30.0)
    max_attempts = fields.Integer(load_default=5, validate=validate.Range(min=1, max=20))
    backoff_initial = Span(load_default=0.5)

    @validates_schema
    def check(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Zone, entity overrides and link strategies are checked here; ``deal_crm`` naming another
        configured CRM needs the whole config (connector/config/schema.py)."""
        errors: dict[str, list[str]] = {}
        try:
            ZoneInfo(str(data.get("timezone")))
        except (ZoneInfoNotFoundError, ValueError):
            errors["timezone"] = [f"unknown time zone {data.get('timezone')!r}"]
        try:
            build_entities(data.get("profile", "trade_11"), data.get("entities") or {})
        except ValueError as exc:
            errors["entities"] = [str(exc)]
        for i, strategy in enumerate(data.get("link") or []):
            problem = _link_problem(strategy)
            if problem:
                errors[f"link.{i}"] = [problem]
        if errors:
            raise ValidationError(errors)


def _link_problem(strategy: dict[str, Any]) -> str | None:
    by = strategy.get("by")
    if by not in LINK_KINDS:
        return f"by: one of {', '.join(LINK_KINDS)}"
    allowed = {"comment": {"by", "pattern"}, "deal_field": {"by", "field", "match"}, "inn": {"by", "field"}}[by]
    extra = set(strategy) - allowed
    if extra:
        return f"unknown keys {', '.join(sorted(extra))}; allowed: {', '.join(sorted(allowed))}"
    if by == "comment":
        try:
            regex = re.compile(str(strategy.get("pattern") or DEFAULT_LINK[0]["pattern"]), re.IGNORECASE)
        except re.error as exc:
            return f"bad pattern: {exc}"
        if regex.groups < 1:
            return "pattern needs a group capturing the deal id"
    elif not isinstance(strategy.get("field"), str) or not strategy["field"]:
        return "field: the deal field to search"
    if by == "deal_field" and strategy.get("match", "any") not in ("document", "counterparty", "any"):
        return "match: document, counterparty or any"
    return None
