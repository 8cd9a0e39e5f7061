"""One HTTP client for 1C's standard OData interface: UTF-8 Basic auth, %20-encoded queries,
the ``odata.error`` envelope turned into typed errors, retries on transient failures.

1C answers errors with ``{"odata.error": {"code": "…", "message": {"lang": "ru", "value": "…"}}}``
(or XML, or an HTML page from the web server in front of it); its internal codes are sparse and
undocumented, so the HTTP status decides the error type. Reads are retried (tenacity) on 5xx,
timeouts and resets; a write whose answer was lost raises ``AmbiguousWriteError`` for the caller
to reconcile (look for its own earlier write) instead of being resent blindly.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import requests

from adapters.http import ApiRequest, BasicAuth, ErrorAnswer, HttpClient, basic_auth_utf8
from adapters.onec.odata import build_query
from adapters.paging import OffsetPaginator
from domain.errors import (
    AdapterError,
    AuthError,
    FatalError,
    NotFoundError,
    RateLimited,
)

__all__ = ["OneCClient", "VersionConflict", "basic_auth_utf8", "parse_error"]

log = logging.getLogger(__name__)


class VersionConflict(FatalError):
    """``If-Match`` did not match the object's ``DataVersion`` (HTTP 412): re-read, then decide."""


class OneCClient(HttpClient):
    """Calls one base's ``…/odata/standard.odata/``; no rate limit of its own to mirror."""

    vendor = "1C"
    log_label = "1c"

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
        super().__init__(
            crm=crm,
            timeout=timeout,
            max_attempts=max_attempts,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            auth=BasicAuth(username, password),
            headers={"Accept": "application/json"},
            session=session,
        )
        self.base = base_url.rstrip("/") + "/"

    def __repr__(self) -> str:
        return f"OneCClient({self.base!r}, crm={self.crm!r})"

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

    def metadata(self) -> str:
        """The service's ``$metadata`` (EDMX, always XML): the entity sets the base publishes."""
        text = self.send(ApiRequest("GET", f"{self.base}$metadata", "GET $metadata"), idempotent=True)
        return str(text or "")

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
        pager = OffsetPaginator(page_size, crm=self.crm, method=f"GET {entity_set}")
        while not pager.finished:
            page = self.collection(
                entity_set, filter=filter, select=select, orderby=orderby, top=page_size, skip=pager.start
            )
            yield from page
            pager.advance(len(page), pager.start + len(page) if len(page) >= page_size else None)

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
        label = f"{method} {resource.split('(')[0]}"
        request = ApiRequest(method, self.url(resource, options), label, json=json_body, headers=headers)
        return self.send(request, idempotent=idempotent)

    # --- hooks ----------------------------------------------------------------------------

    def decode(self, request: ApiRequest, response: requests.Response, *, idempotent: bool) -> Any:
        """The JSON body of a 200/201/204 (None when empty); an error answer becomes a typed error."""
        if response.status_code in (200, 201, 204):
            if not response.content:
                return None
            if request.label == "GET $metadata":
                return response.content.decode("utf-8")
            try:
                return response.json()
            except ValueError as exc:
                raise self.undecodable(request.label, response.status_code, idempotent=idempotent) from exc
        code, message = parse_error(response)
        answer = ErrorAnswer(response.status_code, code, message, response.headers)
        raise self.classify(request.label, answer, idempotent=idempotent)

    def classify(self, label: str, answer: ErrorAnswer, *, idempotent: bool) -> AdapterError:
        """1C's codes are sparse and undocumented: the HTTP status decides the error type."""
        kw = self.error_details(label, answer)
        status = answer.status
        if status in (401, 403):
            return AuthError("1C refused the credentials or the OData role", **kw)
        if status == 404:
            return NotFoundError("not found in 1C (or not published for OData)", **kw)
        if status == 412:
            return VersionConflict("1C object changed since it was read (DataVersion)", **kw)
        if status == 429:
            retry_after = answer.headers.get("Retry-After")
            return RateLimited(
                "1C web server limit",
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
                **kw,
            )
        if status >= 500:
            return self.lost_answer(idempotent)("1C server error", **kw)
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
