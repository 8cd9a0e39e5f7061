"""The ``crms.<name>`` block for a Bitrix24 portal."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from domain.fields import HttpUrl, Id, Span

LOCATION_KEYS = ("address", "region", "city", "district", "street", "postcode")


class Bitrix24Settings(Schema):
    type = fields.String(required=True)
    webhook_url = HttpUrl(
        required=True, metadata={"doc": "inbound webhook URL https://PORTAL/rest/USER/CODE/", "secret": True}
    )
    application_token = fields.String(
        required=True,
        validate=validate.Length(min=8),
        metadata={"doc": "outbound webhook's application token", "secret": True},
    )
    poll_every = Span(load_default=300.0, metadata={"doc": "how often to poll changed deals"})
    poll_overlap = Span(load_default=120.0, metadata={"doc": "re-read this far behind the cursor"})
    rate = fields.Float(load_default=2.0, validate=validate.Range(min=0.1), metadata={"doc": "requests per second"})
    burst = fields.Float(load_default=50.0, validate=validate.Range(min=1), metadata={"doc": "bucket size"})
    timeout = Span(load_default=30.0)
    max_attempts = fields.Integer(load_default=5, validate=validate.Range(min=1, max=20))
    backoff_initial = Span(load_default=0.5)
    location_fields = fields.Dict(
        keys=fields.String(validate=validate.OneOf(LOCATION_KEYS)),
        values=fields.String(),
        load_default=dict,
        metadata={"doc": "user fields holding the address or its parts"},
    )
    lost_stage = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        load_default=dict,
        metadata={"doc": "pipeline (CATEGORY_ID) -> stage id for 'lost'"},
    )
    won_stage = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    task_created_by = Id(load_default=None, allow_none=True)
