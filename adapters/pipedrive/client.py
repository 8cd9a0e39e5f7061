"""One HTTP client for a Pipedrive company: API token, throttled, retried, typed errors.

Pipedrive counts requests per token over a rolling 2 s window and refuses the excess with
429 and ``x-ratelimit-*``/``retry-after`` headers; a client that keeps hammering gets a
403 HTML page from the CDN. A client-side rolling window (``RollingWindow``: at most
``burst_limit`` requests in any ``window`` seconds, a request counted from its send until
``window`` after its answer) keeps us under it, the server's rate headers reveal other
clients of the same token, and a refusal holds every call as long as the headers say.
Writes whose answer was lost (a timeout, a reset, a 5xx) are not resent here: the caller
reconciles first (``AmbiguousWriteError``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import requests

from adapters.http import Admission, ApiRequest, ErrorAnswer, HttpClient, TokenHeader
from adapters.paging import CursorPaginator, OffsetPaginator
from adapters.pipedrive.window import RollingWindow, Ticket
from domain.errors import (
    AdapterError,
    AuthError,
    FatalError,
    NotFoundError,
    RateLimited,
)

log = logging.getLogger(__name__)

V2_PAGE = 500  # the v2 maximum
V1_PAGE = 500
CDN_BLOCK_WAIT = 60.0  # the CDN's 403 after hammering: back off hard
BURST_LIMIT = 20  # requests per rolling window per API token on the Lite plan
WINDOW = 2.0  # seconds


class PipedriveClient(HttpClient):
    """Calls ``{base_url}/api/v2/...`` and ``{base_url}/v1/...`` with an API token.

    ``burst_limit`` and ``window``: the plan's rolling burst limit. ``rate`` and ``burst``
    (deprecated, off unless both are given; the settings fill in the other): a leaky bucket
    pacing the calls further, as the client did before it mirrored the window.
    """

    vendor = "Pipedrive"
    log_label = "pipedrive"

    def __init__(
        self,
        base_url: str,
        api_token: str,
        *,
        crm: str = "pipedrive",
        burst_limit: int = BURST_LIMIT,
        window: float = WINDOW,
        rate: float | None = None,
        burst: float | None = None,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(
            crm=crm,
            timeout=timeout,
            max_attempts=max_attempts,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            # Jitter as large as the first wait: many clients refused at once must not retry in step.
            jitter=backoff_initial,
            auth=TokenHeader("x-api-token", api_token),
            headers={"Accept": "application/json"},
            session=session,
        )
        self.base = base_url.rstrip("/")
        # Looked up at each wait, not bound now: one method decides how the client sleeps.
        self.window = RollingWindow(
            burst_limit, window, sleep=lambda s: self._interruptible_sleep(s), stopping=self.retry.interrupted
        )
        if rate is not None and burst is not None:
            self.use_throttle(rate, burst)
        self.rate_limited = 0  # 429 answers seen

    # --- single calls ---------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Mapping[str, Any] | None = None,
        idempotent: bool = True,
    ) -> dict[str, Any]:
        """Send one call and return the whole envelope (``data``, ``additional_data``).

        Retries rate limits always (a refused call had no effect), and other transient
        failures only when ``idempotent``; a non-idempotent write whose answer was lost
        raises ``AmbiguousWriteError`` for the caller to reconcile.
        """
        request = ApiRequest(method, self.base + path, f"{method} {path}", params=params, json=json)
        body: dict[str, Any] = self.send(request, idempotent=idempotent)
        return body

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET and return ``data``."""
        return self.request("GET", path, params=params).get("data")

    # --- hooks ------------------------------------------------------------------------

    def admit(self, request: ApiRequest) -> Admission:
        """The deprecated bucket if configured, then the rolling window, which books the moment
        the call really goes out."""
        waited = self.throttle.acquire() if self.throttle is not None else 0.0
        ticket = self.window.acquire()
        return Admission(waited + ticket.waited, ticket)

    def release(self, admission: Admission, response: requests.Response | None, *, sent: bool = True) -> None:
        """Give the window slot back: a call never sent frees it at once; a call answered or
        failed occupies the window a while after (it may have arrived). A 429 holds every call
        until the reset instead (``_hold``), so its count teaches nothing."""
        ticket: Ticket = admission.ticket
        if not sent:
            self.window.release(ticket, sent=False)
        elif response is None:
            self.window.release(ticket)
        else:
            self.window.release(ticket, headers=response.headers if response.status_code != 429 else None)

    def decode(self, request: ApiRequest, response: requests.Response, *, idempotent: bool) -> dict[str, Any]:
        """The envelope of a 2xx answer with ``success`` not false; any other becomes a typed error."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if 200 <= response.status_code < 300 and isinstance(body, dict) and body.get("success") is not False:
            return body
        if 200 <= response.status_code < 300 and not isinstance(body, dict):
            raise self.undecodable(request.label, response.status_code, idempotent=idempotent)
        error = str(body.get("error") or "") if isinstance(body, dict) else ""
        info = str(body.get("error_info") or "") if isinstance(body, dict) else response.text[:200]
        answer = ErrorAnswer(
            response.status_code,
            str(response.status_code),
            error or info,
            response.headers,
            enveloped=isinstance(body, dict),
        )
        raise self.classify(request.label, answer, idempotent=idempotent)

    def classify(self, label: str, answer: ErrorAnswer, *, idempotent: bool) -> AdapterError:
        """Map Pipedrive's error envelope (``success: false, error, error_info``) to a typed error."""
        kw = self.error_details(label, answer)
        status = answer.status
        if status == 429:
            self.rate_limited += 1
            retry_after = _retry_after(answer.headers)
            self._hold(retry_after or 1.0)
            return RateLimited("Pipedrive rate limit", retry_after=retry_after, **kw)
        if status == 403 and not answer.enveloped:
            # Not Pipedrive but its CDN: we kept calling after 429s. Back off hard.
            self._hold(CDN_BLOCK_WAIT)
            return RateLimited("Pipedrive CDN block", retry_after=CDN_BLOCK_WAIT, **kw)
        if status in (401, 402, 403):
            return AuthError("Pipedrive refused the token or its permissions", **kw)
        if status in (404, 410):
            return NotFoundError("not found", **kw)
        if status >= 500 or status in (408,):
            return self.lost_answer(idempotent)("Pipedrive server error", **kw)
        if 200 <= status < 300:
            return FatalError("Pipedrive answered without a success envelope", **kw)
        return FatalError("Pipedrive refused the request", **kw)

    def _hold(self, seconds: float) -> None:
        """Refused: every other call waits too, as long as the retry of this one will (the
        retry policy's wait is capped at ``backoff_max``, so is the hold)."""
        self.window.hold(min(seconds, self.retry.backoff_max))

    # --- paging -----------------------------------------------------------------------

    def iter_v2(self, path: str, params: Mapping[str, Any] | None = None, *, limit: int = V2_PAGE) -> Iterator[Any]:
        """Yield every row of a v2 list, following ``additional_data.next_cursor``."""
        query = {**(params or {}), "limit": limit}
        pager = CursorPaginator(crm=self.crm, method=f"GET {path}")
        while True:
            body = self.request("GET", path, params=query)
            yield from body.get("data") or []
            pager.advance((body.get("additional_data") or {}).get("next_cursor"))
            if pager.finished:
                return
            query = {**query, "cursor": pager.cursor}

    def iter_v1(self, path: str, params: Mapping[str, Any] | None = None, *, limit: int = V1_PAGE) -> Iterator[Any]:
        """Yield every row of a v1 list, following ``start`` while ``more_items_in_collection``."""
        pager = OffsetPaginator(limit, crm=self.crm, method=f"GET {path}")
        while not pager.finished:
            body = self.request("GET", path, params={**(params or {}), "start": pager.start, "limit": limit})
            rows = body.get("data") or []  # v1 answers an empty page with data null
            yield from rows
            page = (body.get("additional_data") or {}).get("pagination") or {}
            more = page.get("more_items_in_collection") and rows
            pager.advance(len(rows), (page.get("next_start") or pager.start + len(rows)) if more else None)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after`` or ``x-ratelimit-reset`` (seconds to the window's end)."""
    for name in ("retry-after", "x-ratelimit-reset"):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if value >= 0:
            return max(value, 0.1)
    return None
