"""A Pipedrive REST simulator: API v2 deals and activities, the v1 endpoints around them, the
per-token rolling burst window, the daily token budget and webhooks (v2 and v1) with retries.

It behaves like ``https://COMPANY.pipedrive.com`` reached with an API token (see
``/work/shared/api-notes/pipedrive.md``, pipedrive.readme.io and developers.pipedrive.com):

* auth by the ``x-api-token`` header or ``?api_token=``, 401 otherwise;
* the ``{"success", "data", "additional_data"}`` envelope and ``{"success": false, "error",
  "error_info", "data": null}`` errors;
* ``/api/v2/deals`` and ``/api/v2/activities`` with opaque keyset cursors (``next_cursor`` is null
  at the end), ``updated_since``/``updated_until`` (RFC3339), ``sort_by``/``sort_direction`` and
  ``limit`` <= 500; deletes are soft (the deal keeps its id with ``status: "deleted"``);
* v1 ``/v1/deals`` with ``start``/``limit`` paging (and v1's ``"data": null`` for an empty page),
  ``/v1/users``, ``/v1/activityTypes``, ``/v1/stages``, ``/v1/dealFields``, ``/v1/notes`` and
  ``/v1/webhooks``;
* a rolling 2-second window of ``burst_limit`` requests per token, refused with 429 and the
  ``x-ratelimit-*``/``retry-after`` headers, and an optional daily token budget charged at the
  documented endpoint costs (v2 half of v1);
* webhooks sent to every matching subscription with HTTP Basic auth, for UI changes
  (``change_source: "app"``) and API changes (``"api"``) alike, retried with the same ``meta.id``
  after 3, 30 and 150 s (attempts 2-4), and Pipedrive's ban after 10 failed first attempts.

Ids come from separate ranges (deals from 1, activities from 70001, notes from 90001, users from
10001, webhooks from 501) so a client that mixes them up is caught.

Run it on its own with ``python -m simulators.pipedrive --port 8082 [--seed-deals N]``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import copy
import dataclasses
import hashlib
import hmac
import json
import logging
import math
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from simulators import Delivery, FaultKnobs, WebhookSender
from simulators.base import ApiSimulator, Call, ErrorAnswer, ForeignAnswer

log = logging.getLogger(__name__)

WINDOW = 2.0  # seconds: the burst limit is counted over a rolling 2 s window per token
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
MAX_WEBHOOKS_PER_USER = 40
DELIVERY_TIMEOUT = 10.0  # a webhook answer slower than this counts as a failure
ERROR_INFO = "Please check developers.pipedrive.com"
RATE_INFO = "Please check https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting"

PIPELINE_ID = 1
PIPELINE_NAME = "Pipeline"
# (id, name): the stages of a new company's default pipeline, in order.
STAGES: tuple[tuple[int, str], ...] = (
    (1, "Qualified"),
    (2, "Contact Made"),
    (3, "Demo Scheduled"),
    (4, "Proposal Made"),
    (5, "Negotiations Started"),
)
_STAGE_IDS = frozenset(sid for sid, _ in STAGES)
# (key_string, name, icon_key): the activity types every company starts with.
ACTIVITY_TYPES: tuple[tuple[str, str, str], ...] = (
    ("call", "Call", "call"),
    ("meeting", "Meeting", "meeting"),
    ("task", "Task", "task"),
    ("deadline", "Deadline", "deadline"),
    ("email", "Email", "email"),
    ("lunch", "Lunch", "lunch"),
)
_ACTIVITY_TYPE_NAMES = {key: name for key, name, _ in ACTIVITY_TYPES}

DEAL_SORTS = ("id", "update_time", "add_time")
ACTIVITY_SORTS = ("id", "update_time", "add_time", "due_date")
_DEAL_STATUSES = frozenset({"open", "won", "lost", "deleted"})
# Webhook actions: v2 names, plus the v1 names the same endpoint still accepts.
_WEBHOOK_ACTIONS = {
    "create": "create",
    "change": "change",
    "delete": "delete",
    "*": "*",
    "added": "create",
    "updated": "change",
    "deleted": "delete",
    "merged": "change",
}
_WEBHOOK_OBJECTS = frozenset(
    {"activity", "deal", "lead", "note", "organization", "person", "pipeline", "product", "stage", "user", "*"}
)
_V1_ACTION = {"create": "added", "change": "updated", "delete": "deleted"}

_DEAL_WRITABLE = frozenset(
    {
        "title",
        "value",
        "currency",
        "owner_id",
        "person_id",
        "org_id",
        "pipeline_id",
        "stage_id",
        "status",
        "lost_reason",
        "expected_close_date",
        "probability",
        "visible_to",
        "label_ids",
        "custom_fields",
    }
)
_ACTIVITY_WRITABLE = frozenset(
    {
        "subject",
        "type",
        "owner_id",
        "deal_id",
        "lead_id",
        "person_id",
        "org_id",
        "project_id",
        "due_date",
        "due_time",
        "duration",
        "busy",
        "done",
        "location",
        "participants",
        "attendees",
        "public_description",
        "priority",
        "note",
    }
)
# Server-maintained times a deal's v2 ``previous`` leaves out: a real stage move carries only
# ``{"stage_id": old}`` although update_time and stage_change_time changed too.
_DEAL_PREVIOUS_SKIP = frozenset({"update_time", "stage_change_time"})
_VISIBILITY = frozenset({1, 3, 5, 7})
_HASH_KEY = re.compile(r"^[0-9a-f]{40}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CLOCK_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


_Render = Callable[[Mapping[str, Any]], dict[str, Any]]


class ApiError(ErrorAnswer):
    """An error answer: HTTP status, ``error`` text and ``error_info``."""

    def __init__(
        self, status: int, error: str, error_info: str = ERROR_INFO, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status}: {error}")
        self.status, self.error, self.error_info = status, error, error_info
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON error envelope."""
        return {
            "success": False,
            "error": self.error,
            "errorCode": self.status,
            "error_info": self.error_info,
            "data": None,
        }


# --- value helpers ----------------------------------------------------------------------------


def _ts(moment: datetime) -> str:
    """v2 time format: ``2022-11-24T13:18:55Z``."""
    return moment.astimezone(UTC).strftime(_TS_FORMAT)


def _ts_ms(moment: datetime) -> str:
    """Webhook meta time format: ``2022-11-24T15:11:55.724Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _v1_time(value: str | None) -> str | None:
    """v1 time format: ``2022-11-24 13:18:55`` (UTC, no zone)."""
    return value.replace("T", " ").removesuffix("Z") if value else value


def _parse_ts(value: str) -> datetime:
    return datetime.strptime(value, _TS_FORMAT).replace(tzinfo=UTC)


def _parse_rfc3339(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or "T" not in value.upper():
        raise ApiError(400, f"Invalid {name}: expected an RFC3339 time like 2025-01-01T10:20:00Z")
    return parsed.astimezone(UTC)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ApiError(400, f"{name} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    raise ApiError(400, f"{name} must be an integer")


def _opt_int(value: Any, name: str) -> int | None:
    return None if value is None else _int(value, name)


def _number(value: Any, name: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"{name} must be a number")
    return value


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise ApiError(400, f"{name} must be a boolean")


def _opt_text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ApiError(400, f"{name} must be a string")


def _date(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and _DATE.match(value):
        try:
            date.fromisoformat(value)
            return value
        except ValueError:
            pass
    raise ApiError(400, f"{name} must be a date in YYYY-MM-DD format")


def _clock_time(value: Any, name: str) -> str | None:
    """``HH:MM`` (seconds accepted and dropped), as v2 activities keep due_time and duration."""
    if value is None or value == "":
        return None
    m = _CLOCK_TIME.match(value) if isinstance(value, str) else None
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ApiError(400, f"{name} must be a time in HH:MM format")
    return f"{int(m.group(1)):02d}:{m.group(2)}"


def _encode_cursor(sort_by: str, direction: str, row: Mapping[str, Any]) -> str:
    raw = json.dumps({"s": sort_by, "d": direction, "k": row.get(sort_by), "i": row["id"]})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort_by: str, direction: str) -> tuple[Any, int]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if raw["s"] != sort_by or raw["d"] != direction or not isinstance(raw["i"], int):
            raise ValueError("cursor made for another sort")
        return raw["k"], raw["i"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "Invalid cursor") from exc


def _sort_key(value: Any, row_id: int) -> tuple[Any, int]:
    # Every sortable field is an int (id) or a fixed-format string; None sorts first.
    return ("" if value is None else value, row_id)


def _field_key(name: str) -> Callable[[Mapping[str, Any]], tuple[Any, int]]:
    """A sort key on one field alone (stable sorts keep the earlier order among equals)."""

    def key(row: Mapping[str, Any]) -> tuple[Any, int]:
        return _sort_key(row.get(name), 0)

    return key


def _keyset_page(
    rows: Iterable[dict[str, Any]], sort_by: str, direction: str, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``rows`` in (sort_by, id) order from the cursor's row on, and the next cursor.

    Keyset paging, as Pipedrive's opaque cursors behave: a row changed mid-walk may move past
    the cursor (and be seen again when sorting by update_time), never shift the others.
    """
    desc = direction == "desc"
    ordered = sorted(rows, key=lambda r: _sort_key(r.get(sort_by), r["id"]), reverse=desc)
    if cursor:
        mark = _sort_key(*_decode_cursor(cursor, sort_by, direction))
        ordered = [
            r
            for r in ordered
            if (_sort_key(r.get(sort_by), r["id"]) <= mark if desc else _sort_key(r.get(sort_by), r["id"]) >= mark)
        ]
    page = ordered[:limit]
    nxt = _encode_cursor(sort_by, direction, ordered[limit]) if len(ordered) > limit else None
    return page, nxt


