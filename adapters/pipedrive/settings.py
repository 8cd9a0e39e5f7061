"""The ``crms.<name>`` block for a Pipedrive company."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate

from adapters.fields import HttpUrl, Id, Span

LOCATION_KEYS = ("address", "region", "city", "district", "street", "postcode")
_CUSTOM_KEY = validate.Regexp(r"^[0-9a-f]{40}$", error="a custom field key: 40 lowercase hex characters")


class PipedriveSettings(Schema):
    """Settings of one Pipedrive company reached with an API token.

    The burst limit is counted per token over a rolling 2 s window (20/40/100/120 requests
    for Lite/Growth/Premium/Ultimate). Our leaky bucket lets through at most
    ``burst + 2 * rate`` requests in any 2 s, so the defaults (5/s, bucket 10) stay under
    Lite's 20; raise both for a bigger plan.
    """

    type = fields.String(required=True)
    base_url = HttpUrl(load_default=None, metadata={"doc": "https://COMPANY.pipedrive.com (or company_domain)"})
    company_domain = fields.String(load_default=None, validate=validate.Regexp(r"^[a-z0-9-]+$"),
                                   metadata={"doc": "COMPANY of COMPANY.pipedrive.com, instead of base_url"})
    api_token = fields.String(required=True, validate=validate.Length(min=8),
                              metadata={"doc": "personal API token (x-api-token)", "secret": True})
    webhook_user = fields.String(required=True, validate=validate.Length(min=1),
                                 metadata={"doc": "HTTP Basic user the webhooks are registered with"})
    webhook_password = fields.String(required=True, validate=validate.Length(min=8),
                                     metadata={"doc": "HTTP Basic password of the webhooks", "secret": True})
    skip_own_changes = fields.Boolean(load_default=True,
                                      metadata={"doc": "ignore change webhooks with change_source 'api' (our writes)"})
    own_user_id = Id(load_default=None, allow_none=True,
                     metadata={"doc": "the API token's user: only its API changes are skipped"})
    poll_every = Span(load_default=300.0, metadata={"doc": "how often to poll changed deals"})
    poll_overlap = Span(load_default=120.0, metadata={"doc": "re-read this far behind the cursor"})
    rate = fields.Float(load_default=5.0, validate=validate.Range(min=0.1), metadata={"doc": "requests per second"})
    burst = fields.Float(load_default=10.0, validate=validate.Range(min=1), metadata={"doc": "bucket size"})
    timeout = Span(load_default=30.0)
    max_attempts = fields.Integer(load_default=5, validate=validate.Range(min=1, max=20))
    backoff_initial = Span(load_default=0.5)
    location_fields = fields.Dict(keys=fields.String(validate=validate.OneOf(LOCATION_KEYS)),
                                  values=fields.String(validate=_CUSTOM_KEY), load_default=dict,
                                  metadata={"doc": "custom fields (hash keys) holding the address or its parts"})

    @post_load
    def _base_url(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if not data.get("base_url"):
            if not data.get("company_domain"):
                raise ValidationError({"base_url": ["give base_url or company_domain"]})
            data["base_url"] = f"https://{data['company_domain']}.pipedrive.com"
        data["base_url"] = str(data["base_url"]).rstrip("/")
        return data
