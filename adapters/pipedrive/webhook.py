"""Pipedrive webhook deliveries (v2 and v1 bodies).

Pipedrive signs nothing: the only proof a delivery is genuine is the Basic credentials
the webhook was registered with (the adapter validates them with the shared
``BasicAuthValidator`` before anything here runs). A v2 delivery has its own
id (``meta.id``, kept across retries), which is the dedup key; v1 has none, so the event,
object id and timestamp stand in for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from adapters.contracts import IncomingRequest
from adapters.pipedrive.mapping import flatten, normalised_previous, parse_time
from domain import Event, EventKind, EventSource
from domain.errors import MalformedWebhook
from domain.keys import hashed_webhook_key, webhook_key

# v2 actions, and the v1 names of the same.
ACTIONS = {
    "create": EventKind.DEAL_CREATED,
    "added": EventKind.DEAL_CREATED,
    "change": EventKind.DEAL_UPDATED,
    "updated": EventKind.DEAL_UPDATED,
    "merged": EventKind.DEAL_UPDATED,
    "delete": EventKind.DEAL_DELETED,
    "deleted": EventKind.DEAL_DELETED,
}


class DeliveryParser:
    """Parses the validated deliveries of one configured Pipedrive company."""

    def __init__(self, crm: str, *, skip_own_changes: bool = True, own_user_id: str | None = None) -> None:
        self.crm = crm
        self.skip_own_changes = skip_own_changes
        self.own_user_id = own_user_id

    def parse(self, request: IncomingRequest, *, received_at: datetime) -> list[Event]:
        """A v2 or v1 body as at most one deal event."""
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedWebhook("the body is not JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("meta"), dict):
            raise MalformedWebhook("expected a JSON object with meta")
        meta: dict[str, Any] = body["meta"]
        if str(meta.get("version", "")) == "2.0" or "entity" in meta:
            return self._v2(body, meta, received_at)
        if body.get("v") == 1 or "object" in meta:
            return self._v1(body, meta, received_at)
        raise MalformedWebhook("neither a v2 nor a v1 webhook body")

    def _v2(self, body: dict[str, Any], meta: dict[str, Any], received_at: datetime) -> list[Event]:
        if meta.get("entity") != "deal":
            return []  # activities, notes, persons: acknowledged, nothing to do
        kind = ACTIONS.get(str(meta.get("action") or ""))
        if kind is None:
            raise MalformedWebhook("meta.action must be create, change or delete")
        deal_id = _deal_id(meta.get("entity_id"))
        delivery = meta.get("id")
        if not isinstance(delivery, str) or not delivery.strip():
            raise MalformedWebhook("meta.id is missing")
        if self._own_change(meta, kind):
            return []
        data, previous = body.get("data"), body.get("previous")
        if data is not None and not isinstance(data, dict):
            raise MalformedWebhook("data must be an object or null")
        if previous is not None and not isinstance(previous, dict):
            raise MalformedWebhook("previous must be an object or null")
        if kind == EventKind.DEAL_UPDATED and data is None:
            raise MalformedWebhook("a change carries data")
        occurred = _occurred(meta.get("timestamp"), received_at)
        # v2 previous holds only the fields that changed; a delete's previous is the last state.
        changed = normalised_previous(previous) if previous and kind == EventKind.DEAL_UPDATED else None
        return [
            Event(
                crm=self.crm,
                kind=kind,
                deal_id=deal_id,
                occurred_at=occurred,
                dedup_key=webhook_key("pd", delivery),
                source=EventSource.WEBHOOK,
                previous=changed,
                raw=body,
            )
        ]

    def _v1(self, body: dict[str, Any], meta: dict[str, Any], received_at: datetime) -> list[Event]:
        if meta.get("object") != "deal":
            return []
        action = str(meta.get("action") or "")
        if not action and isinstance(body.get("event"), str):
            action = body["event"].partition(".")[0]
        kind = ACTIONS.get(action)
        if kind is None:
            raise MalformedWebhook("meta.action must be added, updated, merged or deleted")
        deal_id = _deal_id(meta.get("id"))
        if self._own_change(meta, kind):
            return []
        current, previous = body.get("current"), body.get("previous")
        for name, value in (("current", current), ("previous", previous)):
            if value is not None and not isinstance(value, dict):
                raise MalformedWebhook(f"{name} must be an object or null")
        occurred = _occurred(meta.get("timestamp"), received_at)
        changed = None
        if kind == EventKind.DEAL_UPDATED and isinstance(current, dict) and isinstance(previous, dict):
            # v1 sends the whole previous object: keep only what differs.
            now, before = flatten(current), flatten(previous)
            diff = {
                k: before.get(k)
                for k in set(now) | set(before)
                if k not in ("update_time",) and now.get(k) != before.get(k)
            }
            changed = normalised_previous(diff) if diff else None
        # v1 has no delivery id: the event, object, change time and stamp identify it; retries repeat them.
        ident = (
            str(x)
            for x in (
                action,
                deal_id,
                meta.get("timestamp_micro"),
                meta.get("timestamp"),
                (current or {}).get("update_time"),
            )
        )
        return [
            Event(
                crm=self.crm,
                kind=kind,
                deal_id=deal_id,
                occurred_at=occurred,
                dedup_key=hashed_webhook_key("pd1", ident),
                source=EventSource.WEBHOOK,
                previous=changed,
                raw=body,
            )
        ]

    def _own_change(self, meta: Mapping[str, Any], kind: EventKind) -> bool:
        """Our writes come back as change_source "api"; the rules already saw their cause.

        We never create deals, so an API-created deal is another integration's (a web form)
        and is kept; with ``own_user_id`` only that user's API changes are skipped.
        """
        if not self.skip_own_changes or meta.get("change_source") != "api" or kind == EventKind.DEAL_CREATED:
            return False
        return self.own_user_id is None or str(meta.get("user_id")) == self.own_user_id


def _deal_id(value: Any) -> str:
    text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    if not text.isdigit():
        raise MalformedWebhook("the deal id must be numeric")
    return text


def _occurred(value: Any, received_at: datetime) -> datetime:
    if value is None:
        return received_at
    moment = parse_time(value)
    if moment is None:
        raise MalformedWebhook("meta.timestamp is not a time")
    return moment
