"""One HTTP client for a Bitrix24 inbound webhook: throttled, retried, typed errors.

The portal's leaky bucket (2 hits/s, threshold 50) is mirrored on our side so we wait
instead of being refused; a refusal (503 QUERY_LIMIT_EXCEEDED) is retried with backoff
anyway. The bucket counts HTTP requests: a ``batch`` of up to 50 commands is one hit, so
reads and writes travel in full batches. Each method's server time is mirrored too
(``OperatingBudget``): a method near its limit is slowed, a blocked one suspended until its
reset while the others go on. Writes that may have taken effect (a timeout, a reset, a 5xx,
a 200 that cannot be read) are not retried here: the caller reconciles first (see
``AmbiguousWriteError``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any, TypeVar

import requests

from adapters.bitrix24.operating import OPERATING_LIMIT, OperatingBudget
from adapters.http import ApiRequest, ErrorAnswer, HttpClient
from adapters.paging import OffsetPaginator
from adapters.throttle import Throttle
from domain.errors import (
    AccessDenied,
    AdapterError,
    AuthError,
    FatalError,
    MethodSuspended,
    NotFoundError,
    RateLimited,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 50
BATCH_LIMIT = 50
# Requests of one read in flight at once. The portal runs each batch's commands in turn, so
# overlapping requests hides the network's round trips and our decoding behind its work;
# the throttle they share keeps them within the bucket together.
READ_CONCURRENCY = 8

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")

# Codes whose request certainly did not take effect: safe to resend even for writes.
_REFUSED_CODES = {"QUERY_LIMIT_EXCEEDED"}
_AUTH_CODES = {"NO_AUTH_FOUND", "expired_token", "insufficient_scope", "INVALID_CREDENTIALS", "ACCESS_DENIED"}


@dataclass(frozen=True)
class BatchResult:
    """Answers of one ``batch`` call, by command key."""

    result: dict[str, Any]
    errors: dict[str, AdapterError]
    total: dict[str, int]
    next: dict[str, int]


class Bitrix24Client(HttpClient):
    """Calls REST methods through an inbound webhook URL (``https://portal/rest/1/code/``); the
    secret is the URL's path, so no header authenticates."""

    vendor = "Bitrix24"
    log_label = "bitrix24"
    throttle: Throttle

    def __init__(
        self,
        webhook_url: str,
        *,
        crm: str = "bitrix24",
        rate: float = 2.0,
        burst: float = 50,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        operating_limit: float = OPERATING_LIMIT,
        wall_clock: Callable[[], float] = time.time,
        session: requests.Session | None = None,
        read_concurrency: int = READ_CONCURRENCY,
    ) -> None:
        super().__init__(
            crm=crm,
            timeout=timeout,
            max_attempts=max_attempts,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            session=session,
        )
        self.base = webhook_url.rstrip("/") + "/"
        self.use_throttle(rate, burst)
        self.operating = OperatingBudget(operating_limit, clock=wall_clock)
        self.read_concurrency = read_concurrency

    # --- single calls ---------------------------------------------------------------

    def call(self, method: str, params: Mapping[str, Any] | None = None, *, idempotent: bool = True) -> Any:
        """Call one method and return its ``result``; retries transient failures.

        ``idempotent=False`` marks a write that must not be resent blindly: when its answer
        is lost it raises ``AmbiguousWriteError`` for the caller to reconcile.
        """
        return self.call_full(method, params, idempotent=idempotent)["result"]

    def call_full(
        self, method: str, params: Mapping[str, Any] | None = None, *, idempotent: bool = True, units: int = 1
    ) -> dict[str, Any]:
        """Like ``call`` but return the whole envelope (``result``, ``total``, ``next``, ``time``)."""
        # A batch's commands are budgeted by their own methods (``batch`` checks them).
        budgeted = method != "batch"
        if budgeted:
            self._wait_for_method([method])
        request = ApiRequest("POST", f"{self.base}{method}.json", method, json=dict(params or {}), units=units)
        body: dict[str, Any] = self.send(request, idempotent=idempotent)
        if budgeted:
            self.operating.note(method, body.get("time"))
        return body

    def _wait_for_method(self, methods: Iterable[str]) -> None:
        """Refuse a suspended method without sending; slow a method near its time budget."""
        wait = 0.0
        for method in dict.fromkeys(m.lower() for m in methods):
            blocked = self.operating.suspended_for(method)
            if blocked > 0:
                raise self._suspended(method, blocked)
            wait = max(wait, self.operating.pace(method))
        if wait > 0:
            self._interruptible_sleep(wait)

    def _suspended(self, method: str, seconds: float) -> MethodSuspended:
        return MethodSuspended(
            f"Bitrix24 method suspended for {seconds:.0f} s (operating-time limit)",
            retry_after=seconds,
            crm=self.crm,
            method=method,
            code="OPERATION_TIME_LIMIT",
        )

    def decode(self, request: ApiRequest, response: requests.Response, *, idempotent: bool) -> dict[str, Any]:
        """The envelope of a successful answer; an ``error`` answer becomes a typed error."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict) and "error" not in body:
            if "result" not in body:
                raise self.undecodable(request.label, 200, idempotent=idempotent)
            return body
        if response.status_code == 200 and not isinstance(body, dict):
            raise self.undecodable(request.label, 200, idempotent=idempotent)
        code = str(body.get("error", "")) if isinstance(body, dict) else ""
        desc = str(body.get("error_description", "")) if isinstance(body, dict) else response.text[:200]
        raise self.classify(request.label, ErrorAnswer(response.status_code, code, desc), idempotent=idempotent)

    def classify(self, label: str, answer: ErrorAnswer, *, idempotent: bool) -> AdapterError:
        """Map a Bitrix24 error answer to a typed error (keyed on the code, not the HTTP status)."""
        kw = self.error_details(label, answer)
        code, desc, status = answer.code or "", answer.description, answer.status
        if code in _REFUSED_CODES:
            return RateLimited("Bitrix24 rate limit", **kw)
        if code == "OPERATION_TIME_LIMIT":
            # This method's server time is spent; the others go on, and the bucket is not full.
            return MethodSuspended("Bitrix24 operating-time limit", retry_after=self.operating.suspend(label), **kw)
        if code == "PORTAL_DELETED":
            return FatalError("Bitrix24 portal deleted", **kw)
        if code == "OVERLOAD_LIMIT":
            # A manual block by Bitrix24's staff: back off hard, never hammer.
            return RateLimited("Bitrix24 overload block", retry_after=60.0, **kw)
        if not code and desc.strip().lower().rstrip(".") == "access denied":
            # No code: the webhook user's permissions refuse this one object, not our credentials.
            return AccessDenied("Bitrix24 denies access to this object", **kw)
        if code in _AUTH_CODES or status in (401, 403):
            return AuthError("Bitrix24 refused the credentials", **kw)
        if desc.strip().lower() == "not found" or code == "ERROR_NOT_FOUND":
            return NotFoundError("not found", **kw)
        if status >= 500 or code == "INTERNAL_SERVER_ERROR":
            return self.lost_answer(idempotent)("Bitrix24 server error", **kw)
        return FatalError("Bitrix24 error", **kw)

    # --- batch and paging -------------------------------------------------------------

    def batch(self, commands: Mapping[str, tuple[str, Mapping[str, Any]]], *, idempotent: bool = True) -> BatchResult:
        """Run up to 50 commands in one request (one hit); errors come back per command.

        A command whose method is suspended is answered here with ``MethodSuspended`` and not
        sent; the others go.
        """
        if len(commands) > BATCH_LIMIT:
            raise ValueError(f"batch takes at most {BATCH_LIMIT} commands, got {len(commands)}")
        errors: dict[str, AdapterError] = {}
        for key, (method, _) in commands.items():
            blocked = self.operating.suspended_for(method)
            if blocked > 0:
                errors[key] = self._suspended(method, blocked)
        to_send = {key: command for key, command in commands.items() if key not in errors}
        if not to_send:
            return BatchResult({}, errors, {}, {})
        self._wait_for_method(method for method, _ in to_send.values())
        cmd = {key: f"{method}?{encode_query(params)}" for key, (method, params) in to_send.items()}
        body = self.call_full("batch", {"halt": 0, "cmd": cmd}, idempotent=idempotent, units=len(cmd))
        inner = body["result"] or {}
        if not isinstance(inner, dict):
            raise self.undecodable("batch", 200, idempotent=idempotent)
        for key, timing in _section(inner, "result_time").items():
            if key in to_send:
                self.operating.note(to_send[key][0], timing)
        results = _section(inner, "result")
        for key, err in _section(inner, "result_error").items():
            if key not in to_send:
                continue
            if isinstance(err, dict):
                code, desc = str(err.get("error", "")), str(err.get("error_description", ""))
            else:
                code, desc = "", str(err)
            errors[key] = self.classify(commands[key][0], ErrorAnswer(400, code, desc), idempotent=idempotent)
        return BatchResult(results, errors, _section(inner, "result_total"), _section(inner, "result_next"))

    @property
    def batch_size(self) -> int:
        """The most commands one ``batch`` carries: 50, whatever the bucket's size (a batch is
        one hit of it however many commands it holds)."""
        return BATCH_LIMIT

    def list_all(self, method: str, params: Mapping[str, Any], *, items_key: str | None = None) -> Iterator[Any]:
        """Yield every row of a paged list method, in order, following ``next``.

        The first page tells ``total``; the pages after it are asked for in ``batch`` requests
        of up to ``batch_size`` ``start`` offsets (one hit per 50 pages instead of one per
        page), up to ``read_concurrency`` of those requests in flight at once (each waits for
        its turn under the shared throttle and method budget, so together they stay within
        the bucket). Rows are yielded in page order; a page's error is raised when its turn
        comes, after every row before it.
        """
        pager = OffsetPaginator(PAGE_SIZE, crm=self.crm, method=method)
        body = self.call_full(method, {**params, "start": 0})
        rows = _rows(body["result"], items_key)
        yield from rows
        pager.advance(len(rows), body.get("next"), total=body.get("total"))

        def fetch(starts: list[int]) -> dict[int, tuple[Any, Any, Any, AdapterError | None]]:
            if len(starts) == 1:  # one page: a plain call, no batch envelope
                page = self.call_full(method, {**params, "start": starts[0]})
                return {starts[0]: (page["result"], page.get("next"), page.get("total"), None)}
            answer = self.batch({f"p{s}": (method, {**params, "start": s}) for s in starts})
            return {
                s: (
                    answer.result.get(f"p{s}"),
                    answer.next.get(f"p{s}"),
                    answer.total.get(f"p{s}"),
                    answer.errors.get(f"p{s}"),
                )
                for s in starts
            }

        while not pager.finished:
            # Every page up to the total is known: ask for them all (the total may have grown
            # since; the loop then goes on from where the pages end).
            starts = pager.upcoming(sys.maxsize)
            chunks = [starts[i : i + self.batch_size] for i in range(0, len(starts), self.batch_size)]
            for pages in self.in_order(fetch, chunks):
                for s, (result, following, total, error) in pages.items():
                    if error is not None:
                        raise error
                    rows = _rows(result, items_key)
                    yield from rows
                    pager.advance(len(rows), following, total=total, page_start=s)
                    if pager.finished:
                        return  # the list ended here (it may have shrunk since the first page)

    def in_order(self, fetch: Callable[[_Item], _Result], items: Sequence[_Item]) -> Iterator[_Result]:
        """``fetch(item)`` for each item, up to ``read_concurrency`` at once, the results yielded
        in the items' order (an error raised at its item's turn). At most that many results
        are held ahead of the consumer; stopping early lets the requests already out finish
        and sends no more."""
        if self.read_concurrency < 2 or len(items) < 2:
            for item in items:
                yield fetch(item)
            return
        todo = iter(items)
        with ThreadPoolExecutor(min(self.read_concurrency, len(items)), thread_name_prefix="b24-read") as pool:
            out: deque[Future[_Result]] = deque(
                pool.submit(fetch, item) for item in islice(todo, self.read_concurrency)
            )
            try:
                while out:
                    result = out.popleft().result()
                    for item in islice(todo, 1):
                        out.append(pool.submit(fetch, item))
                    yield result
            finally:
                for future in out:
                    future.cancel()


def _rows(result: Any, items_key: str | None) -> list[Any]:
    rows = result.get(items_key, []) if items_key and isinstance(result, dict) else result
    return list(rows or [])


def _section(inner: Any, key: str) -> dict[str, Any]:
    # Bitrix24 sends empty sections as [] instead of {}.
    value = inner.get(key) if isinstance(inner, dict) else None
    return value if isinstance(value, dict) else {}


def encode_query(params: Mapping[str, Any], prefix: str = "") -> str:
    """Encode nested params in PHP style (``filter[>ID]=5&select[]=ID``), as ``batch`` expects."""
    from urllib.parse import quote

    parts: list[str] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        parts.extend(_encode_value(name, value, quote))
    return "&".join(p for p in parts if p)


def _encode_value(name: str, value: Any, quote: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [encode_query(value, name)]
    if isinstance(value, (list, tuple)) and value and all(type(item) is str for item in value):
        return [_encode_strings(name, tuple(value))]
    if isinstance(value, (list, tuple)):
        if not value:
            return [f"{quote(name + '[]', safe='[]')}="]
        out: list[str] = []
        for i, item in enumerate(value):
            out.extend(_encode_value(f"{name}[{i}]", item, quote))
        return out
    if isinstance(value, bool):
        value = "Y" if value else "N"
    if value is None:
        value = ""
    return [f"{quote(name, safe='[]')}={quote(str(value), safe='')}"]


@lru_cache(maxsize=256)
def _encode_strings(name: str, values: tuple[str, ...]) -> str:
    # A list of names (a ``select``) is the same in every page of a read: encoded once.
    from urllib.parse import quote

    return "&".join(f"{quote(f'{name}[{i}]', safe='[]')}={quote(item, safe='')}" for i, item in enumerate(values))
