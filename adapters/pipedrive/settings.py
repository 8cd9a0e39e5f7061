"""The ``crms.<name>`` block for a Pipedrive company: its settings and the schema that loads them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError, fields, post_load, validate

from adapters.contracts import CrmSettings, SettingsSchema, defaults_from
from domain.fields import HttpUrl, Id, Span

LOCATION_KEYS = ("address", "region", "city", "district", "street", "postcode")
# The former leaky bucket's defaults (burst + 2 * rate = Lite's 20 per 2 s), for configs that still
# name rate or burst.
LEGACY_RATE = 5.0
LEGACY_BURST = 10.0
_CUSTOM_KEY = validate.Regexp(r"^[0-9a-f]{40}$", error="a custom field key: 40 lowercase hex characters")


@dataclass(frozen=True, kw_only=True)
class PipedriveSettings(CrmSettings):
    """One Pipedrive company reached with an API token."""

    type: str = "pipedrive"
    base_url: str
    company_domain: str | None = None
    api_token: str
    webhook_user: str
    webhook_password: str
    skip_own_changes: bool = True
    own_user_id: str | None = None
    poll_every: float | None = 300.0
    poll_overlap: float = 120.0
    burst_limit: int = 20
    window: float = 2.0
    rate: float | None = None
    burst: float | None = None
    timeout: float = 30.0
    max_attempts: int = 5
    backoff_initial: float = 0.5
    location_fields: Mapping[str, str] = field(default_factory=dict)
    stages: tuple[str, ...] = ()


@defaults_from(PipedriveSettings)
class PipedriveSettingsSchema(SettingsSchema):
    """Settings of one Pipedrive company reached with an API token.

    The burst limit is counted per token over a rolling 2 s window (20/40/100/120 requests
    for Lite/Growth/Premium/Ultimate). The client mirrors it: at most ``burst_limit``
    requests in any ``window``, each counted from its send until ``window`` after its answer,
    so it never exceeds the limit however many threads share it; the server's rate headers
    make it leave room for other clients of the same token. Set ``burst_limit`` to your plan's.
    ``rate`` and ``burst`` are the former leaky bucket: given, it paces the calls on top of
    the window (at most ``burst + 2 * rate`` in any 2 s); not given, the window alone paces.
    """

    type = fields.String(required=True)
    base_url = HttpUrl(metadata={"doc": "https://COMPANY.pipedrive.com (or company_domain)"})
    company_domain = fields.String(
        allow_none=True,
        validate=validate.Regexp(r"^[a-z0-9-]+$"),
        metadata={"doc": "COMPANY of COMPANY.pipedrive.com, instead of base_url"},
    )
    api_token = fields.String(
        required=True,
        validate=validate.Length(min=8),
        metadata={"doc": "personal API token (x-api-token)", "secret": True},
    )
    webhook_user = fields.String(
        required=True,
        validate=validate.Length(min=1),
        metadata={"doc": "HTTP Basic user the webhooks are registered with"},
    )
    webhook_password = fields.String(
        required=True,
        validate=validate.Length(min=8),
        metadata={"doc": "HTTP Basic password of the webhooks", "secret": True},
    )
    skip_own_changes = fields.Boolean(metadata={"doc": "ignore change webhooks with change_source 'api' (our writes)"})
    own_user_id = Id(allow_none=True, metadata={"doc": "the API token's user: only its API changes are skipped"})
    poll_every = Span(metadata={"doc": "how often to poll changed deals"})
    poll_overlap = Span(metadata={"doc": "re-read this far behind the cursor"})
    initial_lookback = Span(
        allow_zero=True,
        metadata={
            "doc": "on the very first poll (no cursor yet) read changes this far back; 0 starts from now, "
            "so the rules do not act on yesterday's deals when the connector is switched on"
        },
    )
    burst_limit = fields.Integer(
        validate=validate.Range(min=1),
        metadata={
            "doc": "at most this many requests in any `window` (the plan's burst "
            "limit per API token: Lite 20, Growth 40, Premium 100, "
            "Ultimate 120)"
        },
    )
    window = Span(metadata={"doc": "the rolling window the burst limit is counted over"})
    rate = fields.Float(
        allow_none=True,
        validate=validate.Range(min=0.1),
        metadata={
            "doc": f"deprecated: also pace calls with a leaky bucket of this many requests "
            f"per second (given rate or burst, the other defaults to "
            f"{LEGACY_RATE:g}/s or {LEGACY_BURST:g})"
        },
    )
    burst = fields.Float(
        allow_none=True,
        validate=validate.Range(min=1),
        metadata={"doc": "deprecated: that bucket's size"},
    )
    timeout = Span()
    max_attempts = fields.Integer(validate=validate.Range(min=1, max=20))
    backoff_initial = Span()
    location_fields = fields.Dict(
        keys=fields.String(validate=validate.OneOf(LOCATION_KEYS)),
        values=fields.String(validate=_CUSTOM_KEY),
        metadata={"doc": "custom fields (hash keys) holding the address or its parts"},
    )
    stages = fields.List(
        fields.String(),
        metadata={
            "doc": "the stage ids of the pipelines the rules use; given, check refuses a stage not among them "
            "(check --online reads them from the CRM instead)"
        },
    )

    @post_load
    def _base_url(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if not data.get("base_url"):
            if not data.get("company_domain"):
                raise ValidationError({"base_url": ["give base_url or company_domain"]})
            data["base_url"] = f"https://{data['company_domain']}.pipedrive.com"
        data["base_url"] = str(data["base_url"]).rstrip("/")
        return data

    @post_load
    def _legacy_bucket(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        # A config naming one of rate or burst keeps the pacing it had: the other takes the
        # former default. Naming neither leaves both None: the window alone paces.
        if data.get("rate") is not None or data.get("burst") is not None:
            data["rate"] = LEGACY_RATE if data.get("rate") is None else data["rate"]
            data["burst"] = LEGACY_BURST if data.get("burst") is None else data["burst"]
        return data
