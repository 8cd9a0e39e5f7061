"""A Bitrix24 REST simulator: an inbound webhook, a leaky bucket and outbound events.

It behaves like a Bitrix24 portal seen through ``https://PORTAL/rest/{USER_ID}/{CODE}/``
(see ``/work/shared/api-notes/bitrix24.md`` and the official REST docs): the success and
error envelopes, 50-row paging with ``total``/``next`` (and ``start=-1``), ``batch`` with
``$result[...]`` substitution (up to 50 commands), the per-portal leaky bucket answering 503
``QUERY_LIMIT_EXCEEDED`` (one hit per HTTP request, a ``batch`` included), the per-method
operating-time limit answering 429 ``OPERATION_TIME_LIMIT`` (``time.operating`` and
``operating_reset_at`` in every answer), 401 ``NO_AUTH_FOUND`` for an unknown webhook,
string-typed deal fields, camelCase task answers and form-encoded outbound events
(``ONCRMDEALADD``/``UPDATE``/``DELETE``) that are never retried.

Ids come from separate ranges (deals from 1, tasks from 3701, comments from 901) so a
client that mixes them up is caught. Users start with the webhook's own user (the portal
administrator), as on a real portal.

Run it on its own with ``python -m simulators.bitrix24 --port 8081 --token simulator-token
--handler-url URL``.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask, Response, request

from simulators import FaultKnobs, LeakyBucket, WebhookSender
from simulators.base import ApiSimulator, Call, ErrorAnswer

log = logging.getLogger(__name__)

MSK = timezone(timedelta(hours=3))
PAGE_SIZE = 50
BATCH_MAX = 50
OPERATING_WINDOW = 600  # seconds: Bitrix24 sums a method's running time over the last 10 minutes
OPERATING_LIMIT = 480.0  # seconds of one method's running time in that window before it is blocked

DEAL_EVENTS = ("ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMDEALDELETE")
KNOWN_EVENTS = frozenset({*DEAL_EVENTS, "ONTASKADD", "ONTASKUPDATE", "ONTASKDELETE", "ONCRMTIMELINECOMMENTADD"})
WRITE_METHODS = frozenset(
    {
        "crm.deal.add",
        "crm.deal.update",
        "crm.deal.delete",
        "tasks.task.add",
        "tasks.task.update",
        "tasks.task.complete",
        "crm.timeline.comment.add",
        "crm.activity.add",
        "event.bind",
        "event.unbind",
    }
)

# crm.activity: the standard provider and its type id behind each TYPE_ID a portal logs.
_ACTIVITY_PROVIDERS = {
    "1": ("CRM_MEETING", "MEETING"),
    "2": ("VOXIMPLANT_CALL", "CALL"),
    "3": ("CRM_TASKS_TASK", "TASK"),
    "4": ("CRM_EMAIL", "EMAIL"),
    "6": ("CRM_TODO", "TODO"),
}

# Standard deal fields in the order crm.deal.get returns them.
DEAL_FIELDS = (
    "ID",
    "TITLE",
    "TYPE_ID",
    "STAGE_ID",
    "PROBABILITY",
    "CURRENCY_ID",
    "OPPORTUNITY",
    "IS_MANUAL_OPPORTUNITY",
    "TAX_VALUE",
    "LEAD_ID",
    "COMPANY_ID",
    "CONTACT_ID",
    "BEGINDATE",
    "CLOSEDATE",
    "ASSIGNED_BY_ID",
    "CREATED_BY_ID",
    "MODIFY_BY_ID",
    "DATE_CREATE",
    "DATE_MODIFY",
    "OPENED",
    "CLOSED",
    "COMMENTS",
    "CATEGORY_ID",
    "STAGE_SEMANTIC_ID",
    "IS_NEW",
    "SOURCE_ID",
    "SOURCE_DESCRIPTION",
    "MOVED_BY_ID",
    "MOVED_TIME",
)
# Computed by the portal; a client sending them is silently ignored, like the real API does.
_DEAL_READ_ONLY = frozenset(
    {
        "ID",
        "DATE_CREATE",
        "DATE_MODIFY",
        "CREATED_BY_ID",
        "MODIFY_BY_ID",
        "STAGE_SEMANTIC_ID",
        "CLOSED",
        "IS_NEW",
        "MOVED_BY_ID",
        "MOVED_TIME",
    }
)
_DEAL_DATES = frozenset({"BEGINDATE", "CLOSEDATE"})

# (CATEGORY_ID, STATUS_ID, NAME, SORT, SEMANTICS, EXTRA.SEMANTICS, COLOR), as crm.status.list has them.
_STAGES: tuple[tuple[str, str, str, int, str | None, str, str], ...] = (
    ("0", "NEW", "New", 10, None, "process", "#39A8EF"),
    ("0", "PREPARATION", "Document preparation", 20, None, "process", "#2FC6F6"),
    ("0", "PREPAYMENT_INVOICE", "Prepayment invoice", 30, None, "process", "#55D0E0"),
    ("0", "EXECUTING", "In progress", 40, None, "process", "#47E4C2"),
    ("0", "FINAL_INVOICE", "Final invoice", 50, None, "process", "#FFA900"),
    ("0", "WON", "Deal successful", 60, "S", "success", "#7BD500"),
    ("0", "LOSE", "Deal failed", 70, "F", "failure", "#FF5752"),
    ("0", "APOLOGY", "Failure reason analysis", 80, "F", "apology", "#FF5752"),
    ("1", "C1:NEW", "New", 10, None, "process", "#39A8EF"),
    ("1", "C1:PREPARATION", "Preparation", 20, None, "process", "#2FC6F6"),
    ("1", "C1:EXECUTING", "In progress", 30, None, "process", "#47E4C2"),
    ("1", "C1:WON", "Deal successful", 40, "S", "success", "#7BD500"),
    ("1", "C1:LOSE", "Deal failed", 50, "F", "failure", "#FF5752"),
)
_ALL_SCOPES = ("bizproc", "calendar", "crm", "department", "disk", "im", "log", "placement", "task", "user")
_FIELD_TYPES = {
    "ID": "integer",
    "OPPORTUNITY": "double",
    "CURRENCY_ID": "crm_currency",
    "STAGE_ID": "crm_status",
    "CATEGORY_ID": "crm_category",
    "ASSIGNED_BY_ID": "user",
    "CREATED_BY_ID": "user",
    "MODIFY_BY_ID": "user",
    "DATE_CREATE": "datetime",
    "DATE_MODIFY": "datetime",
    "BEGINDATE": "date",
    "CLOSEDATE": "date",
    "OPENED": "char",
    "CLOSED": "char",
}
_FIELD_TITLES = {"ID": "ID", "TITLE": "Name", "STAGE_ID": "Stage", "ASSIGNED_BY_ID": "Responsible person"}
_STAGE_SEMANTIC = {stage: sem or "P" for _, stage, _, _, sem, _, _ in _STAGES}
_FIRST_STAGE = {"0": "NEW", "1": "C1:NEW"}

_TASK_STATUSES = frozenset({"1", "2", "3", "4", "5", "6", "7"})
_FILTER_KEY = re.compile(r"^(!=%|!%=|!@|!%|!=|>=|<=|=%|%=|>|<|@|%|=|!)?(.+)$")
_SUBST = re.compile(r"\$(result|result_error|result_total|result_next|result_time)\[([^\]]*)\]((?:\[[^\]]*\])*)")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


class RestError(ErrorAnswer):
    """An error answer: HTTP status, Bitrix24 error code and description."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status, self.code, self.description = status, code, description

    def body(self) -> dict[str, str]:
        return {"error": self.code, "error_description": self.description}


def _not_found() -> RestError:
    # CRM methods answer "not found" with an empty error code.
    return RestError(400, "", "Not found")


@dataclass
class _Answer:
    result: Any
    total: int | None = None
    next: int | None = None


@dataclass
class _Call(Call):
    """One REST call: the webhook path it came on, and what ``resolve`` reads from it."""

    user_id: str
    code: str
    method: str
    t0: float  # perf_counter() when it arrived: the answer's duration counts from here
    started: datetime
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    cost: float | None = None  # server time spent on it, waits for the simulator's lock excluded


# --- PHP-style parameters -------------------------------------------------------------------


