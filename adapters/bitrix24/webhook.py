"""Bitrix24 outbound events: verify the application token and parse the form body.

A delivery looks like ``event=ONCRMDEALUPDATE&data[FIELDS][ID]=662&ts=1724140800&
auth[application_token]=…``. Only the deal id comes; the worker reads the deal itself.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Any

from adapters.base import IncomingRequest, WebhookParser
from adapters.phpform import FormKeyError, parse_php_form
from domain import Event, EventKind, EventSource
from domain.errors import MalformedWebhook, UnsupportedMediaType, WebhookForbidden
from domain.keys import hashed_webhook_key

DEAL_EVENTS = {
    "ONCRMDEALADD": EventKind.DEAL_CREATED,
    "ONCRMDEALUPDATE": EventKind.DEAL_UPDATED,
    "ONCRMDEALDELETE": EventKind.DEAL_DELETED,
}


class Bitrix24WebhookParser(WebhookParser):
    """Parses deliveries for one configured portal."""

    def __init__(self, crm: str, application_token: str) -> None:
        self.crm = crm
        self._token = application_token.encode()

    def parse(self, request: IncomingRequest, *, received_at: datetime) -> list[Event]:
        if request.form is None or not request.content_type.startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            raise UnsupportedMediaType("expected application/x-www-form-urlencoded")
        pairs = [(k, v) for k, values in request.form.items() for v in values]
        try:
            body = parse_php_form(pairs)
        except FormKeyError as exc:
            raise MalformedWebhook(str(exc)) from exc

        auth = body.get("auth")
        token = auth.get("application_token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise WebhookForbidden("missing application token")
        # Constant time, so the token cannot be guessed byte by byte from response times.
        if not hmac.compare_digest(token.encode(), self._token):
            raise WebhookForbidden("application token does not match")

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
                crm=self.crm,
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
