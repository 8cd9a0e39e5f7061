"""Bitrix24 outbound events: where the application token is, and the form body parsed.

A delivery looks like ``event=ONCRMDEALUPDATE&data[FIELDS][ID]=662&ts=1724140800&
auth[application_token]=…``. Only the deal id comes; the worker reads the deal itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapters.contracts import IncomingRequest
from adapters.phpform import FormKeyError, parse_php_form
from domain import Event, EventKind, EventSource
from domain.errors import MalformedWebhook, UnsupportedMediaType
from domain.keys import hashed_webhook_key

DEAL_EVENTS = {
    "ONCRMDEALADD": EventKind.DEAL_CREATED,
    "ONCRMDEALUPDATE": EventKind.DEAL_UPDATED,
    "ONCRMDEALDELETE": EventKind.DEAL_DELETED,
}


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
TOKEN_FIELD = "auth[application_token]"


def form_token(request: IncomingRequest) -> str | None:
    """The application token a delivery presents (``auth[application_token]``, the last one
    given, as PHP reads a repeated key); a body that is not a form is refused (415)."""
    if request.form is None or not request.content_type.startswith(_FORM_TYPES):
        raise UnsupportedMediaType("expected application/x-www-form-urlencoded")
    values = request.form.get(TOKEN_FIELD)
    return values[-1] if values else None


def parse_delivery(crm: str, request: IncomingRequest, *, received_at: datetime) -> list[Event]:
    """The deal event of a validated delivery (none for an event we do not follow)."""
    if request.form is None:
        raise UnsupportedMediaType("expected application/x-www-form-urlencoded")
    pairs = [(k, v) for k, values in request.form.items() for v in values]
    try:
        body = parse_php_form(pairs)
    except FormKeyError as exc:
        raise MalformedWebhook(str(exc)) from exc

    event_name = body.get("event")
    if not isinstance(event_name, str) or not event_name:
        raise MalformedWebhook("no event name")
    kind = DEAL_EVENTS.get(event_name.upper())
    if kind is None:
        return []  # an event we do not subscribe to: acknowledged, nothing to do

    data = body.get("data")
    fields = data.get("FIELDS") if isinstance(data, dict) else None
    deal_id = fields.get("ID") if isinstance(fields, dict) else None
    if not isinstance(deal_id, str) or not deal_id.isdigit():
        raise MalformedWebhook("data[FIELDS][ID] must be a numeric deal id")

    ts = body.get("ts")
    occurred = received_at
    if isinstance(ts, str) and ts.isdigit():
        try:
            occurred = datetime.fromtimestamp(int(ts), tz=UTC)
        except (OverflowError, ValueError, OSError) as exc:
            raise MalformedWebhook("ts is out of range") from exc

    # Bitrix24 gives no event id: the same event, deal, handler and second is a duplicate.
    # Without a stamp the second it arrived stands in, or every later update of the deal
    # would look like a duplicate of the first.
    second = str(int(occurred.timestamp()))
    ident = (event_name.upper(), deal_id, second, str(body.get("event_handler_id") or ""))
    return [
        Event(
            crm=crm,
            kind=kind,
            deal_id=deal_id,
            occurred_at=occurred,
            dedup_key=hashed_webhook_key("b24", ident),
            source=EventSource.WEBHOOK,
            raw=_without_secrets(body),
        )
    ]


def _without_secrets(body: dict[str, Any]) -> dict[str, Any]:
    clean = dict(body)
    auth = clean.get("auth")
    if isinstance(auth, dict):
        clean["auth"] = {
            k: v for k, v in auth.items() if k not in {"application_token", "access_token", "refresh_token"}
        }
    return clean