def _diff_previous(
    before: Mapping[str, Any], after: Mapping[str, Any], skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """v2 ``previous``: the old values of the fields that changed, custom fields key by key."""
    previous: dict[str, Any] = {}
    for key, old in before.items():
        if key in skip:
            continue
        new = after.get(key)
        if key == "custom_fields" and isinstance(old, dict) and isinstance(new, dict):
            changed = {h: old.get(h) for h in sorted(set(old) | set(new)) if old.get(h) != new.get(h)}
            if changed:
                previous[key] = changed
        elif new != old:
            previous[key] = old
    return previous


_Handler = Callable[[int | None], tuple[int, dict[str, Any]]]  # item id -> (status, body)


@dataclass
class _Call(Call):
    """One API request: the route it matched, and the rate headers its admission answered."""

    method: str
    template: str
    handler: _Handler
    item_id: int | None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass
class _HookState:
    """Delivery bookkeeping of one webhook: Pipedrive's ban counter."""

    first_failures: int = 0
    banned_until: float = 0.0


class PipedriveSimulator(ApiSimulator[_Call, tuple[int, dict[str, Any]]]):
    """One simulated Pipedrive company reached with one API token.

    State lives in plain dicts (``deals``, ``activities``, ``users``, ``notes``, ``webhooks``) in
    the API v2 shape, behind one lock. ``faults`` may be tuned at run time, and so may these
    attributes: ``strict_fields`` (unknown body fields answer 400), ``webhook_ban_threshold``
    (None: never ban), ``webhook_ban_seconds`` (on the real monotonic clock, not ``monotonic``,
    which only drives the burst window), ``block_after_refusals`` (None: never answer
    the CDN's 403 to a client that keeps hammering after 429s), ``block_seconds``,
    ``default_currency`` and ``ui_user_id`` (who the UI changes are made by).
    """

    def __init__(
        self,
        *,
        api_token: str = "simtoken",
        company_domain: str = "sim",
        burst_limit: int = 20,
        daily_budget: int | None = None,
        faults: FaultKnobs | None = None,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        webhook_retry_delays: tuple[float, ...] = (3, 30, 150),
    ) -> None:
        super().__init__(faults)
        self.api_token = api_token
        self.company_domain = company_domain
        self.host = f"{company_domain}.pipedrive.com"
        self.company_id = 1_000_000 + zlib.crc32(company_domain.encode()) % 9_000_000
        self.burst_limit = burst_limit
        self.daily_budget = daily_budget
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.monotonic = monotonic
        self.webhook_retry_delays = tuple(webhook_retry_delays)
        self.sender = WebhookSender(self.faults, timeout=DELIVERY_TIMEOUT)
        self.refusals = 0
        self.max_window_count = 0
        self.daily_spent = 0
        self.deals: dict[int, dict[str, Any]] = {}
        self.activities: dict[int, dict[str, Any]] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, dict[str, Any]] = {}
        # Persons (phones, e-mails) and organizations (custom fields such as an INN).
        self.persons: dict[int, dict[str, Any]] = {}
        self.organizations: dict[int, dict[str, Any]] = {}
        self.webhooks: dict[int, dict[str, Any]] = {}
        self.deal_fields: dict[str, dict[str, Any]] = {}  # custom field key -> {"name", "field_type"}
        self.strict_fields = True
        self.webhook_ban_threshold: int | None = 10
        self.webhook_ban_seconds = 30 * 60.0
        self.block_after_refusals: int | None = None
        self.block_seconds = 60.0
        self.default_currency = "EUR"
        self._ids = {"deal": 1, "activity": 70001, "note": 90001, "user": 10001, "webhook": 501}
        self._window: collections.deque[float] = collections.deque()  # admitted requests
        self._arrivals: collections.deque[float] = collections.deque()  # every request, for max_window_count
        self._refused_in_row = 0
        self._blocked_until = -math.inf
        self._budget_day = self._now().date()
        self._hook_state: dict[int, _HookState] = {}
        self._timers: set[threading.Timer] = set()
        self._closed = False
        # The token belongs to the company's first user, an admin, as on a fresh account.
        self.user_id = self.add_user("Sim Admin", f"admin@{company_domain}.example")
        self.users[self.user_id]["is_admin"] = 1
        self.ui_user_id = self.user_id
        self.app = self._build_app()

    # --- direct manipulation, as a user in the web app would do --------------------------

    def add_user(self, name: str, email: str = "", active: bool = True, user_id: int | None = None) -> int:
        """Add a user (an owner for deals and activities); answers its id (``user_id`` if given)."""
        with self._lock:
            uid = self._next_id("user") if user_id is None else user_id
            now = _v1_time(_ts(self._now()))
            self.users[uid] = {
                "id": uid,
                "name": name,
                "email": email or f"user{uid}@{self.company_domain}.example",
                "active_flag": bool(active),
                "timezone_name": "Europe/Tallinn",
                "timezone_offset": "+02:00",
                "default_currency": self.default_currency,
                "locale": "en_US",
                "lang": 1,
                "is_admin": 0,
                "role_id": 1,
                "icon_url": None,
                "has_created_company": uid == 10001,
                "created": now,
                "modified": now,
                "last_login": now,
            }
            return uid

    def add_deal_field(self, name: str, field_type: str = "varchar", key: str | None = None) -> str:
        """Register a deal custom field; answers its 40-character hash key."""
        with self._lock:
            seed = f"{self.company_id}:{name}:{len(self.deal_fields)}"
            key = key or hashlib.sha1(seed.encode()).hexdigest()
            if not _HASH_KEY.match(key):
                raise ValueError("a custom field key is 40 lowercase hex characters")
            self.deal_fields[key] = {"name": name, "field_type": field_type}
            return key

    def add_deal(self, fields: dict[str, Any]) -> int:
        """Create a deal as a user in the web app would; fires create webhooks (change_source app).

        ``fields`` take the API v2 names; ValueError when the API would answer 400.
        """
        with self._lock:
            try:
                return self._create_deal(fields, "app")["id"]
            except ApiError as exc:
                raise ValueError(exc.error) from exc

    def update_deal(self, deal_id: int, fields: dict[str, Any]) -> None:
        """Change a deal in the web app; fires change webhooks whose ``previous`` holds only the
        changed fields. KeyError if there is no such deal, ValueError if the API would refuse."""
        with self._lock:
            if deal_id not in self.deals:
                raise KeyError(deal_id)
            try:
                self._change_deal(deal_id, fields, "app")
            except ApiError as exc:
                raise ValueError(exc.error) from exc

    def delete_deal(self, deal_id: int) -> None:
        """Delete a deal in the web app (soft, status "deleted"); fires delete webhooks."""
        with self._lock:
            if deal_id not in self.deals:
                raise KeyError(deal_id)
            self._delete_deal(deal_id, "app")

    def add_webhook(
        self,
        subscription_url: str,
        event_action: str = "*",
        event_object: str = "deal",
        version: str = "2.0",
        http_auth_user: str | None = None,
        http_auth_password: str | None = None,
    ) -> int:
        """Subscribe a webhook as Settings > Webhooks would; answers its id."""
        with self._lock:
            try:
                return self._create_webhook(
                    {
                        "subscription_url": subscription_url,
                        "event_action": event_action,
                        "event_object": event_object,
                        "version": version,
                        "http_auth_user": http_auth_user,
                        "http_auth_password": http_auth_password,
                    }
                )["id"]
            except ApiError as exc:
                raise ValueError(exc.error) from exc

    def activities_for_deal(self, deal_id: int) -> list[dict[str, Any]]:
        """The deal's activities that are not deleted, oldest first (copies, v2 shape)."""
        with self._lock:
            return [
                copy.deepcopy(a)
                for a in sorted(self.activities.values(), key=lambda a: a["id"])
                if a["deal_id"] == deal_id and not a["is_deleted"]
            ]

    @property
    def daily_budget_left(self) -> int | None:
        """Tokens left today, None without a budget."""
        with self._lock:
            self._roll_day()
            return None if self.daily_budget is None else max(0, self.daily_budget - self.daily_spent)

    def wait_webhooks(self, timeout: float = 10.0) -> bool:
        """Block until no delivery is queued and no retry is scheduled; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                timers = bool(self._timers)
            if not timers and self.sender.wait_idle(timeout=0.05):
                with self._lock:
                    if not self._timers:
                        return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        """Cancel scheduled retries and stop the webhook sender's thread."""
        with self._lock:
            self._closed = True
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
        self.sender.close()

    # --- HTTP --------------------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask(f"pipedrive-sim-{id(self)}")
        routes: tuple[tuple[str, str, _Handler], ...] = (
            ("GET", "/api/v2/deals", self._deals_list),
            ("POST", "/api/v2/deals", self._deals_add),
            ("GET", "/api/v2/deals/{id}", self._deals_get),
            ("PATCH", "/api/v2/deals/{id}", self._deals_update),
            ("DELETE", "/api/v2/deals/{id}", self._deals_delete),
            ("GET", "/v1/deals", self._v1_deals_list),
            ("GET", "/v1/deals/{id}", self._v1_deals_get),
            ("GET", "/api/v2/activities", self._activities_list),
            ("POST", "/api/v2/activities", self._activities_add),
            ("GET", "/api/v2/activities/{id}", self._activities_get),
            ("PATCH", "/api/v2/activities/{id}", self._activities_update),
            ("DELETE", "/api/v2/activities/{id}", self._activities_delete),
            ("GET", "/v1/activityTypes", self._activity_types),
            ("GET", "/v1/users", self._users_list),
            ("GET", "/v1/users/me", self._users_me),
            ("GET", "/v1/users/{id}", self._users_get),
            ("GET", "/v1/stages", self._v1_stages),
            ("GET", "/api/v2/stages", self._stages),
            ("GET", "/v1/dealFields", self._deal_fields),
            ("POST", "/v1/notes", self._notes_add),
            ("GET", "/v1/notes", self._notes_list),
            ("GET", "/api/v2/persons/search", self._persons_search),
            ("GET", "/api/v2/organizations/search", self._organizations_search),
            ("POST", "/v1/webhooks", self._webhooks_add),
            ("GET", "/v1/webhooks", self._webhooks_list),
            ("DELETE", "/v1/webhooks/{id}", self._webhooks_delete),
        )
        for method, template, handler in routes:
            rule = template.replace("{id}", "<int:item_id>")

            def view(
                item_id: int | None = None,
                _m: str = method,
                _t: str = template,
                _h: _Handler = handler,
            ) -> Response:
                return self._handle(_m, _t, _h, item_id)

            app.add_url_rule(rule, endpoint=f"{method} {template}", view_func=view, methods=[method])

        @app.errorhandler(HTTPException)
        def http_error(exc: HTTPException) -> Response:
            # Unknown paths and methods answer in the API's envelope, not Flask's HTML.
            status = exc.code or 500
            error = "Unknown method ." if status == 404 else (exc.name or "Error")
            return self._json(ApiError(status, error).body(), status)

        return app

    def _handle(self, method: str, template: str, handler: _Handler, item_id: int | None) -> Response:
        return self.answer(_Call(method=method, template=template, handler=handler, item_id=item_id))

    def authenticate(self, call: _Call) -> None:
        token = request.headers.get("x-api-token") or request.args.get("api_token") or ""
        if not token or not hmac.compare_digest(token.encode(), self.api_token.encode()):
            raise ApiError(401, "unauthorized access")

    def admit(self, call: _Call) -> None:
        if self._blocked():
            # Pipedrive's CDN answers a client that keeps hammering after 429s with HTML.
            page = "<html><body><h1>403 Forbidden</h1>Request blocked.</body></html>"
            raise ForeignAnswer(Response(page, status=403, mimetype="text/html"))
        call.headers = self._admit(_cost(call.method, call.template))

    def transient_error(self, call: _Call) -> Exception:
        if self.faults.roll(0.5):
            return ApiError(503, "Service unavailable")
        return self.internal_error(call)

    def handle(self, call: _Call) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.calls[f"{call.method} {call.template}"] += 1
            answer = call.handler(call.item_id)
        call.wrote = call.method in ("POST", "PATCH", "PUT", "DELETE")
        return answer

    def internal_error(self, call: _Call) -> ApiError:
        return ApiError(500, "Internal server error")

    def success(self, call: _Call, result: tuple[int, dict[str, Any]]) -> Response:
        status, body = result
        return self._json(body, status, call.headers)

    def error(self, call: _Call, exc: ErrorAnswer) -> Response:
        assert isinstance(exc, ApiError)  # the only error answer this simulator raises
        # A refusal carries its own rate headers; any later error those of its admission.
        return self._json(exc.body(), exc.status, {**call.headers, **exc.headers})

    @staticmethod
    def _json(body: Any, status: int, headers: Mapping[str, str] | None = None) -> Response:
        resp = Response(json.dumps(body), status=status, mimetype="application/json")
        for key, value in (headers or {}).items():
            resp.headers[key] = value
        return resp

    # --- limits ------------------------------------------------------------------------------

    def _blocked(self) -> bool:
        with self._lock:
            return self.monotonic() < self._blocked_until

    def _admit(self, cost: int) -> dict[str, str]:
        """Take one request into the rolling window and ``cost`` tokens from today's budget,
        answering the rate headers; ApiError 429 (with its headers) when refused."""
        with self._lock:
            now = self.monotonic()
            cutoff = now - WINDOW
            while self._window and self._window[0] <= cutoff:
                self._window.popleft()
            while self._arrivals and self._arrivals[0] <= cutoff:
                self._arrivals.popleft()
            # Every request counts here, refused or not: this proves a client stayed under the limit.
            self._arrivals.append(now)
            self.max_window_count = max(self.max_window_count, len(self._arrivals))
            self._roll_day()
            if self.faults.roll(self.faults.limit_rate, "rate_limited") or len(self._window) >= self.burst_limit:
                raise self._refuse(now, daily=False)
            if self.daily_budget is not None and self.daily_spent + cost > self.daily_budget:
                raise self._refuse(now, daily=True)
            self._window.append(now)
            self.daily_spent += cost
            self._refused_in_row = 0
            return self._rate_headers(now)

    def _refuse(self, now: float, *, daily: bool) -> ApiError:
        self.refusals += 1
        self._refused_in_row += 1
        if self.block_after_refusals is not None and self._refused_in_row > self.block_after_refusals:
            self._blocked_until = now + self.block_seconds
        headers = self._rate_headers(now)
        headers["x-ratelimit-remaining"] = "0"
        if daily:
            tomorrow = datetime.combine(self._now().date() + timedelta(days=1), datetime.min.time(), UTC)
            headers["retry-after"] = str(max(1, math.ceil((tomorrow - self._now()).total_seconds())))
            return ApiError(429, "Daily API token budget exceeded", RATE_INFO, headers)
        reset = headers["x-ratelimit-reset"] if self._window else str(int(WINDOW))
        headers["x-ratelimit-reset"] = reset
        headers["retry-after"] = reset
        return ApiError(429, "Request over limit", RATE_INFO, headers)

    def _rate_headers(self, now: float) -> dict[str, str]:
        reset = max(1, math.ceil(self._window[0] + WINDOW - now - 1e-9)) if self._window else 0
        headers = {
            "x-ratelimit-limit": str(self.burst_limit),
            "x-ratelimit-remaining": str(max(0, self.burst_limit - len(self._window))),
            "x-ratelimit-reset": str(reset),
        }
        if self.daily_budget is not None:
            left = str(max(0, self.daily_budget - self.daily_spent))
            headers["x-daily-requests-left"] = left
            # The name live accounts use for the token budget (x-daily-requests-left is older).
            headers["x-daily-ratelimit-token-limit"] = str(self.daily_budget)
            headers["x-daily-ratelimit-token-remaining"] = left
        return headers

    def _roll_day(self) -> None:
        today = self._now().date()
        if today != self._budget_day:  # the budget resets at midnight UTC
            self._budget_day = today
            self.daily_spent = 0

    # --- helpers -----------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self.clock()
        return now if now.tzinfo else now.replace(tzinfo=UTC)

    def _next_id(self, kind: str) -> int:
        value = self._ids[kind]
        self._ids[kind] = value + 1
        return value

    @staticmethod
    def _body(*, v2: bool) -> dict[str, Any]:
        raw = request.get_data()
        if not raw:
            return {}
        if request.is_json:
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                raise ApiError(400, "Invalid JSON in the request body: an object is expected")
            return body
        if v2:
            raise ApiError(415, "Unsupported Media Type", "The v2 API takes application/json bodies")
        return {k: v for k, v in request.form.items()}

    @staticmethod
    def _limit(*, default: int = DEFAULT_LIMIT, cap: bool = False) -> int:
        raw = request.args.get("limit")
        if raw is None or raw == "":
            return default
        value = _int(raw, "limit")
        if value < 1:
            raise ApiError(400, "limit must be at least 1")
        if value > MAX_LIMIT:
            if cap:  # v1 quietly serves at most 500 rows
                return MAX_LIMIT
            raise ApiError(400, f"limit must not be greater than {MAX_LIMIT}")
        return value

    @staticmethod
    def _sort_args(allowed: tuple[str, ...]) -> tuple[str, str]:
        sort_by = request.args.get("sort_by") or "id"
        direction = (request.args.get("sort_direction") or "asc").lower()
        if sort_by not in allowed:
            raise ApiError(400, f"sort_by must be one of: {', '.join(allowed)}")
        if direction not in ("asc", "desc"):
            raise ApiError(400, "sort_direction must be asc or desc")
        return sort_by, direction

    @staticmethod
    def _updated_window() -> tuple[datetime | None, datetime | None]:
        since, until = request.args.get("updated_since"), request.args.get("updated_until")
        return (
            _parse_rfc3339(since, "updated_since") if since else None,
            _parse_rfc3339(until, "updated_until") if until else None,
        )

    @staticmethod
    def _in_window(update_time: str | None, since: datetime | None, until: datetime | None) -> bool:
        if since is None and until is None:
            return True
        if update_time is None:
            return False
        moment = _parse_ts(update_time)
        return (since is None or moment >= since) and (until is None or moment < until)

    @staticmethod
    def _arg_int(name: str) -> int | None:
        raw = request.args.get(name)
        return None if raw in (None, "") else _int(raw, name)

    @staticmethod
    def _ids_arg() -> set[int] | None:
        raw = request.args.get("ids")
        if not raw:
            return None
        ids = [_int(part, "ids") for part in raw.split(",") if part.strip()]
        if len(ids) > 100:
            raise ApiError(400, "ids takes at most 100 ids")
        return set(ids)

    def _user_ref(self, uid: int | None) -> dict[str, Any] | None:
        user = self.users.get(uid) if uid is not None else None
        if user is None:
            return None if uid is None else {"id": uid, "value": uid}
        return {
            "id": uid,
            "name": user["name"],
            "email": user["email"],
            "has_pic": 0,
            "pic_hash": None,
            "active_flag": user["active_flag"],
            "value": uid,
        }

    # --- webhooks ----------------------------------------------------------------------------

    def _fire(
        self,
        entity: str,
        action: str,
        entity_id: int,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        source: str,
    ) -> None:
        """Send one event to every matching webhook (called with the lock held)."""
        hooks = [
            h
            for h in self.webhooks.values()
            if h["is_active"] and h["event_object"] in (entity, "*") and h["event_action"] in (action, "*")
        ]
        if not hooks:
            return
        v2_render, v1_render, skip = self._renderers(entity)
        now = self._now()
        actor = self.user_id if source == "api" else self.ui_user_id
        permitted = sorted(uid for uid, u in self.users.items() if u["active_flag"])
        correlation = str(uuid.uuid4())
        b2 = v2_render(before) if before is not None else None
        a2 = v2_render(after) if after is not None else None
        if action == "create" and entity == "deal" and a2 is not None:
            a2["update_time"] = None  # Pipedrive's create webhooks show a new deal's update_time as null
        previous2: dict[str, Any] | None = None
        if action == "change" and b2 is not None and a2 is not None:
            previous2 = _diff_previous(b2, a2, skip)
        elif action == "delete":
            previous2 = b2  # a delete carries the last state in previous
        b1 = v1_render(before) if before is not None and action != "create" else None
        a1 = v1_render(after) if after is not None and action != "delete" else None
        for hook in hooks:
            if hook["version"] == "1.0":
                v1_action = _V1_ACTION[action]
                meta1 = {
                    "v": 1,
                    "action": v1_action,
                    "object": entity,
                    "change_source": source,
                    "id": entity_id,
                    "company_id": self.company_id,
                    "user_id": actor,
                    "host": self.host,
                    "timestamp": int(now.timestamp()),
                    "timestamp_micro": int(now.timestamp() * 1_000_000),
                    "permitted_user_ids": permitted,
                    "trans_pending": False,
                    "is_bulk_update": False,
                    "pipedrive_service_name": False,
                    "matches_filters": {"current": [], "previous": []},
                    "webhook_id": hook["id"],
                }
                body: dict[str, Any] = {
                    "v": 1,
                    "matches_filters": {"current": [], "previous": []},
                    "meta": meta1,
                    "retry": 0,
                    "current": copy.deepcopy(a1),
                    "previous": copy.deepcopy(b1),
                    "event": f"{v1_action}.{entity}",
                }
            else:
                meta = {
                    "action": action,
                    "entity": entity,
                    "company_id": str(self.company_id),
                    "correlation_id": correlation,
                    "entity_id": str(entity_id),
                    "id": str(uuid.uuid4()),
                    "is_bulk_edit": False,
                    "timestamp": _ts_ms(now),
                    "type": "general",
                    "user_id": str(actor),
                    "version": "2.0",
                    "webhook_id": str(hook["id"]),
                    "webhook_owner_id": str(hook["owner_id"]),
                    "change_source": source,
                    "attempt": 1,
                    "host": self.host,
                }
                if entity != "user":
                    meta["permitted_user_ids"] = [str(uid) for uid in permitted]
                body = {
                    "meta": meta,
                    "data": None if action == "delete" else copy.deepcopy(a2),
                    "previous": copy.deepcopy(previous2),
                }
            self._deliver(hook["id"], body, 1)

    def _renderers(self, entity: str) -> tuple[_Render, _Render, frozenset[str]]:
        if entity == "deal":
            return self._deal_hook_v2, lambda d: self._deal_v1(d, expand=False), _DEAL_PREVIOUS_SKIP
        if entity == "activity":
            return self._activity_hook_v2, self._activity_v1, frozenset()
        return self._note_hook_v2, self._note_v1, frozenset()

    def _deliver(self, hook_id: int, body: dict[str, Any], attempt: int) -> None:
        """Queue attempt ``attempt`` (1-4) of one event to one webhook, unless it is banned."""
        with self._lock:
            hook = self.webhooks.get(hook_id)
            if hook is None or self._closed:
                return  # deleted meanwhile: its pending events die with it
            state = self._hook_state.setdefault(hook_id, _HookState())
            if time.monotonic() < state.banned_until:
                # A banned webhook's events are lost, retries included.
                self.sender.log.append(Delivery(hook["subscription_url"], body, None, error="banned", dropped=True))
                return
            stamped = copy.deepcopy(body)
            if "meta" in stamped and stamped["meta"].get("version") == "2.0":
                stamped["meta"]["attempt"] = attempt
            else:
                stamped["retry"] = attempt - 1
            kwargs: dict[str, Any] = {"json": stamped}
            if hook["http_auth_user"] is not None or hook["http_auth_password"] is not None:
                kwargs["auth"] = (hook["http_auth_user"] or "", hook["http_auth_password"] or "")
            url = hook["subscription_url"]

        def done(records: list[Delivery]) -> None:
            self._delivered(hook_id, body, attempt, records)

        self.sender.send_then(url, done, **kwargs)

    def _delivered(self, hook_id: int, body: dict[str, Any], attempt: int, records: list[Delivery]) -> None:
        """Apply the retry policy to one attempt's outcome (runs on the sender's thread)."""
        if not records or all(r.dropped for r in records):
            return  # lost on the way (a fault knob): nothing came back to judge
        ok = any(r.status is not None and 200 <= r.status < 300 for r in records)
        with self._lock:
            hook = self.webhooks.get(hook_id)
            if hook is None or self._closed:
                return
            last = records[-1]
            hook["last_delivery_time"] = _v1_time(_ts(self._now()))
            hook["last_http_status"] = last.status
            if not ok and attempt == 1 and self.webhook_ban_threshold is not None:
                # Only first attempts count towards the ban; ten of them ban the webhook.
                state = self._hook_state.setdefault(hook_id, _HookState())
                state.first_failures += 1
                if state.first_failures >= self.webhook_ban_threshold:
                    state.first_failures = 0
                    state.banned_until = time.monotonic() + self.webhook_ban_seconds
            if ok or attempt > len(self.webhook_retry_delays):
                return

            def retry() -> None:
                try:
                    self._deliver(hook_id, body, attempt + 1)
                finally:
                    with self._lock:
                        self._timers.discard(timer)

            # A timer per retry, tracked so wait_webhooks() and close() know about it.
            timer = threading.Timer(self.webhook_retry_delays[attempt - 1], retry)
            timer.daemon = True
            self._timers.add(timer)
            timer.start()

    def _create_webhook(self, given: Mapping[str, Any]) -> dict[str, Any]:
        url = given.get("subscription_url")
        if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
            raise ApiError(400, "subscription_url must be a valid http(s) URL")
        action = _WEBHOOK_ACTIONS.get(str(given.get("event_action") or ""))
        if action is None:
            raise ApiError(400, "event_action must be one of: create, change, delete, *")
        obj = str(given.get("event_object") or "")
        if obj not in _WEBHOOK_OBJECTS:
            raise ApiError(400, f"event_object must be one of: {', '.join(sorted(_WEBHOOK_OBJECTS))}")
        version = str(given.get("version") or "2.0")
        if version not in ("1.0", "2.0"):
            raise ApiError(400, "version must be 1.0 or 2.0")
        user_id = self.user_id
        if given.get("user_id") not in (None, ""):
            user_id = _int(given["user_id"], "user_id")
        if user_id not in self.users:
            raise ApiError(400, "User not found")
        if sum(1 for h in self.webhooks.values() if h["user_id"] == user_id) >= MAX_WEBHOOKS_PER_USER:
            raise ApiError(400, f"The limit of {MAX_WEBHOOKS_PER_USER} webhooks per user is reached")
        hook_id = self._next_id("webhook")
        self.webhooks[hook_id] = {
            "id": hook_id,
            "company_id": self.company_id,
            "owner_id": self.user_id,
            "user_id": user_id,
            "event_action": action,
            "event_object": obj,
            "subscription_url": url,
            "version": version,
            "is_active": 1,
            "add_time": _v1_time(_ts(self._now())),
            "remove_time": None,
            "type": "general",
            "http_auth_user": _opt_text(given.get("http_auth_user"), "http_auth_user"),
            "http_auth_password": _opt_text(given.get("http_auth_password"), "http_auth_password"),
            "additional_data": {},
            "remove_reason": None,
            "last_delivery_time": None,
            "last_http_status": None,
            "admin_id": self.user_id,
            "name": given.get("name"),
        }
        self._hook_state[hook_id] = _HookState()
        return self.webhooks[hook_id]

    # --- deals -------------------------------------------------------------------------------

    def _deal_changes(self, deal: Mapping[str, Any] | None, given: Any) -> dict[str, Any]:
        """Check a create (``deal`` None) or update body; answers the normalised changes."""
        if not isinstance(given, Mapping):
            raise ApiError(400, "The request body must be a JSON object")
        unknown = sorted(set(given) - _DEAL_WRITABLE)
        if unknown and self.strict_fields:
            raise ApiError(400, f"Unknown deal field(s): {', '.join(unknown)}")
        c: dict[str, Any] = {}
        if "title" in given or deal is None:
            title = given.get("title")
            if not isinstance(title, str) or not title.strip():
                raise ApiError(400, "title is required" if deal is None else "title must not be empty")
            c["title"] = title
        if "value" in given:
            c["value"] = _number(given["value"], "value")
        if "currency" in given:
            cur = given["currency"]
            if not isinstance(cur, str) or not re.fullmatch(r"[A-Za-z]{3}", cur):
                raise ApiError(400, "currency must be a 3-letter currency code")
            c["currency"] = cur.upper()
        if "owner_id" in given:
            owner = _int(given["owner_id"], "owner_id")
            if owner not in self.users:
                raise ApiError(400, "User not found", "owner_id does not name a user of this company")
            c["owner_id"] = owner
        for key in ("person_id", "org_id"):
            if key in given:
                c[key] = _opt_int(given[key], key)
        if "pipeline_id" in given:
            if _int(given["pipeline_id"], "pipeline_id") != PIPELINE_ID:
                raise ApiError(404, "Pipeline not found")
            c["pipeline_id"] = PIPELINE_ID
        if "stage_id" in given:
            stage = _int(given["stage_id"], "stage_id")
            if stage not in _STAGE_IDS:
                raise ApiError(404, "Stage not found")
            c["stage_id"] = stage
        if "status" in given:
            status = given["status"]
            if status not in ("open", "won", "lost"):
                raise ApiError(400, "status must be one of: open, won, lost")
            c["status"] = status
        if "lost_reason" in given:
            reason = _opt_text(given["lost_reason"], "lost_reason")
            effective = c.get("status", deal["status"] if deal is not None else "open")
            if reason is not None and effective != "lost":
                raise ApiError(400, "lost_reason can only be set together with status lost")
            c["lost_reason"] = reason
        if "expected_close_date" in given:
            c["expected_close_date"] = _date(given["expected_close_date"], "expected_close_date")
        if "probability" in given:
            prob = _opt_int(given["probability"], "probability")
            if prob is not None and not 0 <= prob <= 100:
                raise ApiError(400, "probability must be between 0 and 100")
            c["probability"] = prob
        if "visible_to" in given:
            vis = _int(given["visible_to"], "visible_to")
            if vis not in _VISIBILITY:
                raise ApiError(400, "visible_to must be one of: 1, 3, 5, 7")
            c["visible_to"] = vis
        if "label_ids" in given:
            labels = given["label_ids"]
            if not isinstance(labels, list):
                raise ApiError(400, "label_ids must be an array of integers")
            c["label_ids"] = [_int(x, "label_ids") for x in labels]
        if "custom_fields" in given:
            fields = given["custom_fields"]
            if not isinstance(fields, Mapping):
                raise ApiError(400, "custom_fields must be an object keyed by custom field keys")
            bad = sorted(k for k in fields if not _HASH_KEY.match(str(k)))
            if bad:
                raise ApiError(400, f"Unknown custom field key(s): {', '.join(bad)}")
            c["custom_fields"] = copy.deepcopy(dict(fields))
        return c

    @staticmethod
    def _apply_deal(deal: dict[str, Any], changes: Mapping[str, Any], now: str, *, creating: bool) -> None:
        old_stage, old_status = deal["stage_id"], deal["status"]
        for key, value in changes.items():
            if key == "custom_fields":
                deal["custom_fields"].update(copy.deepcopy(value))
            elif key not in ("status", "lost_reason"):
                deal[key] = copy.deepcopy(value)
        status = changes.get("status", old_status)
        if status != old_status:
            deal["status"] = status
            if status == "won":
                deal.update(won_time=now, close_time=now, lost_time=None, lost_reason=None)
                deal["first_won_time"] = deal["first_won_time"] or now
            elif status == "lost":
                deal.update(lost_time=now, close_time=now, won_time=None)
            else:  # reopened
                deal.update(close_time=None, won_time=None, lost_time=None, lost_reason=None)
        if "lost_reason" in changes:
            deal["lost_reason"] = changes["lost_reason"]
        if deal["stage_id"] != old_stage and not creating:
            deal["stage_change_time"] = now

    def _create_deal(self, given: Any, source: str) -> dict[str, Any]:
        changes = self._deal_changes(None, given)
        now = _ts(self._now())
        actor = self.user_id if source == "api" else self.ui_user_id
        deal_id = self._next_id("deal")
        deal: dict[str, Any] = {
            "id": deal_id,
            "title": "",
            "creator_user_id": actor,
            "owner_id": actor,
            "person_id": None,
            "org_id": None,
            "pipeline_id": PIPELINE_ID,
            "stage_id": STAGES[0][0],
            "value": 0,
            "currency": self.default_currency,
            "add_time": now,
            "update_time": now,
            # A new deal has not changed stage yet: null, as in Pipedrive's create webhooks.
            "stage_change_time": None,
            "is_deleted": False,
            "status": "open",
            "probability": None,
            "lost_reason": None,
            "visible_to": 3,
            "close_time": None,
            "won_time": None,
            "lost_time": None,
            "first_won_time": None,
            "expected_close_date": None,
            "label_ids": [],
            "origin": "API" if source == "api" else "ManuallyCreated",
            "origin_id": None,
            "channel": None,
            "channel_id": None,
            "is_archived": False,
            "archive_time": None,
            "custom_fields": {},
        }
        self._apply_deal(deal, changes, now, creating=True)
        self.deals[deal_id] = deal
        self._fire("deal", "create", deal_id, None, deal, source)
        return deal

    def _live_deal(self, deal_id: int) -> dict[str, Any]:
        deal = self.deals.get(deal_id)
        if deal is None:
            raise ApiError(404, "Deal not found")
        if deal["is_deleted"]:
            raise ApiError(410, "Deal is deleted")
        return deal

    def _change_deal(self, deal_id: int, given: Any, source: str) -> dict[str, Any]:
        deal = self._live_deal(deal_id)
        changes = self._deal_changes(deal, given)
        before = copy.deepcopy(deal)
        now = _ts(self._now())
        after = copy.deepcopy(deal)
        self._apply_deal(after, changes, now, creating=False)
        if after == before:
            return deal  # nothing changed: no update_time bump, no webhook
        after["update_time"] = now
        deal.clear()
        deal.update(after)
        self._fire("deal", "change", deal_id, before, deal, source)
        return deal

    def _delete_deal(self, deal_id: int, source: str) -> None:
        deal = self._live_deal(deal_id)
        before = copy.deepcopy(deal)
        deal.update(status="deleted", is_deleted=True, update_time=_ts(self._now()))
        self._fire("deal", "delete", deal_id, before, None, source)

    def _custom_fields_view(self, deal: Mapping[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = dict.fromkeys(self.deal_fields)
        view.update(copy.deepcopy(deal["custom_fields"]))
        return view

    def _deal_v2(self, deal: Mapping[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(dict(deal))
        out["custom_fields"] = self._custom_fields_view(deal)
        return out

    def _typed_custom(self, key: str, value: Any) -> Any:
        """A custom field as webhooks v2 carry it: ``{"type": ..., "value": ...}``."""
        if value is None:
            return None
        field_type = self.deal_fields.get(key, {}).get("field_type")
        if isinstance(value, Mapping):
            return {
                **copy.deepcopy(dict(value)),
                "type": field_type or ("monetary" if "currency" in value else "varchar"),
            }
        if field_type in ("enum", "user", "people", "org"):
            return {"id": value, "type": field_type}
        if field_type == "set" or isinstance(value, list):
            return {"values": [{"id": v} for v in (value if isinstance(value, list) else [value])], "type": "set"}
        if field_type is None:
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            field_type = "double" if numeric else "varchar"
        return {"type": field_type, "value": value}

    def _deal_hook_v2(self, deal: Mapping[str, Any]) -> dict[str, Any]:
        """A deal as webhooks v2 carry it in ``data``/``previous``."""
        keys = (
            "add_time",
            "channel",
            "channel_id",
            "close_time",
            "creator_user_id",
            "currency",
            "expected_close_date",
            "first_won_time",
            "id",
            "label_ids",
            "lost_reason",
            "lost_time",
            "org_id",
            "origin",
            "origin_id",
            "owner_id",
            "person_id",
            "pipeline_id",
            "probability",
            "stage_change_time",
            "stage_id",
            "status",
            "title",
            "update_time",
            "value",
            "won_time",
            "is_archived",
            "archive_time",
        )
        out: dict[str, Any] = {key: copy.deepcopy(deal[key]) for key in keys}
        out["custom_fields"] = {k: self._typed_custom(k, v) for k, v in sorted(deal["custom_fields"].items())}
        out["visible_to"] = str(deal["visible_to"])
        return dict(sorted(out.items()))

    def _deal_v1(self, deal: Mapping[str, Any], *, expand: bool) -> dict[str, Any]:
        """A deal in API v1's shape (times without T/Z, custom fields at the top level)."""
        owner = self.users.get(deal["owner_id"])
        stage_order = next((i for i, (sid, _) in enumerate(STAGES, 1) if sid == deal["stage_id"]), None)
        out: dict[str, Any] = {
            "id": deal["id"],
            "creator_user_id": self._user_ref(deal["creator_user_id"]) if expand else deal["creator_user_id"],
            "user_id": self._user_ref(deal["owner_id"]) if expand else deal["owner_id"],
            "person_id": (
                {"value": deal["person_id"]} if expand and deal["person_id"] is not None else deal["person_id"]
            ),
            "org_id": ({"value": deal["org_id"]} if expand and deal["org_id"] is not None else deal["org_id"]),
            "stage_id": deal["stage_id"],
            "title": deal["title"],
            "value": deal["value"],
            "currency": deal["currency"],
            "add_time": _v1_time(deal["add_time"]),
            "update_time": _v1_time(deal["update_time"]),
            "stage_change_time": _v1_time(deal["stage_change_time"]),
            "active": deal["status"] == "open",
            "deleted": deal["is_deleted"],
            "status": deal["status"],
            "probability": deal["probability"],
            "next_activity_date": None,
            "next_activity_time": None,
            "next_activity_id": None,
            "last_activity_id": None,
            "last_activity_date": None,
            "lost_reason": deal["lost_reason"],
            "visible_to": str(deal["visible_to"]),
            "close_time": _v1_time(deal["close_time"]),
            "pipeline_id": deal["pipeline_id"],
            "won_time": _v1_time(deal["won_time"]),
            "first_won_time": _v1_time(deal["first_won_time"]),
            "lost_time": _v1_time(deal["lost_time"]),
            "expected_close_date": deal["expected_close_date"],
            "label": ",".join(str(x) for x in deal["label_ids"]) or None,
            "stage_order_nr": stage_order,
            "person_name": None,
            "org_name": None,
            "formatted_value": f"{deal['value']} {deal['currency']}",
            "weighted_value": deal["value"],
            "owner_name": owner["name"] if owner else None,
            "cc_email": f"{self.company_domain}+deal{deal['id']}@pipedrivemail.com",
            "org_hidden": False,
            "person_hidden": False,
        }
        out.update(self._custom_fields_view(deal))
        return out

    # deals over HTTP

    def _deals_list(self, _: int | None) -> tuple[int, dict[str, Any]]:
        limit = self._limit()
        sort_by, direction = self._sort_args(DEAL_SORTS)
        since, until = self._updated_window()
        ids = self._ids_arg()
        wanted = {k: self._arg_int(k) for k in ("owner_id", "person_id", "org_id", "pipeline_id", "stage_id")}
        raw_status = request.args.get("status")
        statuses = {s.strip() for s in raw_status.split(",")} if raw_status else {"open", "won", "lost"}
        if not statuses <= _DEAL_STATUSES:
            raise ApiError(400, "status must be one of: open, won, lost, deleted")
        rows = [
            d
            for d in self.deals.values()
            if ("deleted" if d["is_deleted"] else d["status"]) in statuses
            and (ids is None or d["id"] in ids)
            and all(v is None or d[k] == v for k, v in wanted.items())
            and self._in_window(d["update_time"], since, until)
        ]
        page, nxt = _keyset_page(rows, sort_by, direction, limit, request.args.get("cursor"))
        return 200, {"success": True, "data": [self._deal_v2(d) for d in page], "additional_data": {"next_cursor": nxt}}

    def _deals_add(self, _: int | None) -> tuple[int, dict[str, Any]]:
        deal = self._create_deal(self._body(v2=True), "api")
        return 200, {"success": True, "data": self._deal_v2(deal)}

    def _deals_get(self, deal_id: int | None) -> tuple[int, dict[str, Any]]:
        deal = self.deals.get(deal_id or 0)
        if deal is None:
            raise ApiError(404, "Deal not found")
        return 200, {"success": True, "data": self._deal_v2(deal)}

    def _deals_update(self, deal_id: int | None) -> tuple[int, dict[str, Any]]:
        deal = self._change_deal(deal_id or 0, self._body(v2=True), "api")
        return 200, {"success": True, "data": self._deal_v2(deal)}

    def _deals_delete(self, deal_id: int | None) -> tuple[int, dict[str, Any]]:
        self._delete_deal(deal_id or 0, "api")
        return 200, {"success": True, "data": {"id": deal_id}}

    def _v1_deals_list(self, _: int | None) -> tuple[int, dict[str, Any]]:
        start = self._arg_int("start") or 0
        if start < 0:
            raise ApiError(400, "start must not be negative")
        limit = self._limit(cap=True)
        status = request.args.get("status") or "all_not_deleted"
        if status not in ("open", "won", "lost", "deleted", "all_not_deleted"):
            raise ApiError(400, "status must be one of: open, won, lost, deleted, all_not_deleted")
        user_id, stage_id = self._arg_int("user_id"), self._arg_int("stage_id")
        rows = [
            d
            for d in self.deals.values()
            if (
                not d["is_deleted"]
                if status == "all_not_deleted"
                else d["is_deleted"]
                if status == "deleted"
                else d["status"] == status and not d["is_deleted"]
            )
            and (user_id is None or d["owner_id"] == user_id)
            and (stage_id is None or d["stage_id"] == stage_id)
        ]
        rows = self._v1_sorted(
            rows, request.args.get("sort") or "id ASC", ("id", "update_time", "add_time", "title", "value")
        )
        return 200, self._v1_page(
            [self._deal_v1(d, expand=True) for d in rows[start : start + limit]], start, limit, len(rows)
        )

    def _v1_deals_get(self, deal_id: int | None) -> tuple[int, dict[str, Any]]:
        deal = self.deals.get(deal_id or 0)
        if deal is None:
            raise ApiError(404, "Deal not found")
        return 200, {"success": True, "data": self._deal_v1(deal, expand=True), "additional_data": {}}

    @staticmethod
    def _v1_sorted(rows: list[dict[str, Any]], sort: str, allowed: tuple[str, ...]) -> list[dict[str, Any]]:
        """v1 ``sort=field ASC, other DESC``: applied right to left so the first field leads."""
        ordered = sorted(rows, key=lambda r: r["id"])
        for part in reversed([p.strip() for p in sort.split(",") if p.strip()]):
            field_name, _, way = part.partition(" ")
            if field_name not in allowed or way.strip().upper() not in ("", "ASC", "DESC"):
                raise ApiError(400, f"Invalid sort: {part}")
            ordered.sort(key=_field_key(field_name), reverse=way.strip().upper() == "DESC")
        return ordered

    @staticmethod
    def _v1_page(items: list[dict[str, Any]], start: int, limit: int, total: int) -> dict[str, Any]:
        more = start + limit < total
        pagination: dict[str, Any] = {"start": start, "limit": limit, "more_items_in_collection": more}
        if more:
            pagination["next_start"] = start + limit
        # v1 answers an empty page with data null, not [].
        return {"success": True, "data": items or None, "additional_data": {"pagination": pagination}}

    # --- activities --------------------------------------------------------------------------

    def _activity_changes(self, activity: Mapping[str, Any] | None, given: Any) -> dict[str, Any]:
        if not isinstance(given, Mapping):
            raise ApiError(400, "The request body must be a JSON object")
        unknown = sorted(set(given) - _ACTIVITY_WRITABLE)
        if unknown and self.strict_fields:
            raise ApiError(400, f"Unknown activity field(s): {', '.join(unknown)}")
        c: dict[str, Any] = {}
        if "subject" in given:
            c["subject"] = _opt_text(given["subject"], "subject")
        if "type" in given or activity is None:
            kind = given.get("type") or "task"  # the company's default type
            if kind not in _ACTIVITY_TYPE_NAMES:
                raise ApiError(
                    400,
                    f"Invalid activity type: {kind}",
                    f"Use a key_string from /v1/activityTypes: {', '.join(_ACTIVITY_TYPE_NAMES)}",
                )
            c["type"] = kind
        if "owner_id" in given:
            owner = _int(given["owner_id"], "owner_id")
            if owner not in self.users:
                raise ApiError(400, "User not found", "owner_id does not name a user of this company")
            c["owner_id"] = owner
        if "deal_id" in given:
            deal_id = _opt_int(given["deal_id"], "deal_id")
            if deal_id is not None and (deal_id not in self.deals or self.deals[deal_id]["is_deleted"]):
                raise ApiError(400, "Deal not found", "deal_id does not name a deal of this company")
            c["deal_id"] = deal_id
        for key in ("person_id", "org_id", "project_id", "priority"):
            if key in given:
                c[key] = _opt_int(given[key], key)
        for key in ("lead_id", "public_description", "note"):
            if key in given:
                c[key] = _opt_text(given[key], key)
        if "due_date" in given:
            c["due_date"] = _date(given["due_date"], "due_date")
        for key in ("due_time", "duration"):
            if key in given:
                c[key] = _clock_time(given[key], key)
        for key in ("busy", "done"):
            if key in given:
                c[key] = _bool(given[key], key)
        for key in ("location", "participants", "attendees"):
            if key in given:
                c[key] = copy.deepcopy(given[key])
        return c

    def _activities_add(self, _: int | None) -> tuple[int, dict[str, Any]]:
        changes = self._activity_changes(None, self._body(v2=True))
        now = _ts(self._now())
        act_id = self._next_id("activity")
        activity: dict[str, Any] = {
            "id": act_id,
            "subject": None,
            "type": "task",
            "owner_id": self.user_id,
            "creator_user_id": self.user_id,
            "is_deleted": False,
            "add_time": now,
            "update_time": now,
            "deal_id": None,
            "lead_id": None,
            "person_id": None,
            "org_id": None,
            "project_id": None,
            "due_date": None,
            "due_time": None,
            "duration": None,
            "busy": False,
            "done": False,
            "marked_as_done_time": None,
            "location": None,
            "participants": [],
            "attendees": [],
            "public_description": None,
            "priority": None,
            "note": None,
        }
        activity.update(changes)
        if not activity["subject"]:
            activity["subject"] = _ACTIVITY_TYPE_NAMES[activity["type"]]  # as the web app names it
        if activity["done"]:
            activity["marked_as_done_time"] = now
        self.activities[act_id] = activity
        self._fire("activity", "create", act_id, None, activity, "api")
        return 200, {"success": True, "data": copy.deepcopy(activity)}

    def _live_activity(self, act_id: int | None) -> dict[str, Any]:
        activity = self.activities.get(act_id or 0)
        if activity is None or activity["is_deleted"]:
            raise ApiError(404, "Activity not found")
        return activity

    def _activities_get(self, act_id: int | None) -> tuple[int, dict[str, Any]]:
        return 200, {"success": True, "data": copy.deepcopy(self._live_activity(act_id))}

    def _activities_update(self, act_id: int | None) -> tuple[int, dict[str, Any]]:
        activity = self._live_activity(act_id)
        changes = self._activity_changes(activity, self._body(v2=True))
        before = copy.deepcopy(activity)
        after = {**copy.deepcopy(activity), **changes}
        if "subject" in changes and not after["subject"]:
            after["subject"] = _ACTIVITY_TYPE_NAMES[after["type"]]
        if after != before:
            now = _ts(self._now())
            if after["done"] != before["done"]:
                after["marked_as_done_time"] = now if after["done"] else None
            after["update_time"] = now
            activity.clear()
            activity.update(after)
            self._fire("activity", "change", activity["id"], before, activity, "api")
        return 200, {"success": True, "data": copy.deepcopy(activity)}

    def _activities_delete(self, act_id: int | None) -> tuple[int, dict[str, Any]]:
        activity = self._live_activity(act_id)
        before = copy.deepcopy(activity)
        activity.update(is_deleted=True, update_time=_ts(self._now()))
        self._fire("activity", "delete", activity["id"], before, None, "api")
        return 200, {"success": True, "data": {"id": activity["id"]}}

    def _activities_list(self, _: int | None) -> tuple[int, dict[str, Any]]:
        limit = self._limit()
        sort_by, direction = self._sort_args(ACTIVITY_SORTS)
        since, until = self._updated_window()
        ids = self._ids_arg()
        wanted = {k: self._arg_int(k) for k in ("owner_id", "deal_id", "person_id", "org_id")}
        raw_done = request.args.get("done")
        done = None if raw_done in (None, "") else _bool(raw_done, "done")
        rows = [
            a
            for a in self.activities.values()
            if not a["is_deleted"]
            and (ids is None or a["id"] in ids)
            and all(v is None or a[k] == v for k, v in wanted.items())
            and (done is None or a["done"] == done)
            and self._in_window(a["update_time"], since, until)
        ]
        page, nxt = _keyset_page(rows, sort_by, direction, limit, request.args.get("cursor"))
        return 200, {"success": True, "data": [copy.deepcopy(a) for a in page], "additional_data": {"next_cursor": nxt}}

    def _activity_hook_v2(self, activity: Mapping[str, Any]) -> dict[str, Any]:
        keys = (
            "add_time",
            "deal_id",
            "done",
            "due_date",
            "due_time",
            "duration",
            "id",
            "lead_id",
            "location",
            "org_id",
            "owner_id",
            "person_id",
            "public_description",
            "subject",
            "type",
            "update_time",
        )
        out: dict[str, Any] = {key: copy.deepcopy(activity[key]) for key in keys}
        out.update(
            active_flag=not activity["is_deleted"], busy_flag=activity["busy"], custom_fields={}, update_user_id=None
        )
        return dict(sorted(out.items()))

    def _activity_v1(self, activity: Mapping[str, Any]) -> dict[str, Any]:
        deal = self.deals.get(activity["deal_id"]) if activity["deal_id"] is not None else None
        owner = self.users.get(activity["owner_id"])
        return {
            "id": activity["id"],
            "company_id": self.company_id,
            "user_id": activity["owner_id"],
            "done": activity["done"],
            "type": activity["type"],
            "reference_type": None,
            "reference_id": None,
            "due_date": activity["due_date"],
            "due_time": activity["due_time"] or "",
            "duration": activity["duration"] or "",
            "busy_flag": activity["busy"],
            "add_time": _v1_time(activity["add_time"]),
            "marked_as_done_time": _v1_time(activity["marked_as_done_time"]) or "",
            "subject": activity["subject"],
            "public_description": activity["public_description"],
            "deal_id": activity["deal_id"],
            "org_id": activity["org_id"],
            "person_id": activity["person_id"],
            "lead_id": activity["lead_id"],
            "active_flag": not activity["is_deleted"],
            "update_time": _v1_time(activity["update_time"]),
            "update_user_id": None,
            "note": activity["note"],
            "created_by_user_id": activity["creator_user_id"],
            "deal_title": deal["title"] if deal else None,
            "owner_name": owner["name"] if owner else None,
        }

    def _activity_types(self, _: int | None) -> tuple[int, dict[str, Any]]:
        created = "2019-01-01 00:00:00"
        data = [
            {
                "id": i,
                "order_nr": i,
                "name": name,
                "key_string": key,
                "icon_key": icon,
                "active_flag": True,
                "color": None,
                "is_custom_flag": False,
                "add_time": created,
                "update_time": None,
            }
            for i, (key, name, icon) in enumerate(ACTIVITY_TYPES, 1)
        ]
        return 200, {"success": True, "data": data}

    # --- users, stages, fields ---------------------------------------------------------------

    def _user_v1(self, user: Mapping[str, Any]) -> dict[str, Any]:
        return {**copy.deepcopy(dict(user)), "is_you": user["id"] == self.user_id}

    def _users_list(self, _: int | None) -> tuple[int, dict[str, Any]]:
        return 200, {"success": True, "data": [self._user_v1(u) for _, u in sorted(self.users.items())]}

    def _users_me(self, _: int | None) -> tuple[int, dict[str, Any]]:
        me = {
            **self._user_v1(self.users[self.user_id]),
            "company_id": self.company_id,
            "company_domain": self.company_domain,
            # The apps the token's user may use, as the real users/me lists them.
            "access": [{"app": "sales", "admin": True, "permission_set_id": "sim-sales-admin"}],
        }
        return 200, {"success": True, "data": me}

    def _users_get(self, uid: int | None) -> tuple[int, dict[str, Any]]:
        user = self.users.get(uid or 0)
        if user is None:
            raise ApiError(404, "User not found")
        return 200, {"success": True, "data": self._user_v1(user)}

    def _v1_stages(self, _: int | None) -> tuple[int, dict[str, Any]]:
        pipeline = self._arg_int("pipeline_id")
        created = "2019-01-01 00:00:00"
        data = [
            {
                "id": sid,
                "order_nr": i,
                "name": name,
                "active_flag": True,
                "deal_probability": 100,
                "pipeline_id": PIPELINE_ID,
                "rotten_flag": False,
                "rotten_days": None,
                "add_time": created,
                "update_time": None,
                "pipeline_name": PIPELINE_NAME,
                "pipeline_deal_probability": False,
            }
            for i, (sid, name) in enumerate(STAGES, 1)
        ]
        return 200, {"success": True, "data": data if pipeline in (None, PIPELINE_ID) else []}

    def _stages(self, _: int | None) -> tuple[int, dict[str, Any]]:
        pipeline = self._arg_int("pipeline_id")
        created = "2019-01-01T00:00:00Z"
        data = [
            {
                "id": sid,
                "order_nr": i,
                "name": name,
                "is_deleted": False,
                "deal_probability": 100,
                "pipeline_id": PIPELINE_ID,
                "is_deal_rot_enabled": False,
                "days_to_rotten": None,
                "add_time": created,
                "update_time": None,
            }
            for i, (sid, name) in enumerate(STAGES, 1)
        ]
        return 200, {
            "success": True,
            "data": data if pipeline in (None, PIPELINE_ID) else [],
            "additional_data": {"next_cursor": None},
        }

    def _deal_fields(self, _: int | None) -> tuple[int, dict[str, Any]]:
        standard = (
            ("title", "Title", "varchar"),
            ("value", "Value", "monetary"),
            ("stage_id", "Stage", "stage"),
            ("status", "Status", "status"),
            ("lost_reason", "Lost reason", "varchar_options"),
            ("expected_close_date", "Expected close date", "date"),
            ("user_id", "Owner", "user"),
            ("org_id", "Organization", "org"),
            ("person_id", "Contact person", "people"),
        )
        data = [
            {"id": i, "key": key, "name": name, "field_type": kind, "edit_flag": False, "active_flag": True}
            for i, (key, name, kind) in enumerate(standard, 1)
        ]
        data += [
            {
                "id": 100 + i,
                "key": key,
                "name": f["name"],
                "field_type": f["field_type"],
                "edit_flag": True,
                "active_flag": True,
            }
            for i, (key, f) in enumerate(self.deal_fields.items())
        ]
        return 200, {
            "success": True,
            "data": data,
            "additional_data": {"pagination": {"start": 0, "limit": len(data), "more_items_in_collection": False}},
        }

    # --- notes -------------------------------------------------------------------------------

    def _notes_add(self, _: int | None) -> tuple[int, dict[str, Any]]:
        given = self._body(v2=False)
        content = given.get("content")
        if not isinstance(content, str) or not content.strip():
            raise ApiError(400, "Content is required")
        refs = {k: _opt_int(given.get(k), k) for k in ("deal_id", "person_id", "org_id", "project_id")}
        lead_id = _opt_text(given.get("lead_id"), "lead_id")
        if all(v is None for v in refs.values()) and not lead_id:
            raise ApiError(400, "A note needs a deal_id, person_id, org_id, lead_id or project_id")
        if refs["deal_id"] is not None and (
            refs["deal_id"] not in self.deals or self.deals[refs["deal_id"]]["is_deleted"]
        ):
            raise ApiError(400, "Deal not found")
        user_id = _opt_int(given.get("user_id"), "user_id") or self.user_id
        if user_id not in self.users:
            raise ApiError(400, "User not found")
        now = _ts(self._now())
        note_id = self._next_id("note")
        note = {
            "id": note_id,
            "user_id": user_id,
            **refs,
            "lead_id": lead_id,
            "content": content,
            "add_time": now,
            "update_time": now,
            "active_flag": True,
            "pinned_to_deal_flag": _bool(given.get("pinned_to_deal_flag", False), "pinned_to_deal_flag"),
            "pinned_to_person_flag": False,
            "pinned_to_organization_flag": False,
            "pinned_to_lead_flag": False,
            "last_update_user_id": None,
        }
        self.notes[note_id] = note
        self._fire("note", "create", note_id, None, note, "api")
        return 201, {"success": True, "data": self._note_v1(note)}

    # persons and organizations: what a search needs of them

    def add_person(self, name: str, *, phones: tuple[str, ...] = (), emails: tuple[str, ...] = ()) -> int:
        """A person as a user enters it in the web app."""
        with self._lock:
            person_id = len(self.persons) + 1
            self.persons[person_id] = {"id": person_id, "name": name, "phones": list(phones), "emails": list(emails)}
            return person_id

    def add_organization(self, name: str, custom_fields: dict[str, str] | None = None) -> int:
        """An organization with custom field values (an INN under its hash key)."""
        with self._lock:
            org_id = len(self.organizations) + 1
            self.organizations[org_id] = {"id": org_id, "name": name, "custom_fields": dict(custom_fields or {})}
            return org_id

    def _search_args(self, allowed: set[str]) -> tuple[str, set[str], bool]:
        term = (request.args.get("term") or "").strip()
        exact = request.args.get("exact_match", "false").lower() == "true"
        if len(term) < (1 if exact else 2):
            raise ApiError(400, "term must be at least 2 characters long (1 with exact_match)")
        fields = {f.strip() for f in (request.args.get("fields") or ",".join(sorted(allowed))).split(",")}
        if not fields <= allowed:
            raise ApiError(400, f"fields must be of: {', '.join(sorted(allowed))}")
        return term, fields, exact

    @staticmethod
    def _search_hit(text: str, term: str, exact: bool, digits: bool = False) -> bool:
        if digits:  # phones are searched by their digits, as typed in any format
            text, term = re.sub(r"\D", "", text), re.sub(r"\D", "", term)
        return text.lower() == term.lower() if exact else term.lower() in text.lower()

    def _persons_search(self, _: int | None) -> tuple[int, dict[str, Any]]:
        term, fields, exact = self._search_args({"name", "email", "phone", "notes", "custom_fields"})
        items = []
        for person in self.persons.values():
            hit = (
                ("name" in fields and self._search_hit(person["name"], term, exact))
                or ("email" in fields and any(self._search_hit(e, term, exact) for e in person["emails"]))
                or ("phone" in fields and any(self._search_hit(p, term, exact, digits=True) for p in person["phones"]))
            )
            if hit:
                item = {"id": person["id"], "type": "person", "name": person["name"], "phones": person["phones"]}
                item.update(emails=person["emails"], visible_to=3, owner={"id": self.user_id}, organization=None)
                items.append({"result_score": 1.0 if exact else 0.5, "item": item})
        limit = self._limit()
        return 200, {"success": True, "data": {"items": items[:limit]}, "additional_data": {"next_cursor": None}}

    def _organizations_search(self, _: int | None) -> tuple[int, dict[str, Any]]:
        term, fields, exact = self._search_args({"name", "address", "notes", "custom_fields"})
        items = []
        for org in self.organizations.values():
            hit = ("name" in fields and self._search_hit(org["name"], term, exact)) or (
                "custom_fields" in fields
                and any(self._search_hit(str(v), term, exact) for v in org["custom_fields"].values())
            )
            if hit:
                item = {"id": org["id"], "type": "organization", "name": org["name"], "address": None}
                item.update(visible_to=3, owner={"id": self.user_id}, custom_fields=list(org["custom_fields"].values()))
                items.append({"result_score": 1.0 if exact else 0.5, "item": item})
        limit = self._limit()
        return 200, {"success": True, "data": {"items": items[:limit]}, "additional_data": {"next_cursor": None}}

    def _notes_list(self, _: int | None) -> tuple[int, dict[str, Any]]:
        start = self._arg_int("start") or 0
        limit = self._limit(cap=True)
        wanted = {k: self._arg_int(k) for k in ("deal_id", "person_id", "org_id", "user_id")}
        rows = [
            n
            for n in self.notes.values()
            if n["active_flag"] and all(v is None or n[k] == v for k, v in wanted.items())
        ]
        rows = self._v1_sorted(rows, request.args.get("sort") or "id ASC", ("id", "add_time", "update_time"))
        page = [self._note_v1(n) for n in rows[start : start + limit]]
        return 200, self._v1_page(page, start, limit, len(rows))

    def _note_v1(self, note: Mapping[str, Any]) -> dict[str, Any]:
        deal = self.deals.get(note["deal_id"]) if note["deal_id"] is not None else None
        user = self.users.get(note["user_id"])
        out = {k: v for k, v in note.items()}
        out.update(
            add_time=_v1_time(note["add_time"]),
            update_time=_v1_time(note["update_time"]),
            deal={"title": deal["title"]} if deal else None,
            organization=None,
            person=None,
            user={"email": user["email"], "name": user["name"], "icon_url": None, "is_you": user["id"] == self.user_id}
            if user
            else None,
        )
        return out

    @staticmethod
    def _note_hook_v2(note: Mapping[str, Any]) -> dict[str, Any]:
        keys = (
            "id",
            "user_id",
            "deal_id",
            "person_id",
            "org_id",
            "lead_id",
            "project_id",
            "active_flag",
            "content",
            "add_time",
            "update_time",
            "pinned_to_deal_flag",
            "pinned_to_person_flag",
            "pinned_to_organization_flag",
        )
        return {key: note[key] for key in keys}

    # --- webhooks over HTTP ------------------------------------------------------------------

    def _webhooks_add(self, _: int | None) -> tuple[int, dict[str, Any]]:
        hook = self._create_webhook(self._body(v2=False))
        return 201, {"status": "ok", "success": True, "data": copy.deepcopy(hook)}

    def _webhooks_list(self, _: int | None) -> tuple[int, dict[str, Any]]:
        return 200, {
            "status": "ok",
            "success": True,
            "data": [copy.deepcopy(h) for _, h in sorted(self.webhooks.items())],
        }

    def _webhooks_delete(self, hook_id: int | None) -> tuple[int, dict[str, Any]]:
        if self.webhooks.pop(hook_id or 0, None) is None:
            raise ApiError(404, "Webhook not found")
        self._hook_state.pop(hook_id or 0, None)
        return 200, {"status": "ok", "success": True}


def _cost(method: str, template: str) -> int:
    """Daily-budget tokens of one call: get 2, list 20, create/update 10, delete 6, search 40 on
    v1; v2 endpoints cost half (the documented get 1, list 10, write 5, delete 3)."""
    if "/search" in template:
        base = 40
    elif method == "GET":
        base = 2 if template.endswith("}") or template.endswith("/me") else 20
    elif method == "DELETE":
        base = 6
    else:
        base = 10
    return base // 2 if template.startswith("/api/v2/") else base


def main(argv: list[str] | None = None) -> None:
    """Serve a simulator until interrupted: ``python -m simulators.pipedrive --port 8082``."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators.pipedrive", description="Simulated Pipedrive company behind an API token."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--token", default="simtoken", help="the API token clients must send")
    parser.add_argument("--domain", default="sim", help="company domain ({domain}.pipedrive.com)")
    parser.add_argument("--burst-limit", type=int, default=20, help="requests per rolling 2 s window")
    parser.add_argument("--daily-budget", type=int, default=None, help="daily token budget (default: none)")
    parser.add_argument("--retry-delays", default="3,30,150", help="webhook retry delays in seconds")
    parser.add_argument("--webhook", default=None, help="subscribe this URL to all deal events (v2)")
    parser.add_argument("--webhook-user", default=None, help="HTTP Basic user for --webhook")
    parser.add_argument("--webhook-password", default=None, help="HTTP Basic password for --webhook")
    parser.add_argument("--seed-deals", type=int, default=0, help="create this many deals at start")
    args = parser.parse_args(argv)
    delays = tuple(float(x) for x in args.retry_delays.split(",") if x.strip())
    sim = PipedriveSimulator(
        api_token=args.token,
        company_domain=args.domain,
        burst_limit=args.burst_limit,
        daily_budget=args.daily_budget,
        webhook_retry_delays=delays,
    )
    if args.webhook:
        sim.add_webhook(args.webhook, http_auth_user=args.webhook_user, http_auth_password=args.webhook_password)
    for i in range(1, args.seed_deals + 1):
        sim.add_deal({"title": f"Seed deal {i}", "value": 100 * i, "stage_id": STAGES[i % len(STAGES)][0]})
    sim.serve_until_interrupted(
        args.host, args.port, lambda url: f"Pipedrive simulator: base_url={url} api_token={args.token}"
    )


if __name__ == "__main__":
    main()
