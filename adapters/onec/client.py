"""One HTTP client for 1C's standard OData interface: UTF-8 Basic auth, %20-encoded queries,
the ``odata.error`` envelope turned into typed errors, retries on transient failures.

1C answers errors with ``{"odata.error": {"code": "…", "message": {"lang": "ru", "value": "…"}}}``
(or XML, or an HTML page from the web server in front of it); its internal codes are sparse and
undocumented, so the HTTP status decides the error type. Reads are retried (tenacity) on 5xx,
timeouts and resets; a write whose answer was lost raises ``AmbiguousWriteError`` for the caller
to reconcile (look for its own earlier write) instead of being resent blindly.
"""

from __future__ import annotations

import base64
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import requests

from adapters.metrics import crm_call
from adapters.onec.odata import build_query
from adapters.retrying import RetryPolicy, never_sent
from domain.errors import (
    AdapterError,
    AmbiguousWriteError,
    AuthError,
    FatalError,
    NotFoundError,
    RateLimited,
    RetriableError,
)

log = logging.getLogger(__name__)


def basic_auth_utf8(username: str, password: str) -> str:
    """``Basic …`` with the credentials encoded as UTF-8 (``requests`` would use latin-1 and fail
    on a Cyrillic login such as «Интеграция»)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


class VersionConflict(FatalError):
    """``If-Match`` did not match the object's ``DataVersion`` (HTTP 412): re-read, then decide."""


class OneCClient:
    """Calls one base's ``…/odata/standard.odata/`` service."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        crm: str = "onec",
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        self.base = base_url.rstrip("/") + "/"
        self.crm = crm
        self.timeout = timeout
        self.session = session or requests.Session()
        self._auth = basic_auth_utf8(username, password)  # kept out of repr and logs
        self.retry = RetryPolicy(
            crm, "1c", max_attempts=max_attempts, backoff_initial=backoff_initial, backoff_max=backoff_max
        )
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"OneCClient({self.base!r}, crm={self.crm!r})"

    def interrupt(self) -> None:
        """Wake every retry wait and give up further retries (the process is stopping)."""
        self.retry.interrupt()

    def close(self) -> None:
        self.interrupt()
        self.session.close()

    # --- requests -------------------------------------------------------------------------

    def url(self, resource: str, options: Mapping[str, Any] | None = None) -> str:
        """The full URL of ``resource`` with ``$format=json`` and ``options`` encoded as 1C reads them."""
        params: dict[str, Any] = {"$format": "json"}
        params.update({k: v for k, v in (options or {}).items() if v is not None})
        path = quote(resource, safe="()'=,/$:")
        return f"{self.base}{path}?{build_query(params)}"

    def get(self, resource: str, options: Mapping[str, Any] | None = None) -> Any:
        """GET one resource (a set with options, or ``Set(guid'…')``); the decoded JSON body."""
        return self.request("GET", resource, options=options)

    def collection(
        self,
        entity_set: str,
        *,
        filter: str | None = None,
        select: list[str] | None = None,
        orderby: str | None = None,
        top: int | None = None,
        skip: int | None = None,
    ) -> list[Any]:
        """One page of a set: the ``value`` list."""
        options = {
            "$filter": filter,
            "$select": ",".join(select) if select else None,
            "$orderby": orderby,
            "$top": top,
            "$skip": skip or None,
        }
        body = self.get(entity_set, options)
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, list):
            raise FatalError("answer without value", crm=self.crm, method=f"GET {entity_set}", status=200)
        return value

    def iterate(
        self,
        entity_set: str,
        *,
        filter: str | None = None,
        select: list[str] | None = None,
        orderby: str = "Ref_Key",
        page_size: int = 100,
    ) -> Iterator[Any]:
        """Every entity of a filtered set, paged with ``$top``/``$skip`` (1C sends no next link)."""
        skip = 0
        while True:
            page = self.collection(entity_set, filter=filter, select=select, orderby=orderby, top=page_size, skip=skip)
            yield from page
            if len(page) < page_size:
                return
            skip += len(page)

    def create(self, entity_set: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a new object (201); a lost answer raises ``AmbiguousWriteError``."""
        result = self.request("POST", entity_set, json_body=dict(body), idempotent=False)
        if not isinstance(result, dict):
            raise FatalError("create answered without the object", crm=self.crm, method=f"POST {entity_set}")
        return result

    def request(
        self,
        method: str,
        resource: str,
        *,
        options: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> Any:
        """Send with retries; ``idempotent=False`` never resends a request that may have taken effect."""
        return self.retry.run(
            lambda: self._send(method, resource, options, json_body, headers, idempotent), idempotent=idempotent
        )

    def _send(
        self,
        method: str,
        resource: str,
        options: Mapping[str, Any] | None,
        json_body: Any,
        headers: Mapping[str, str] | None,
        idempotent: bool,
    ) -> Any:
        label = f"{method} {resource.split('(')[0]}"
        if self.retry.interrupted.is_set():  # never sent: safe to retry later, even for a write
            raise RetriableError("connector stopping; call not sent", crm=self.crm, method=label)
        all_headers = {"Authorization": self._auth, "Accept": "application/json", **(headers or {})}
        self.requests_sent += 1
        with crm_call(self.crm, label) as call:
            try:
                resp = self.session.request(
                    method, self.url(resource, options), json=json_body, headers=all_headers, timeout=self.timeout
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                cls = RetriableError if idempotent or never_sent(exc) else AmbiguousWriteError
                raise cls(f"{type(exc).__name__} calling 1C", crm=self.crm, method=label) from exc
            call["status"] = resp.status_code
            if resp.status_code in (200, 201, 204):
                if not resp.content:
                    return None
                try:
                    return resp.json()
                except ValueError as exc:
                    raise FatalError("answer is not JSON", crm=self.crm, method=label, status=resp.status_code) from exc
            raise self.error_for(label, resp, idempotent=idempotent)

    def error_for(self, label: str, resp: requests.Response, *, idempotent: bool) -> AdapterError:
        """Map an error answer (JSON envelope, XML ``<m:error>`` or an HTML page) to a typed error."""
        code, message = parse_error(resp)
        status = resp.status_code
        kw: dict[str, Any] = {"crm": self.crm, "method": label, "status": status, "code": code, "description": message}
        if status in (401, 403):
            return AuthError("1C refused the credentials or the OData role", **kw)
        if status == 404:
            return NotFoundError("not found in 1C (or not published for OData)", **kw)
        if status == 412:
            return VersionConflict("1C object changed since it was read (DataVersion)", **kw)
        if status == 429:
            retry_after = resp.headers.get("Retry-After")
            return RateLimited(
                "1C web server limit",
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
                **kw,
            )
        if status >= 500:
            cls = RetriableError if idempotent else AmbiguousWriteError
            return cls("1C server error", **kw)
        return FatalError("1C refused the request", **kw)


def parse_error(resp: requests.Response) -> tuple[str | None, str]:
    """1C's error code and message from any of its error shapes."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("odata.error"), dict):
        err = body["odata.error"]
        msg = err.get("message")
        text = msg.get("value") if isinstance(msg, dict) else msg
        return (str(err["code"]) if err.get("code") is not None else None), str(text or "")[:500]
    text = resp.text or ""
    if text.lstrip().startswith("<?xml") or "<m:error" in text:
        try:
            root = ET.fromstring(resp.content)
            ns = "{http://schemas.microsoft.com/ado/2007/08/dataservices/metadata}"
            return root.findtext(f"{ns}code"), (root.findtext(f"{ns}message") or "")[:500]
        except ET.ParseError:
            pass
    return None, text[:200]