def parse_php_params(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest ``FILTER[>ID]=5&select[]=ID&fields[UF_CRM_TASK][0]=D_1`` pairs like PHP does.

    ``[]`` appends; a map whose keys are exactly ``0..n-1`` becomes a list (PHP arrays
    are both). Keys that are not PHP-style stay flat names.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        base, _, rest = key.partition("[")
        rest = "[" + rest if rest else ""
        parts = re.findall(r"\[([^\]]*)\]", rest)
        if not base or ("".join(f"[{p}]" for p in parts) != rest):
            if not base:
                continue
            base, parts = key, []
        node = root
        path = [base, *parts]
        for i, part in enumerate(path):
            if part == "":
                part = str(1 + max((int(k) for k in node if k.isdigit()), default=-1))
            if i == len(path) - 1:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
    return _listify(root)


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        items = {k: _listify(v) for k, v in node.items()}
        if items and list(items) == [str(i) for i in range(len(items))]:
            return list(items.values())
        return items
    return node


def _php_json(section: Mapping[str, Any]) -> Any:
    """PHP's json_encode: an empty array is ``[]``, keys 0..n-1 make a list."""
    if not section:
        return []
    if list(section) == [str(i) for i in range(len(section))]:
        return list(section.values())
    return dict(section)


def _upper_keys(params: Mapping[str, Any]) -> dict[str, Any]:
    # Older CRM methods upper-case their top-level keys, so {"id": 1} and {"ID": 1} both work.
    return {str(k).upper(): v for k, v in params.items()}


def _as_map(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        return list(value.values())
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in {"1", "y", "true", "yes"}


# --- values, filters, ordering, paging ------------------------------------------------------


def _str_value(value: Any) -> Any:
    """Bitrix24 answers field values as strings (lists stay lists of strings)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, (list, tuple)):
        return [_str_value(v) for v in value]
    if isinstance(value, dict):
        return [_str_value(v) for v in value.values()]
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _money(value: Any) -> str:
    try:
        return f"{Decimal(str(value or 0)):.2f}"
    except InvalidOperation:
        return "0.00"


def _parse_dt(text: str, tz: tzinfo) -> datetime | None:
    if len(text) < 10 or text[4] != "-":
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            day = date.fromisoformat(text[:10])
        except ValueError:
            return None
        parsed = datetime(day.year, day.month, day.day)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


def _key(value: Any, tz: tzinfo) -> tuple[int, Any]:
    """A sortable, typed form: numbers compare as numbers, datetimes across offsets."""
    if value is None or value == "":
        return (0, "")
    if isinstance(value, bool):
        value = "Y" if value else "N"
    return _key_text(str(value), tz)


@functools.lru_cache(maxsize=1 << 17)
def _key_text(text: str, tz: tzinfo) -> tuple[int, Any]:
    # Cached: every filter and sort of a list call types the same few thousand strings again
    # (a regex and a datetime parse each), which dominated the simulator's time per page.
    if _NUMBER.match(text):
        return (1, Decimal(text))
    parsed = _parse_dt(text, tz)
    if parsed is not None:
        return (2, parsed)
    return (3, text.casefold())


def _cmp(a: Any, b: Any, tz: tzinfo) -> int:
    ka, kb = _key(a, tz), _key(b, tz)
    if ka[0] != kb[0]:
        ka, kb = (3, str(a).casefold()), (3, str(b).casefold())
    return (ka[1] > kb[1]) - (ka[1] < kb[1])


def _like(pattern: str, text: str) -> bool:
    regex = ".*".join(re.escape(p) for p in pattern.casefold().split("%"))
    return re.fullmatch(regex.replace("_", "."), text.casefold()) is not None


def _test(op: str, actual: Any, wanted: Any, tz: tzinfo) -> bool:
    values = actual if isinstance(actual, list) else [actual]
    if op in ("", "=", "@"):
        wanted_list = _as_list(wanted)
        if wanted == "" or wanted_list == []:
            return all(v in (None, "") for v in values)  # an empty value filters for "not set"
        return any(v is not None and _cmp(v, w, tz) == 0 for v in values for w in wanted_list)
    if op in ("!", "!=", "!@"):
        return not _test("", actual, wanted, tz)
    if op in ("%", "!%"):
        found = any(v is not None and str(wanted).casefold() in str(v).casefold() for v in values)
        return found != (op == "!%")
    if op in ("=%", "%=", "!=%", "!%="):
        found = any(v is not None and _like(str(wanted), str(v)) for v in values)
        return found != op.startswith("!")
    present = [v for v in values if v not in (None, "")]
    checks = {">": lambda c: c > 0, ">=": lambda c: c >= 0, "<": lambda c: c < 0, "<=": lambda c: c <= 0}
    return any(checks[op](_cmp(v, wanted, tz)) for v in present)


def _filter_rows(
    rows: Iterable[dict[str, Any]], flt: Mapping[str, Any], tz: tzinfo, aliases: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Rows matching every ``[op]FIELD: value`` condition of a Bitrix24 filter."""
    conditions = _conditions(flt, aliases)
    return [r for r in rows if all(_test(op, r.get(f), w, tz) for op, f, w in conditions)]


def _conditions(flt: Mapping[str, Any], aliases: Mapping[str, str] | None = None) -> list[tuple[str, str, Any]]:
    """A filter as ``(operator, FIELD, wanted)`` triples; keys that are no condition are dropped."""
    conditions = []
    for raw_key, wanted in flt.items():
        m = _FILTER_KEY.match(str(raw_key))
        if not m or str(raw_key).startswith("::"):
            continue
        field = m.group(2).upper()
        conditions.append((m.group(1) or "", (aliases or {}).get(field, field), wanted))
    return conditions


def _order_keys(order: Mapping[str, Any], default: tuple[str, str] = ("ID", "ASC")) -> list[tuple[str, str]]:
    keys = [(str(k).upper(), str(v).upper()) for k, v in order.items()] or [default]
    if "ID" not in (k for k, _ in keys):
        keys.append(("ID", default[1]))  # a stable tie-break keeps pages from overlapping
    return keys


def _order_rows(
    rows: list[dict[str, Any]], order: Mapping[str, Any], tz: tzinfo, default: tuple[str, str] = ("ID", "ASC")
) -> list[dict[str, Any]]:
    keys = _order_keys(order, default)
    for field, direction in reversed(keys):

        def sort_key(row: dict[str, Any], f: str = field) -> Any:
            return _key(row.get(f), tz)

        rows = sorted(rows, key=sort_key, reverse=direction == "DESC")
    return rows


def _offset(start: Any) -> int:
    """The ``start`` parameter as an offset; -1 is the fast export (no count)."""
    try:
        offset = int(start or 0)
    except (TypeError, ValueError):
        offset = 0
    return -1 if offset == -1 else max(offset, 0)


def _page(rows: list[Any], start: Any) -> tuple[list[Any], int | None, int | None]:
    """One 50-row page, ``total`` and ``next``; ``start=-1`` skips the count (fast export)."""
    offset = _offset(start)
    if offset == -1:
        return rows[:PAGE_SIZE], None, None
    chunk = rows[offset : offset + PAGE_SIZE]
    nxt = offset + PAGE_SIZE if offset + PAGE_SIZE < len(rows) else None
    return chunk, len(rows), nxt


_RANGE_OPS = frozenset({"", "=", ">", ">=", "<", "<="})


class _SortedView:
    """Rows in one list order with their typed sort keys: an index for ranges on the order's fields.

    A real portal answers keyset pages (``>DATE_MODIFY``, ``=DATE_MODIFY`` + ``>ID``) from an
    index; the simulator did the same work as a full scan, render and sort on every page. The
    view is built once per state of the deals and order, and answers are the same as the scan's:
    the index only skips rows that provably fail a condition, every other condition is tested
    row by row with the same ``_test``.
    """

    def __init__(self, rows: list[dict[str, Any]], order: list[tuple[str, str]], tz: tzinfo) -> None:
        self.rows = rows
        self.fields = [f for f, _ in order]
        self.ascending = all(d != "DESC" for _, d in order)
        self.keys = [tuple(_key(r.get(f), tz) for f in self.fields) for r in rows]
        # A field is indexable only when every row's key has one type (a number, a datetime):
        # across types ``_cmp`` compares text, which the key order does not follow.
        self.tags = [self._one_tag(i) for i in range(len(self.fields))]

    def _one_tag(self, i: int) -> int | None:
        tags = {k[i][0] for k in self.keys}
        return tags.pop() if len(tags) == 1 else None

    def select(self, conditions: list[tuple[str, str, Any]], tz: tzinfo) -> tuple[range, list[tuple[str, str, Any]]]:
        """The index range that can hold matches, and the conditions still to test on each row."""
        lo, hi = 0, len(self.rows)
        residual = list(conditions)
        if not self.ascending:
            return range(lo, hi), residual
        for i, field in enumerate(self.fields):
            usable = [c for c in residual if c[1] == field and self._usable(i, c, tz)]
            if not usable:
                break
            pinned = False
            for cond in usable:
                op, _, wanted = cond
                bound = _key(wanted, tz)
                prefix = self.keys[lo][:i] if lo < hi else ()

                def key_of(k: tuple[Any, ...], n: int = i) -> tuple[Any, ...]:
                    return k[: n + 1]

                if op in ("", "=", ">="):
                    lo = max(lo, bisect.bisect_left(self.keys, (*prefix, bound), lo, hi, key=key_of))
                if op == ">":
                    lo = max(lo, bisect.bisect_right(self.keys, (*prefix, bound), lo, hi, key=key_of))
                if op in ("", "=", "<="):
                    hi = min(hi, bisect.bisect_right(self.keys, (*prefix, bound), lo, hi, key=key_of))
                if op == "<":
                    hi = min(hi, bisect.bisect_left(self.keys, (*prefix, bound), lo, hi, key=key_of))
                hi = max(lo, hi)
                pinned = pinned or op in ("", "=")
                residual.remove(cond)
            if not pinned:
                break  # a range on this field: later fields are not sorted within it
        return range(lo, hi), residual

    def _usable(self, i: int, cond: tuple[str, str, Any], tz: tzinfo) -> bool:
        op, _, wanted = cond
        if op not in _RANGE_OPS or isinstance(wanted, (list, tuple, dict)) or wanted in (None, ""):
            return False
        tag = _key(wanted, tz)[0]
        return tag in (1, 2) and self.tags[i] == tag


def _comm_key(kind: str, value: str) -> str:
    """A phone or e-mail as the portal compares them: digits (a Russian 8 read as 7), or lower case."""
    if kind == "EMAIL":
        return value.strip().lower()
    digits = re.sub(r"\D", "", value)
    return "7" + digits[1:] if len(digits) == 11 and digits[0] == "8" else digits


def _camel(name: str) -> str:
    head, *rest = name.lower().split("_")
    return head + "".join(p.capitalize() for p in rest)


# --- the simulator --------------------------------------------------------------------------


class Bitrix24Simulator(ApiSimulator[_Call, _Answer]):
    """One simulated portal reached through one inbound webhook.

    State lives in plain dicts of strings (``deals``, ``tasks``, ``users``, ``comments``)
    behind one lock. ``clock`` is the portal's wall time (dates, ``time`` figures, the
    operating-time window); ``monotonic`` drains the leaky bucket and ends method blocks. A test
    passes fakes of both instead of sleeping. ``bucket`` may be replaced, ``faults`` tuned,
    ``handler_url`` changed at run time.
    """

    def __init__(
        self,
        *,
        webhook_user_id: int = 1,
        webhook_code: str = "simcode",
        application_token: str = "simtoken",
        domain: str = "sim.bitrix24.ru",
        rate: float = 2.0,
        burst: float = 50,
        faults: FaultKnobs | None = None,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        handler_url: str | None = None,
        operating_limit: float = OPERATING_LIMIT,
        method_time: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(faults)
        self.webhook_user_id = webhook_user_id
        self.webhook_code = webhook_code
        self.application_token = application_token
        self.domain = domain
        self.monotonic = monotonic
        self.bucket = LeakyBucket(rate, burst, clock=monotonic)
        self.webhooks = WebhookSender(self.faults)
        self.handler_url = handler_url
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(MSK))
        self.refusals = 0
        self.overloaded = False  # True: every call answers 503 OVERLOAD_LIMIT (a manual block)
        # Deals the webhook's user may not read: crm.deal.get answers "Access denied." for them.
        self.denied_deals: set[str] = set()
        self.deals: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, dict[str, Any]] = {}
        self.departments: dict[str, dict[str, Any]] = {"1": {"ID": "1", "NAME": "Компания", "SORT": 500}}
        self.deal_user_fields: set[str] = set()
        # User fields declared in the portal's settings (name -> label), as crm.deal.fields lists them.
        self.deal_user_field_labels: dict[str, str] = {}
        # The scopes ticked when the inbound webhook was created (``scope`` answers them).
        self.scopes: list[str] = ["crm", "task", "user"]
        # Client records: contacts, companies and leads with their PHONE/EMAIL multi-fields, and
        # requisites (RQ_INN) of contacts (ENTITY_TYPE_ID 3) and companies (4).
        self.clients: dict[str, dict[str, dict[str, Any]]] = {"CONTACT": {}, "COMPANY": {}, "LEAD": {}}
        self.requisites: list[dict[str, Any]] = []
        self.member_id = hashlib.md5(domain.encode()).hexdigest()
        self.activities: dict[str, dict[str, Any]] = {}
        self.stage_history: list[dict[str, Any]] = []  # crm.stagehistory.list rows of deals
        # The portal's deal stages (crm.status.list): the defaults, and those add_stage sets up.
        self.stages: list[tuple[str, str, str, int, str | None, str, str]] = list(_STAGES)
        self._stage_semantic = dict(_STAGE_SEMANTIC)
        self._ids = {"deal": 1, "task": 3701, "comment": 901, "user": 1, "handler": 1, "activity": 5001}
        # The outgoing webhook configured in the portal's UI: one handler id per event.
        self.outgoing_events: dict[str, int] = {ev: self._next_id("handler") for ev in DEAL_EVENTS}
        self.bindings: dict[str, tuple[int, str]] = {}  # event -> (handler id, url), from event.bind
        self._blocked: dict[str, float] = {}
        # The operating-time limit: past ``operating_limit`` seconds of one method's server time
        # within the last ``OPERATING_WINDOW`` seconds, that method answers 429 until enough of
        # its time leaves the window; other methods go on. ``method_time`` sets the server time a
        # call of a method costs (e.g. a heavy ``crm.deal.list``); others cost what they took here.
        self.operating_limit = operating_limit
        self.method_time: dict[str, float] = dict(method_time or {})
        self._operating: dict[str, collections.deque[tuple[float, float]]] = {}
        # Each method's time within the window, kept as the window moves: summing the window on
        # every command grew with the commands run and slowed every client's later rounds.
        self._operating_sum: dict[str, float] = collections.defaultdict(float)
        self.http_requests = 0  # hits of the leaky bucket: one per HTTP request, a batch included
        # Sorted deal lists by (order, time zone), valid while no deal is added, changed or deleted.
        self._views: dict[tuple[Any, ...], _SortedView] = {}
        self._methods: dict[str, Callable[[dict[str, Any]], _Answer]] = {
            "crm.deal.add": self._deal_add,
            "crm.deal.get": self._deal_get,
            "crm.deal.list": self._deal_list,
            "crm.deal.update": self._deal_update,
            "crm.deal.delete": self._deal_delete,
            "crm.status.list": self._status_list,
            "crm.deal.fields": self._deal_fields,
            "scope": self._scope,
            "crm.duplicate.findbycomm": self._duplicate_findbycomm,
            "crm.requisite.list": self._requisite_list,
            "tasks.task.add": self._task_add,
            "tasks.task.get": self._task_get,
            "tasks.task.list": self._task_list,
            "tasks.task.update": self._task_update,
            "tasks.task.complete": self._task_complete,
            "user.get": self._user_get,
            "department.get": self._department_get,
            "user.current": self._user_current,
            "crm.timeline.comment.add": self._comment_add,
            "crm.timeline.comment.list": self._comment_list,
            "event.bind": self._event_bind,
            "event.unbind": self._event_unbind,
            "event.get": self._event_get,
            "crm.activity.add": self._activity_add,
            "crm.activity.list": self._activity_list,
            "crm.stagehistory.list": self._stagehistory_list,
        }
        self.add_user("Admin", "Simulator", user_id=str(webhook_user_id), position="Administrator")
        self.app = self._build_app()

    # --- direct manipulation, as a user in the CRM UI would do -----------------------------

    @property
    def webhook_base(self) -> str:
        """The inbound webhook's path prefix, ``/rest/{user_id}/{code}/``."""
        return f"/rest/{self.webhook_user_id}/{self.webhook_code}/"

    def add_user(
        self,
        name: str,
        last_name: str = "",
        active: bool = True,
        department: list[int] | None = None,
        position: str = "",
        *,
        user_id: str | None = None,
        email: str = "",
    ) -> str:
        """Add an employee; ``user_id`` pins the id (e.g. to match ids in a config)."""
        with self._lock:
            uid = str(user_id) if user_id is not None else str(self._next_id("user"))
            if uid.isdigit():
                self._ids["user"] = max(self._ids["user"], int(uid) + 1)
            self.users[uid] = {
                "ID": uid,
                "ACTIVE": bool(active),
                "NAME": name,
                "LAST_NAME": last_name,
                "SECOND_NAME": "",
                "EMAIL": email or f"user{uid}@{self.domain}",
                "WORK_POSITION": position,
                "UF_DEPARTMENT": list(department or [1]),
                "USER_TYPE": "employee",
                "IS_ONLINE": "N",
                "DATE_REGISTER": self._iso(self.clock()),
            }
            return uid

    def add_department(self, name: str, *, parent: str = "1", head: str | None = None, dept_id: str) -> str:
        """Add a department of the company structure (``UF_HEAD`` is its head's user id)."""
        with self._lock:
            row: dict[str, Any] = {"ID": dept_id, "NAME": name, "SORT": 500, "PARENT": parent}
            if head is not None:
                row["UF_HEAD"] = head
            self.departments[dept_id] = row
            return dept_id

    def add_deal(self, fields: dict[str, Any]) -> str:
        """Create a deal as a UI user would; fires ONCRMDEALADD."""
        with self._lock:
            return self._create_deal(fields)

    def add_client(
        self, entity: str, name: str, *, phones: tuple[str, ...] = (), emails: tuple[str, ...] = (), inn: str = ""
    ) -> str:
        """A contact, company or lead (``entity``: CONTACT, COMPANY, LEAD) as a UI user enters it."""
        with self._lock:
            records = self.clients[entity]
            record_id = str(len(records) + 1)
            records[record_id] = {
                "ID": record_id,
                "TITLE" if entity != "CONTACT" else "NAME": name,
                "PHONE": [{"ID": str(i), "VALUE": v, "VALUE_TYPE": "WORK"} for i, v in enumerate(phones, 1)],
                "EMAIL": [{"ID": str(i), "VALUE": v, "VALUE_TYPE": "WORK"} for i, v in enumerate(emails, 1)],
            }
            if inn and entity in ("CONTACT", "COMPANY"):
                self.requisites.append(
                    {
                        "ID": str(len(self.requisites) + 1),
                        "ENTITY_TYPE_ID": "3" if entity == "CONTACT" else "4",
                        "ENTITY_ID": record_id,
                        "RQ_INN": inn,
                    }
                )
            return record_id

    def update_deal(self, deal_id: str, fields: dict[str, Any]) -> None:
        """Change a deal as a UI user would; fires ONCRMDEALUPDATE. KeyError if missing."""
        with self._lock:
            if str(deal_id) not in self.deals:
                raise KeyError(deal_id)
            self._change_deal(str(deal_id), fields)

    def delete_deal(self, deal_id: str) -> None:
        """Delete a deal as a UI user would; fires ONCRMDEALDELETE. KeyError if missing."""
        with self._lock:
            del self.deals[str(deal_id)]
            self._views.clear()
            self._fire("ONCRMDEALDELETE", {"FIELDS": {"ID": str(deal_id)}})

    def add_activity(self, fields: dict[str, Any]) -> str:
        """Log an activity (a call, a meeting) as a UI user would; ``COMPLETED: "Y"`` when done."""
        with self._lock:
            return self._create_activity(fields)

    def tasks_for_deal(self, deal_id: str) -> list[dict[str, Any]]:
        """Tasks bound to the deal (``UF_CRM_TASK`` holds ``D_{id}``), stored field names."""
        with self._lock:
            mark = f"D_{deal_id}"
            return [dict(t) for t in self.tasks.values() if mark in (t.get("UF_CRM_TASK") or [])]

    def block_method(self, method: str, seconds: float) -> None:
        """Make ``method`` answer 429 OPERATION_TIME_LIMIT for a while (its time budget is spent)."""
        self._blocked[method.lower()] = self.monotonic() + seconds

    def close(self) -> None:
        """Stop the webhook sender's thread."""
        self.webhooks.close()

    # --- HTTP --------------------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask(f"bitrix24-sim-{id(self)}")

        @app.route("/rest/<user_id>/<code>/<path:method>", methods=["GET", "POST"])
        def rest(user_id: str, code: str, method: str) -> Response:
            return self._handle(user_id, code, method)

        @app.route("/_sim/stats", methods=["GET"])
        def stats() -> Response:
            # The simulator's own counters, for a benchmark running it in another process.
            return self._json(self.stats(), 200)

        return app

    def stats(self) -> dict[str, Any]:
        """Hits, refusals, calls by method, the bucket's level and tasks per deal (``D_{id}``)."""
        with self._lock:
            per_deal: collections.Counter[str] = collections.Counter(
                mark for task in self.tasks.values() for mark in task.get("UF_CRM_TASK") or []
            )
            return {
                "http_requests": self.http_requests,
                "refusals": self.refusals,
                "calls": dict(self.calls),
                "bucket_level": self.bucket.level,
                "tasks": len(self.tasks),
                "tasks_per_deal": dict(per_deal),
            }

    def _handle(self, user_id: str, code: str, method: str) -> Response:
        call = _Call(user_id=user_id, code=code, method=method, t0=time.perf_counter(), started=self.clock())
        return self.answer(call)

    def authenticate(self, call: _Call) -> None:
        # A webhook path with a wrong user or code is an unknown webhook: 401 NO_AUTH_FOUND (the
        # documented 403 INVALID_CREDENTIALS is for a known user whose credentials are refused).
        if call.user_id != str(self.webhook_user_id) or not hmac.compare_digest(call.code, self.webhook_code):
            raise RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")

    def resolve(self, call: _Call) -> None:
        call.method = call.method.lower().removesuffix(".json")
        call.params = self._read_params()
        if self.overloaded:  # a blocked portal answers every call alike, known method or not
            raise RestError(503, "OVERLOAD_LIMIT", "REST API is blocked due to overload")
        if call.method == "batch":
            cmd = _as_map(_upper_keys(call.params).get("CMD"))
            if len(cmd) > BATCH_MAX:
                raise RestError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
        elif call.method not in self._methods:
            raise RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")

    def admit(self, call: _Call) -> None:
        """The leaky bucket, then the method's operating-time block, then the ``limit_rate`` knob.

        The bucket counts hits: one per HTTP request, a ``batch`` of up to 50 commands included
        (Bitrix24's performance guide: a batch makes several calls in one hit).
        """
        with self._lock:
            self.http_requests += 1
        if not self.bucket.try_take(1):
            raise self._refuse()
        if call.method != "batch":
            self._check_blocked(call.method)
        if self.faults.roll(self.faults.limit_rate, "rate_limited"):
            raise self._refuse()  # refused although the bucket had room

    def transient_error(self, call: _Call) -> Exception:
        if self.faults.roll(0.5):
            return self._refuse()
        return self.internal_error(call)

    def handle(self, call: _Call) -> _Answer:
        if call.method == "batch":
            return self._run_batch(call)
        with self._lock:
            c0 = time.perf_counter()
            self.calls[call.method] += 1
            answer = self._methods[call.method](call.params)
            call.cost = time.perf_counter() - c0
        call.wrote = call.method in WRITE_METHODS
        return answer

    def internal_error(self, call: _Call) -> RestError:
        return RestError(500, "INTERNAL_SERVER_ERROR", "Internal server error")

    def success(self, call: _Call, result: _Answer) -> Response:
        body: dict[str, Any] = {"result": result.result}
        if result.total is not None:
            body["total"] = result.total
        if result.next is not None:
            body["next"] = result.next
        body["time"] = self._time(call.method, call.t0, call.started, cost=call.cost)
        return self._json(body, 200)

    def error(self, call: _Call, exc: ErrorAnswer) -> Response:
        assert isinstance(exc, RestError)  # the only error answer this simulator raises
        return self._json(exc.body(), exc.status)

    def _refuse(self) -> RestError:
        with self._lock:
            self.refusals += 1
        return RestError(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")

    def _check_blocked(self, method: str) -> None:
        until = self._blocked.get(method)
        if until is not None and self.monotonic() < until:
            raise RestError(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")
        with self._lock:
            used, _ = self._operating_now(method, self.clock().timestamp())
        if used >= self.operating_limit:
            raise RestError(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")

    def operating(self, method: str) -> tuple[float, int]:
        """``method``'s server time within the window and when part of it is released."""
        with self._lock:
            return self._operating_now(method, self.clock().timestamp())

    def _operating_now(self, method: str, now: float) -> tuple[float, int]:
        spent = self._operating.setdefault(method, collections.deque())
        while spent and spent[0][0] + OPERATING_WINDOW <= now:
            self._operating_sum[method] -= spent.popleft()[1]
        if not spent:
            self._operating_sum[method] = 0.0  # no rounding left over from the ones that expired
        oldest = spent[0][0] if spent else now
        return max(0.0, self._operating_sum[method]), int(oldest + OPERATING_WINDOW)

    def _read_params(self) -> dict[str, Any]:
        params = parse_php_params(request.args.items(multi=True))
        if request.is_json:
            body = request.get_json(silent=True)
            if isinstance(body, dict):
                params.update(body)
        elif request.form:
            params.update(parse_php_params(request.form.items(multi=True)))
        return params

    def _run_batch(self, call: _Call) -> _Answer:
        """Every command in order, each answered in its own section; ``$result[…]`` refers back."""
        p = _upper_keys(call.params)
        cmd = _as_map(p.get("CMD"))
        halt = _truthy(p.get("HALT", 0))
        sections: dict[str, dict[str, Any]] = {
            "result": {},
            "result_error": {},
            "result_total": {},
            "result_next": {},
            "result_time": {},
        }
        with self._lock:
            b0 = time.perf_counter()
            self.calls["batch"] += 1
            for key, query in cmd.items():
                c0, c_started = time.perf_counter(), self.clock()
                name, _, qs = str(query).partition("?")
                name = name.strip().lower().removesuffix(".json")
                try:
                    if name == "batch":
                        raise RestError(405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")
                    handler = self._methods.get(name)
                    if handler is None:
                        raise RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
                    self._check_blocked(name)
                    sub = _substitute(parse_php_params(parse_qsl(qs, keep_blank_values=True)), sections)
                    self.calls[name] += 1
                    answer = handler(sub)
                except RestError as exc:
                    sections["result_error"][key] = exc.body()
                    if halt:
                        break
                    continue
                call.wrote = call.wrote or name in WRITE_METHODS
                sections["result"][key] = answer.result
                if answer.total is not None:
                    sections["result_total"][key] = answer.total
                if answer.next is not None:
                    sections["result_next"][key] = answer.next
                # Each command's own time, operating figures included, is in ``result_time``: the
                # batch's top-level ``time`` is the batch method's.
                sections["result_time"][key] = self._time(name, c0, c_started)
            # The commands' time is charged to their methods; ``batch`` itself is never blocked.
            call.cost = time.perf_counter() - b0
        return _Answer({name: _php_json(section) for name, section in sections.items()})

    def _time(self, method: str, t0: float, started: datetime, cost: float | None = None) -> dict[str, Any]:
        """The answer's ``time`` block; the method is charged ``cost`` (its configured server
        time, or what it took here without waiting for the simulator's lock)."""
        spent = time.perf_counter() - t0
        start = started.timestamp()
        cost = self.method_time.get(method, spent if cost is None else cost)
        with self._lock:
            self._operating.setdefault(method, collections.deque()).append((start, cost))
            self._operating_sum[method] += cost
            used, reset_at = self._operating_now(method, start)
        return {
            "start": start,
            "finish": start + spent,
            "duration": spent,
            "processing": spent,
            "date_start": self._iso(started),
            "date_finish": self._iso(started + timedelta(seconds=spent)),
            "operating_reset_at": reset_at,
            "operating": used,
        }

    @staticmethod
    def _json(body: Any, status: int) -> Response:
        return Response(json.dumps(body), status=status, mimetype="application/json")

    # --- helpers -----------------------------------------------------------------------------

    def _next_id(self, kind: str) -> int:
        with self._lock:
            value = self._ids[kind]
            self._ids[kind] = value + 1
            return value

    @property
    def _tz(self) -> tzinfo:
        return self.clock().tzinfo or MSK

    def _iso(self, moment: datetime) -> str:
        return moment.isoformat(timespec="seconds")

    def _norm_dt(self, value: Any) -> Any:
        parsed = _parse_dt(str(value), self._tz) if value not in (None, "") else None
        return self._iso(parsed.astimezone(self._tz)) if parsed else _str_value(value)

    def _fire(self, event: str, data: Mapping[str, Any]) -> None:
        """Queue one outbound event, form-encoded with PHP-style keys; never retried."""
        if event in self.bindings:
            handler_id, url = self.bindings[event]
        elif self.handler_url and event in self.outgoing_events:
            handler_id, url = self.outgoing_events[event], self.handler_url
        else:
            return
        form: list[tuple[str, str]] = [("event", event), ("event_handler_id", str(handler_id))]
        form += _flatten("data", data)
        form += [
            ("ts", str(int(self.clock().timestamp()))),
            ("auth[domain]", self.domain),
            ("auth[client_endpoint]", f"https://{self.domain}/rest/"),
            ("auth[server_endpoint]", "https://oauth.bitrix.info/rest/"),
            ("auth[member_id]", self.member_id),
            ("auth[application_token]", self.application_token),
        ]
        self.webhooks.send(url, data=form)

    # --- deals -------------------------------------------------------------------------------

    def _create_deal(self, fields: Mapping[str, Any]) -> str:
        now = self._iso(self.clock())
        today = self.clock().replace(hour=0, minute=0, second=0, microsecond=0)
        deal_id = str(self._next_id("deal"))
        given = {str(k).upper(): v for k, v in fields.items()}
        category = str(given.get("CATEGORY_ID") or "0")
        stage = str(given.get("STAGE_ID") or "")
        if stage.startswith("C") and ":" in stage and "CATEGORY_ID" not in given:
            category = stage[1 : stage.index(":")]
        user = str(self.webhook_user_id)
        deal: dict[str, Any] = {
            "ID": deal_id,
            "TITLE": "",
            "TYPE_ID": "SALE",
            "STAGE_ID": _FIRST_STAGE.get(category, f"C{category}:NEW"),
            "PROBABILITY": None,
            "CURRENCY_ID": "RUB",
            "OPPORTUNITY": "0.00",
            "IS_MANUAL_OPPORTUNITY": "N",
            "TAX_VALUE": "0.00",
            "LEAD_ID": None,
            "COMPANY_ID": "0",
            "CONTACT_ID": None,
            "BEGINDATE": self._iso(today),
            "CLOSEDATE": self._iso(today + timedelta(days=7)),
            "ASSIGNED_BY_ID": user,
            "CREATED_BY_ID": user,
            "MODIFY_BY_ID": user,
            "DATE_CREATE": now,
            "DATE_MODIFY": now,
            "OPENED": "Y",
            "CLOSED": "N",
            "COMMENTS": None,
            "CATEGORY_ID": category,
            "STAGE_SEMANTIC_ID": "P",
            "IS_NEW": "Y",
            "SOURCE_ID": None,
            "SOURCE_DESCRIPTION": None,
            "MOVED_BY_ID": user,
            "MOVED_TIME": now,
        }
        self._apply_deal_fields(deal, given, creating=True)
        deal["IS_NEW"] = "Y" if deal["STAGE_ID"] == _FIRST_STAGE.get(category) else "N"
        self.deals[deal_id] = deal
        self._record_stage(deal, created=True)
        self._views.clear()
        self._fire("ONCRMDEALADD", {"FIELDS": {"ID": deal_id}})
        return deal_id

    def _change_deal(self, deal_id: str, fields: Mapping[str, Any]) -> None:
        deal = self.deals[deal_id]
        given = {str(k).upper(): v for k, v in fields.items()}
        given.pop("CATEGORY_ID", None)  # moving a deal between pipelines takes another method
        stage = deal["STAGE_ID"]
        self._apply_deal_fields(deal, given, creating=False)
        if deal["STAGE_ID"] != stage:
            self._record_stage(deal, created=False)
        deal["DATE_MODIFY"] = self._iso(self.clock())
        deal["MODIFY_BY_ID"] = str(self.webhook_user_id)
        self._views.clear()
        self._fire("ONCRMDEALUPDATE", {"FIELDS": {"ID": deal_id}})

    def _apply_deal_fields(self, deal: dict[str, Any], given: Mapping[str, Any], *, creating: bool) -> None:
        for name, value in given.items():
            if name in _DEAL_READ_ONLY or (name == "CATEGORY_ID" and not creating):
                continue
            if name.startswith("UF_CRM_"):
                self.deal_user_fields.add(name)
                deal[name] = _str_value(value)
            elif name == "OPPORTUNITY":
                deal[name] = _money(value)
            elif name in _DEAL_DATES:
                deal[name] = self._norm_dt(value)
            elif name in DEAL_FIELDS:
                deal[name] = _str_value(value)
        if "STAGE_ID" in given:
            semantic = self._stage_semantic.get(str(deal["STAGE_ID"]), "P")
            deal["STAGE_SEMANTIC_ID"] = semantic
            deal["CLOSED"] = "Y" if semantic in ("S", "F") else "N"
            if not creating:
                deal["MOVED_TIME"] = self._iso(self.clock())
                deal["MOVED_BY_ID"] = str(self.webhook_user_id)
                deal["IS_NEW"] = "N"

    def _render_deal(self, deal: Mapping[str, Any], select: list[str] | None = None) -> dict[str, Any]:
        full = {f: deal.get(f) for f in DEAL_FIELDS}
        ufs = {f: deal.get(f) for f in sorted(self.deal_user_fields)}
        if select is None:
            return {**full, **ufs}
        wanted = {s.upper() for s in select}
        if not wanted:
            return full
        out: dict[str, Any] = {}
        for name, value in {**full, **ufs}.items():
            is_uf = name.startswith("UF_")
            if name in wanted or ("*" in wanted and not is_uf) or ("UF_*" in wanted and is_uf):
                out[name] = value
        return out

    def _deal_id(self, p: Mapping[str, Any]) -> str:
        raw = p.get("ID")
        if raw is None or not str(raw).strip().isdigit() or int(str(raw)) <= 0:
            raise RestError(400, "", "ID is not defined or invalid.")
        return str(int(str(raw)))

    def _deal_add(self, params: dict[str, Any]) -> _Answer:
        fields = _upper_keys(params).get("FIELDS")
        if not isinstance(fields, dict):
            raise RestError(400, "", "Parameter 'fields' must be array.")
        return _Answer(int(self._create_deal(fields)))

    def _deal_get(self, params: dict[str, Any]) -> _Answer:
        deal_id = self._deal_id(_upper_keys(params))
        if deal_id in self.denied_deals:
            raise RestError(400, "", "Access denied.")
        deal = self.deals.get(deal_id)
        if deal is None:
            raise _not_found()
        return _Answer(self._render_deal(deal))

    def _deal_list(self, params: dict[str, Any]) -> _Answer:
        p = _upper_keys(params)
        select = [str(s) for s in _as_list(p.get("SELECT"))]
        chunk, total, nxt = self._query_deals(_as_map(p.get("FILTER")), _as_map(p.get("ORDER")), p.get("START"))
        return _Answer([self._render_deal(r, select) for r in chunk], total, nxt)

    def _query_deals(
        self, flt: Mapping[str, Any], order: Mapping[str, Any], start: Any
    ) -> tuple[list[dict[str, Any]], int | None, int | None]:
        """One page of deals, ``total`` and ``next``, as filtering and sorting them all would give.

        Stored deals hold the same values a rendered row does (absent user fields read as
        None either way), so they are filtered and sorted without rendering; the sorted list
        is kept until a deal changes, and ranges on the order's leading fields come from it by
        bisection. With ``start=-1`` the scan stops at the first 50 matches (no count).
        """
        tz = self._tz
        keys = _order_keys(order)
        view = self._views.get((tuple(keys), tz))
        if view is None:
            ordered = _order_rows(list(self.deals.values()), dict(keys), tz)
            view = self._views[(tuple(keys), tz)] = _SortedView(ordered, keys, tz)
        span, residual = view.select(_conditions(flt), tz)
        offset = _offset(start)
        if not residual:  # the range is the answer: no row to test
            rows = view.rows
            first = span.start + max(offset, 0)
            chunk = rows[first : min(first + PAGE_SIZE, span.stop)]
            if offset == -1:
                return chunk, None, None
            count = len(span)
            return chunk, count, offset + PAGE_SIZE if offset + PAGE_SIZE < count else None
        matches: list[dict[str, Any]] = []
        for i in span:
            row = view.rows[i]
            if all(_test(op, row.get(f), w, tz) for op, f, w in residual):
                matches.append(row)
                if offset == -1 and len(matches) == PAGE_SIZE:
                    break
        return _page(matches, start)

    def _deal_update(self, params: dict[str, Any]) -> _Answer:
        p = _upper_keys(params)
        deal_id = self._deal_id(p)
        if deal_id not in self.deals:
            raise _not_found()
        fields = p.get("FIELDS")
        if not isinstance(fields, dict):
            raise RestError(400, "", "Parameter 'fields' must be array.")
        self._change_deal(deal_id, fields)
        return _Answer(True)

    def _deal_delete(self, params: dict[str, Any]) -> _Answer:
        deal_id = self._deal_id(_upper_keys(params))
        if deal_id not in self.deals:
            raise _not_found()
        del self.deals[deal_id]
        self._views.clear()
        self._fire("ONCRMDEALDELETE", {"FIELDS": {"ID": deal_id}})
        return _Answer(True)

    def add_stage(self, category: str, status_id: str, name: str = "", semantics: str | None = None) -> None:
        """Set up a deal stage of pipeline ``category`` (a new pipeline with its first stage),
        as the portal's settings do; ``semantics`` "S" won, "F" lost, None in progress."""
        with self._lock:
            if any(s[1] == status_id for s in self.stages):
                return
            sort = 10 * (1 + sum(1 for s in self.stages if s[0] == category))
            extra = {"S": "success", "F": "failure"}.get(semantics or "", "process")
            self.stages.append((category, status_id, name or status_id, sort, semantics, extra, "#39A8EF"))
            self._stage_semantic[status_id] = semantics or "P"

    def add_deal_user_field(self, name: str, label: str = "") -> None:
        """Declare a deal user field (``UF_CRM_...``), as an admin does in the CRM settings."""
        with self._lock:
            self.deal_user_fields.add(name)
            self.deal_user_field_labels[name] = label or name

    def _scope(self, params: dict[str, Any]) -> _Answer:
        # Without ``full``: the scopes this webhook was given; with it: every scope the portal has.
        full = _truthy(_upper_keys(params).get("FULL", False))
        return _Answer(sorted({*self.scopes, *_ALL_SCOPES}) if full else list(self.scopes))

    def _deal_fields(self, params: dict[str, Any]) -> _Answer:
        """Each deal field's description: type, flags and title; user fields add their labels."""
        out: dict[str, Any] = {}
        for name in DEAL_FIELDS:
            out[name] = {
                "type": _FIELD_TYPES.get(name, "string"),
                "isRequired": name == "TITLE",
                "isReadOnly": name in _DEAL_READ_ONLY,
                "isImmutable": name == "CATEGORY_ID",
                "isMultiple": False,
                "isDynamic": False,
                "title": _FIELD_TITLES.get(name, name.replace("_", " ").capitalize()),
            }
        for name in sorted(self.deal_user_fields):
            label = self.deal_user_field_labels.get(name, name)
            out[name] = {
                "type": "string",
                "isRequired": False,
                "isReadOnly": False,
                "isImmutable": False,
                "isMultiple": False,
                "isDynamic": True,
                "title": name,
                "listLabel": label,
                "formLabel": label,
                "filterLabel": label,
                "settings": {"SIZE": 20, "ROWS": 1, "REGEXP": "", "MIN_LENGTH": 0, "MAX_LENGTH": 0},
            }
        return _Answer(out)

    def _duplicate_findbycomm(self, params: dict[str, Any]) -> _Answer:
        """Ids of leads, contacts and companies holding one of the phones or e-mails: an object
        by entity type, or an empty array when nothing matched (PHP's empty array)."""
        p = _upper_keys(params)
        kind = str(p.get("TYPE") or "").upper()
        values = _as_list(p.get("VALUES"))
        if kind not in ("PHONE", "EMAIL") or not values:
            raise RestError(400, "ERROR_ARGUMENT", "Parameter 'type' or 'values' is not valid")
        if len(values) > 20:
            raise RestError(400, "ERROR_ARGUMENT", "Too many values: 20 at most")
        wanted = {_comm_key(kind, str(v)) for v in values}
        entity = str(p.get("ENTITY_TYPE") or "").upper()
        types = [entity] if entity in self.clients else list(self.clients)
        found: dict[str, list[int]] = {}
        for name in types:
            ids = [
                int(rid)
                for rid, record in self.clients[name].items()
                if any(_comm_key(kind, str(c["VALUE"])) in wanted for c in record.get(kind, []))
            ][:20]
            if ids:
                found[name] = ids
        return _Answer(found or [], None, None)

    def _requisite_list(self, params: dict[str, Any]) -> _Answer:
        p = _upper_keys(params)
        rows = _filter_rows([dict(r) for r in self.requisites], _as_map(p.get("FILTER")), self._tz)
        select = [str(x) for x in _as_list(p.get("SELECT"))]
        if select:
            rows = [{k: r.get(k) for k in ["ID", *select]} for r in rows]
        chunk, total, nxt = _page(rows, p.get("START"))
        return _Answer(chunk, total, nxt)

    def _status_list(self, params: dict[str, Any]) -> _Answer:
        p = _upper_keys(params)
        rows = []
        for n, (category, status_id, name, sort, sem, extra, color) in enumerate(self.stages):
            system = sort == 10 or extra in ("success", "failure")  # the stages a pipeline cannot lose
            rows.append(
                {
                    "ID": str(101 + 2 * n),
                    "ENTITY_ID": "DEAL_STAGE" if category == "0" else f"DEAL_STAGE_{category}",
                    "STATUS_ID": status_id,
                    "NAME": name,
                    "NAME_INIT": name if system else "",
                    "SORT": str(sort),
                    "SYSTEM": "Y" if system else "N",
                    "CATEGORY_ID": None if category == "0" else category,
                    "COLOR": color,
                    "SEMANTICS": sem,
                    "EXTRA": {"SEMANTICS": extra, "COLOR": color},
                }
            )
        rows = _filter_rows(rows, _as_map(p.get("FILTER")), self._tz)
        rows = _order_rows(rows, _as_map(p.get("ORDER")) or {"ENTITY_ID": "ASC", "SORT": "ASC"}, self._tz)
        chunk, total, nxt = _page(rows, p.get("START"))
        return _Answer(chunk, total, nxt)

    # --- tasks -------------------------------------------------------------------------------

    def _render_task(
        self, task: Mapping[str, Any], select: list[str] | None = None, with_uf: bool = True
    ) -> dict[str, Any]:
        wanted = {s.upper() for s in select or []}
        out: dict[str, Any] = {}
        for name, value in task.items():
            is_uf = name.startswith("UF_")
            picked = name in wanted or ("*" in wanted and not is_uf) or ("UF_*" in wanted and is_uf)
            if wanted and not picked:
                continue
            if not wanted and is_uf and not with_uf:
                continue
            out[_camel(name)] = value
        if not wanted or "STATUS" in wanted:
            out["subStatus"] = task["STATUS"]
        if not wanted:
            for key, uid in (("creator", task["CREATED_BY"]), ("responsible", task["RESPONSIBLE_ID"])):
                user = self.users.get(str(uid), {})
                full_name = f"{user.get('NAME', '')} {user.get('LAST_NAME', '')}".strip()
                out[key] = {
                    "id": str(uid),
                    "name": full_name,
                    "link": f"/company/personal/user/{uid}/",
                    "icon": "/bitrix/images/tasks/default_avatar.png",
                    "workPosition": user.get("WORK_POSITION", ""),
                }
        return out

    def _task_fields(self, params: dict[str, Any]) -> dict[str, Any]:
        fields = params.get("fields")
        if not isinstance(fields, dict) or not fields:
            raise RestError(400, "100", "Could not find value for parameter {fields} (internal error)")
        return {str(k).upper(): v for k, v in fields.items()}

    def _task_id(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("taskId")
        if raw is None:
            msg = "CTaskItem All parameters in the constructor must have real class type (internal error)"
            raise RestError(400, "100", msg)
        if not str(raw).isdigit():
            raise RestError(400, "0", "wrong task id")
        task = self.tasks.get(str(int(str(raw))))
        if task is None:
            raise RestError(400, "0", "Action on the task is not allowed")
        return task

    def _apply_task_fields(self, task: dict[str, Any], given: Mapping[str, Any]) -> None:
        for name, value in given.items():
            if name in ("ID", "CREATED_DATE", "CHANGED_DATE", "CHANGED_BY", "CLOSED_DATE", "CLOSED_BY"):
                continue
            if name in ("AUDITORS", "ACCOMPLICES", "UF_CRM_TASK", "TAGS"):
                task[name] = [str(v) for v in _as_list(value)]
            elif name in ("DEADLINE", "START_DATE_PLAN", "END_DATE_PLAN"):
                task[name] = self._norm_dt(value) if value not in (None, "") else None
            else:
                task[name] = _str_value(value)

    def _check_task(self, task: Mapping[str, Any]) -> None:
        if not str(task.get("TITLE") or "").strip():
            raise RestError(400, "ERROR_CORE", 'The "Name" field is not specified<br>')
        responsible = str(task.get("RESPONSIBLE_ID") or "")
        if not responsible or responsible == "0":
            raise RestError(400, "ERROR_CORE", 'The "Assignee" field is not specified<br>')
        if responsible not in self.users:
            raise RestError(400, "ERROR_CORE", 'The user specified in the "Assignee" field is not found<br>')
        if str(task.get("STATUS")) not in _TASK_STATUSES:
            raise RestError(400, "ERROR_CORE", "Invalid status<br>")

    def _task_add(self, params: dict[str, Any]) -> _Answer:
        given = self._task_fields(params)
        now, user = self._iso(self.clock()), str(self.webhook_user_id)
        task: dict[str, Any] = {
            "ID": "",
            "PARENT_ID": None,
            "TITLE": "",
            "DESCRIPTION": "",
            "PRIORITY": "1",
            "STATUS": "2",
            "RESPONSIBLE_ID": None,
            "CREATED_BY": user,
            "CREATED_DATE": now,
            "CHANGED_BY": user,
            "CHANGED_DATE": now,
            "STATUS_CHANGED_BY": user,
            "STATUS_CHANGED_DATE": now,
            "CLOSED_BY": None,
            "CLOSED_DATE": None,
            "DEADLINE": None,
            "GROUP_ID": "0",
            "DESCRIPTION_IN_BBCODE": "Y",
            "TASK_CONTROL": "N",
            "AUDITORS": [],
            "ACCOMPLICES": [],
            "UF_CRM_TASK": [],
        }
        self._apply_task_fields(task, given)
        self._check_task(task)
        task["ID"] = str(self._next_id("task"))
        self.tasks[task["ID"]] = task
        self._fire("ONTASKADD", {"FIELDS_AFTER": {"ID": task["ID"]}})
        return _Answer({"task": self._render_task(task)})

    def _task_get(self, params: dict[str, Any]) -> _Answer:
        raw = params.get("taskId")
        task = self.tasks.get(str(raw)) if raw is not None else None
        if task is None:
            return _Answer([])  # documented: an empty array when missing or not accessible
        select = [str(s) for s in _as_list(params.get("select"))] or None
        return _Answer({"task": self._render_task(task, select, with_uf=False)})

    def _task_list(self, params: dict[str, Any]) -> _Answer:
        select = [str(s) for s in _as_list(params.get("select"))] or None
        rows = _filter_rows(
            self.tasks.values(), _as_map(params.get("filter")), self._tz, aliases={"REAL_STATUS": "STATUS"}
        )
        rows = _order_rows(rows, _as_map(params.get("order")), self._tz, default=("ID", "DESC"))
        chunk, total, nxt = _page(rows, params.get("start"))
        return _Answer({"tasks": [self._render_task(t, select, with_uf=False) for t in chunk]}, total, nxt)

    def _task_update(self, params: dict[str, Any]) -> _Answer:
        task = self._task_id(params)
        given = self._task_fields(params)
        candidate = dict(task)
        self._apply_task_fields(candidate, given)
        self._check_task(candidate)
        self._save_task(task, candidate)
        return _Answer({"task": self._render_task(task)})

    def _task_complete(self, params: dict[str, Any]) -> _Answer:
        task = self._task_id(params)
        candidate = dict(task, STATUS="5", CLOSED_BY=str(self.webhook_user_id), CLOSED_DATE=self._iso(self.clock()))
        self._save_task(task, candidate)
        return _Answer({"task": self._render_task(task)})

    def _save_task(self, task: dict[str, Any], candidate: dict[str, Any]) -> None:
        now = self._iso(self.clock())
        if candidate["STATUS"] != task["STATUS"]:
            candidate["STATUS_CHANGED_DATE"], candidate["STATUS_CHANGED_BY"] = now, str(self.webhook_user_id)
        candidate["CHANGED_DATE"], candidate["CHANGED_BY"] = now, str(self.webhook_user_id)
        task.update(candidate)
        self._fire("ONTASKUPDATE", {"FIELDS_BEFORE": {"ID": task["ID"]}, "FIELDS_AFTER": {"ID": task["ID"]}})

    # --- users, comments, events -------------------------------------------------------------

    def _user_get(self, params: dict[str, Any]) -> _Answer:
        p = _upper_keys(params)
        flt = (
            dict(_as_map(p.get("FILTER")))
            if "FILTER" in p
            else {k: v for k, v in p.items() if k not in ("SORT", "ORDER", "START", "ADMIN_MODE")}
        )
        rows = list(self.users.values())
        active_key = next((k for k in flt if str(k).upper() == "ACTIVE"), None)
        if active_key is not None:
            # ACTIVE is a real boolean here; "true", "Y" and 1 all select current employees.
            wanted = _truthy(flt.pop(active_key))
            rows = [u for u in rows if u["ACTIVE"] is wanted]
        rows = _filter_rows(rows, flt, self._tz)
        rows = _order_rows(rows, {str(p.get("SORT") or "ID"): str(p.get("ORDER") or "ASC")}, self._tz)
        chunk, total, nxt = _page(rows, p.get("START"))
        return _Answer([dict(u, UF_DEPARTMENT=list(u["UF_DEPARTMENT"])) for u in chunk], total, nxt)

    def _department_get(self, params: dict[str, Any]) -> _Answer:
        p = _upper_keys(params)
        rows = _order_rows(list(self.departments.values()), {"ID": "ASC"}, self._tz)
        chunk, total, nxt = _page(rows, p.get("START"))
        return _Answer([dict(d) for d in chunk], total, nxt)

    def _user_current(self, params: dict[str, Any]) -> _Answer:
        return _Answer(dict(self.users[str(self.webhook_user_id)]))

    def _comment_add(self, params: dict[str, Any]) -> _Answer:
        fields = params.get("fields")  # lower-case only since crm 23.100.0
        if not isinstance(fields, dict):
            raise RestError(400, "100", "Required fields not provided")
        f = {str(k).upper(): v for k, v in fields.items()}
        if not f.get("ENTITY_ID") or not f.get("ENTITY_TYPE"):
            raise RestError(400, "100", "Required fields not provided")
        if not str(f.get("COMMENT") or "").strip():
            raise RestError(400, "INVALID_ARG_VALUE", "Empty comment")
        entity_id = str(f["ENTITY_ID"])
        if str(f["ENTITY_TYPE"]).lower() != "deal" or entity_id not in self.deals:
            raise RestError(400, "OWNER_NOT_FOUND", "Owner of the element not found")
        comment_id = self._next_id("comment")
        self.comments[str(comment_id)] = {
            "ID": str(comment_id),
            "ENTITY_ID": entity_id,
            "ENTITY_TYPE": "deal",
            "CREATED": self._iso(self.clock()),
            "COMMENT": str(f["COMMENT"]),
            "AUTHOR_ID": str(f.get("AUTHOR_ID") or self.webhook_user_id),
            "FILES": {},
        }
        return _Answer(comment_id)

    def _comment_list(self, params: dict[str, Any]) -> _Answer:
        p = {str(k).lower(): v for k, v in params.items()}
        flt = _as_map(p.get("filter"))
        if not any(str(k).upper().endswith("ENTITY_ID") for k in flt):
            raise RestError(400, "", "ENTITY_ID and ENTITY_TYPE are required in the filter")
        rows = _filter_rows(self.comments.values(), flt, self._tz)
        rows = _order_rows(rows, _as_map(p.get("order")), self._tz)
        chunk, total, nxt = _page(rows, p.get("start"))
        select = {str(s).upper() for s in _as_list(p.get("select"))}
        return _Answer([{k: v for k, v in c.items() if not select or k in select} for c in chunk], total, nxt)

    # --- activities (calls, meetings, e-mails logged on deals): crm.activity.* ---------------

    def _create_activity(self, fields: Mapping[str, Any]) -> str:
        given = {str(k).upper(): v for k, v in fields.items()}
        now = self._iso(self.clock())
        activity_id = str(self._next_id("activity"))
        activity: dict[str, Any] = {
            "ID": activity_id,
            "OWNER_TYPE_ID": "2",
            "OWNER_ID": None,
            "TYPE_ID": "2",
            "PROVIDER_ID": "VOXIMPLANT_CALL",
            "PROVIDER_TYPE_ID": "CALL",
            "SUBJECT": "",
            "COMPLETED": "N",
            "RESPONSIBLE_ID": str(self.webhook_user_id),
            "DIRECTION": "2",
            "START_TIME": now,
            "END_TIME": now,
            "DEADLINE": now,
            "CREATED": now,
            "LAST_UPDATED": now,
        }
        for name in ("START_TIME", "END_TIME", "DEADLINE"):
            if given.get(name):
                given[name] = self._norm_dt(given[name])
        if "PROVIDER_ID" not in given:  # the standard provider of the type given
            provider = _ACTIVITY_PROVIDERS.get(str(given.get("TYPE_ID") or "2"))
            if provider:
                activity["PROVIDER_ID"], activity["PROVIDER_TYPE_ID"] = provider
        elif str(given["PROVIDER_ID"]) == "REST_APP" and "TYPE_ID" not in given:
            activity["TYPE_ID"] = "6"  # an application's own type is a "provider" activity
        activity.update({k: _str_value(v) for k, v in given.items() if k in activity and k not in ("ID", "CREATED")})
        if str(activity["COMPLETED"]) not in ("Y", "N"):
            raise RestError(400, "", "COMPLETED is Y or N.")
        self.activities[activity_id] = activity
        return activity_id

    def _record_stage(self, deal: Mapping[str, Any], *, created: bool) -> None:
        """A row of the deal's stage history: 1 created, 2 moved to a stage in progress, 3 to a final one."""
        final = deal["STAGE_SEMANTIC_ID"] in ("S", "F")
        self.stage_history.append(
            {
                "ID": str(len(self.stage_history) + 1),
                "TYPE_ID": "1" if created else "3" if final else "2",
                "OWNER_ID": str(deal["ID"]),
                "CREATED_TIME": self._iso(self.clock()),
                "CATEGORY_ID": str(deal["CATEGORY_ID"]),
                "STAGE_SEMANTIC_ID": deal["STAGE_SEMANTIC_ID"],
                "STAGE_ID": deal["STAGE_ID"],
            }
        )

    def _stagehistory_list(self, params: dict[str, Any]) -> _Answer:
        if str(params.get("entityTypeId") or params.get("ENTITYTYPEID") or "") != "2":
            raise RestError(400, "", "Only deals (entityTypeId 2) are simulated.")
        rows = _filter_rows(self.stage_history, _as_map(params.get("filter")), self._tz)
        rows = _order_rows(rows, _as_map(params.get("order")), self._tz)
        chunk, total, nxt = _page(rows, params.get("start"))
        return _Answer({"items": chunk}, total, nxt)

    def _activity_add(self, params: dict[str, Any]) -> _Answer:
        fields = _upper_keys(params).get("FIELDS")
        if not isinstance(fields, dict):
            raise RestError(400, "", "Parameter 'fields' must be array.")
        return _Answer(int(self._create_activity(fields)))

    def _activity_list(self, params: dict[str, Any]) -> _Answer:
        p = _upper_keys(params)
        rows = _filter_rows(self.activities.values(), _as_map(p.get("FILTER")), self._tz)
        rows = _order_rows(rows, _as_map(p.get("ORDER")), self._tz)
        chunk, total, nxt = _page(rows, p.get("START"))
        select = [str(s) for s in _as_list(p.get("SELECT"))]
        wanted = None if not select or "*" in select else set(select) | {"ID"}
        return _Answer([{k: v for k, v in r.items() if wanted is None or k in wanted} for r in chunk], total, nxt)

    def _event_bind(self, params: dict[str, Any]) -> _Answer:
        p = {str(k).lower(): v for k, v in params.items()}
        event = str(p.get("event") or "").upper()
        handler = str(p.get("handler") or "")
        if event not in KNOWN_EVENTS:
            raise RestError(400, "ERROR_EVENT_NOT_FOUND", "Event not found")
        if not handler.startswith(("http://", "https://")):
            raise RestError(400, "WRONG_HANDLER_URL", "Wrong handler URL")
        self.bindings[event] = (self._next_id("handler"), handler)
        return _Answer(True)

    def _event_unbind(self, params: dict[str, Any]) -> _Answer:
        event = str({str(k).lower(): v for k, v in params.items()}.get("event") or "").upper()
        removed = self.bindings.pop(event, None)
        return _Answer({"count": 1 if removed else 0})

    def _event_get(self, params: dict[str, Any]) -> _Answer:
        return _Answer(
            [{"event": ev, "handler": url, "auth_type": "0", "offline": 0} for ev, (_, url) in self.bindings.items()]
        )


def _flatten(prefix: str, value: Any) -> list[tuple[str, str]]:
    """PHP's http_build_query: ``{"FIELDS": {"ID": "1"}}`` under ``data`` -> ``data[FIELDS][ID]=1``."""
    if isinstance(value, Mapping):
        return [pair for k, v in value.items() for pair in _flatten(f"{prefix}[{k}]", v)]
    if isinstance(value, (list, tuple)):
        return [pair for i, v in enumerate(value) for pair in _flatten(f"{prefix}[{i}]", v)]
    return [(prefix, "" if value is None else str(value))]


def _substitute(value: Any, sections: Mapping[str, Mapping[str, Any]]) -> Any:
    """Replace ``$result[key][FIELD]...`` with earlier commands' answers inside a batch."""
    if isinstance(value, dict):
        return {k: _substitute(v, sections) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, sections) for v in value]
    if not isinstance(value, str) or "$result" not in value:
        return value

    def resolve(m: re.Match[str]) -> tuple[bool, Any]:
        node: Any = sections[m.group(1)].get(m.group(2))
        for part in re.findall(r"\[([^\]]*)\]", m.group(3)):
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = None
        return node is not None, node

    whole = _SUBST.fullmatch(value)
    if whole:
        found, node = resolve(whole)
        return node if found else value

    def text(m: re.Match[str]) -> str:
        found, node = resolve(m)
        return str(_str_value(node)) if found else m.group(0)

    return _SUBST.sub(text, value)


def main(argv: list[str] | None = None) -> None:
    """Serve a simulator until interrupted: ``python -m simulators.bitrix24 --port 8081``."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators.bitrix24", description="Simulated Bitrix24 portal behind an inbound webhook."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default="simtoken", help="application token sent with outbound events")
    parser.add_argument("--handler-url", default=None, help="where ONCRMDEAL* events are posted")
    parser.add_argument("--user-id", type=int, default=1)
    parser.add_argument("--code", default="simcode", help="the inbound webhook's secret code")
    parser.add_argument("--domain", default="sim.bitrix24.ru")
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--burst", type=float, default=50)
    parser.add_argument("--deals", type=int, default=0, help="deals to create at start (ids 1..N)")
    parser.add_argument("--quiet", action="store_true", help="no line per request on stderr")
    args = parser.parse_args(argv)
    if args.quiet:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    sim = Bitrix24Simulator(
        webhook_user_id=args.user_id,
        webhook_code=args.code,
        application_token=args.token,
        domain=args.domain,
        rate=args.rate,
        burst=args.burst,
        handler_url=args.handler_url,
    )
    for i in range(args.deals):
        sim.add_deal({"TITLE": f"Deal {i + 1}", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW", "ASSIGNED_BY_ID": "1"})
    sim.serve_until_interrupted(
        args.host, args.port, lambda url: f"Bitrix24 simulator: webhook_url={url}{sim.webhook_base}"
    )


if __name__ == "__main__":
    main()
