"""The ``crms.<name>`` block for a 1C:Enterprise base published through the standard OData
interface: its settings, the schema that loads them, and the check against the other CRMs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import ValidationError, fields, validate, validates_schema

from adapters.contracts import ConfiguredCrm, CrmSettings, DealSearch, DealSource, SettingsSchema, defaults_from
from adapters.onec.mapping import ENTITY_KEYS, PROFILES, build_entities
from domain.fields import HttpUrl, Span

LINK_KINDS = ("comment", "deal_field", "inn")
DEFAULT_PATTERN = r"(?:сделка|deal)\s*#?(\d+)"


@dataclass(frozen=True, kw_only=True)
class OneCSettings(CrmSettings):
    """One 1C base: where its documents come from, and which CRM's deals they belong to."""

    type: str = "onec"
    base_url: str
    username: str
    password: str
    deal_crm: str
    profile: str = "trade_11"
    entities: Mapping[str, Any] = field(default_factory=dict)
    link: tuple[Mapping[str, Any], ...] = field(
        default_factory=lambda: ({"by": "comment", "pattern": DEFAULT_PATTERN},)
    )
    poll_every: float | None = 60.0
    poll_overlap: float = 600.0
    recheck: float = 3 * 86400.0
    page_size: int = 100
    timezone: str = "Europe/Moscow"
    currency: str = "RUB"
    currencies: Mapping[str, str] = field(default_factory=dict)
    shipment_statuses: tuple[str, ...] = ("КОтгрузке",)
    contact_kinds: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    max_attempts: int = 5
    backoff_initial: float = 0.5


@defaults_from(OneCSettings)
class OneCSettingsSchema(SettingsSchema):
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
        validate=validate.OneOf(tuple(PROFILES)),
        metadata={"doc": "default entity sets and fields: trade_11 or accounting_3"},
    )
    entities = fields.Dict(
        keys=fields.String(validate=validate.OneOf(ENTITY_KEYS)),
        values=fields.Raw(allow_none=True),
        metadata={
            "doc": "overrides per entity (invoice, payment, cash, order, "
            "counterparty, order_state); null switches one off"
        },
    )
    link = fields.List(
        fields.Dict(),
        metadata={"doc": "ordered linking strategies: comment, deal_field, inn"},
    )
    poll_every = Span(metadata={"doc": "how often to read new and changed documents"})
    poll_overlap = Span(metadata={"doc": "re-read this far behind the cursor"})
    recheck = Span(
        metadata={
            "doc": "always re-read documents dated this far back: 1C's Date is editable and "
            "documents are often posted (or bank statements loaded) days later"
        },
    )
    page_size = fields.Integer(validate=validate.Range(min=1, max=5000))
    timezone = fields.String(metadata={"doc": "the base's wall-clock zone"})
    currency = fields.String(metadata={"doc": "currency of documents in the base currency"})
    currencies = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"doc": "Catalog_Валюты Ref_Key -> ISO code, for other currencies"},
    )
    shipment_statuses = fields.List(
        fields.String(),
        metadata={"doc": "order statuses meaning 'ready for shipment'"},
    )
    contact_kinds = fields.Dict(
        keys=fields.String(validate=validate.OneOf(("phone", "email"))),
        values=fields.String(),
        metadata={
            "doc": "Вид_Key of the base's phone/e-mail contact kinds; without "
            "them a new counterparty's phone and e-mail go to its comment"
        },
    )
    timeout = Span()
    max_attempts = fields.Integer(validate=validate.Range(min=1, max=20))
    backoff_initial = Span()

    @validates_schema
    def check(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Zone, entity overrides and link strategies; ``deal_crm`` needs the other CRMs (``cross_check``)."""
        errors: dict[str, list[str]] = {}
        try:
            ZoneInfo(str(data.get("timezone")))
        except (ZoneInfoNotFoundError, ValueError):
            errors["timezone"] = [f"unknown time zone {data.get('timezone')!r}"]
        if "profile" in data:
            try:
                build_entities(data["profile"], data.get("entities") or {})
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
            regex = re.compile(str(strategy.get("pattern") or DEFAULT_PATTERN), re.IGNORECASE)
        except re.error as exc:
            return f"bad pattern: {exc}"
        if regex.groups < 1:
            return "pattern needs a group capturing the deal id"
    elif not isinstance(strategy.get("field"), str) or not strategy["field"]:
        return "field: the deal field to search"
    if by == "deal_field" and strategy.get("match", "any") not in ("document", "counterparty", "any"):
        return "match: document, counterparty or any"
    return None


def cross_check(name: str, settings: OneCSettings, crms: Mapping[str, ConfiguredCrm]) -> dict[str, list[str]]:
    """The documents belong to the deals of ``deal_crm``: a configured CRM that keeps deals,
    and that can search them by a field when a link strategy searches."""
    target = crms.get(settings.deal_crm)
    if target is None:
        return {"deal_crm": [f"no CRM named {settings.deal_crm!r} under crms"]}
    if not target.can(DealSource):
        return {"deal_crm": [f"{settings.deal_crm!r} keeps no deals (type {target.settings.type})"]}
    errors: dict[str, list[str]] = {}
    if not target.can(DealSearch):
        for i, strategy in enumerate(settings.link):
            if strategy.get("by") in ("deal_field", "inn"):
                errors[f"link.{i}"] = [f"{settings.deal_crm!r} cannot search deals by a field"]
    return errors
