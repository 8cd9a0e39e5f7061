"""The ``crms.<name>`` block for a Bitrix24 portal: its settings and the schema that loads them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from marshmallow import fields, validate

from adapters.contracts import CrmSettings, SettingsSchema, defaults_from
from domain.fields import HttpUrl, Id, Span

LOCATION_KEYS = ("address", "region", "city", "district", "street", "postcode")


@dataclass(frozen=True, kw_only=True)
class Bitrix24Settings(CrmSettings):
    """One portal reached through an inbound webhook URL."""

    type: str = "bitrix24"
    webhook_url: str
    application_token: str
    poll_every: float | None = 300.0
    poll_overlap: float = 120.0
    rate: float = 2.0
    burst: float = 50.0
    timeout: float = 30.0
    max_attempts: int = 5
    backoff_initial: float = 0.5
    location_fields: Mapping[str, str] = field(default_factory=dict)
    lost_stage: Mapping[str, str] = field(default_factory=dict)
    won_stage: Mapping[str, str] = field(default_factory=dict)
    task_created_by: str | None = None
    stages: tuple[str, ...] = ()


@defaults_from(Bitrix24Settings)
class Bitrix24SettingsSchema(SettingsSchema):
    type = fields.String(required=True)
    webhook_url = HttpUrl(
        required=True, metadata={"doc": "inbound webhook URL https://PORTAL/rest/USER/CODE/", "secret": True}
    )
    application_token = fields.String(
        required=True,
        validate=validate.Length(min=8),
        metadata={"doc": "outbound webhook's application token", "secret": True},
    )
    poll_every = Span(metadata={"doc": "how often to poll changed deals"})
    poll_overlap = Span(metadata={"doc": "re-read this far behind the cursor"})
    initial_lookback = Span(
        allow_zero=True,
        metadata={
            "doc": "on the very first poll (no cursor yet) read changes this far back; 0 starts from now, "
            "so the rules do not act on yesterday's deals when the connector is switched on"
        },
    )
    rate = fields.Float(validate=validate.Range(min=0.1), metadata={"doc": "requests per second"})
    burst = fields.Float(validate=validate.Range(min=1), metadata={"doc": "bucket size"})
    timeout = Span()
    max_attempts = fields.Integer(validate=validate.Range(min=1, max=20))
    backoff_initial = Span()
    location_fields = fields.Dict(
        keys=fields.String(validate=validate.OneOf(LOCATION_KEYS)),
        values=fields.String(),
        metadata={"doc": "user fields holding the address or its parts"},
    )
    lost_stage = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"doc": "pipeline (CATEGORY_ID) -> stage id for 'lost'"},
    )
    won_stage = fields.Dict(keys=fields.String(), values=fields.String())
    task_created_by = Id(allow_none=True)
    stages = fields.List(
        fields.String(),
        metadata={
            "doc": "the stage ids of the pipelines the rules use; given, check refuses a stage not among them "
            "(check --online reads them from the CRM instead)"
        },
    )
