"""Typed errors that describe what a CRM answered.

Like singer-sdk, errors split into retriable (try again later: rate limits, 5xx, timeouts,
resets) and fatal (the request itself is wrong: retrying cannot help). The dispatcher
retries the first kind with backoff and turns the second into a dead letter at once.
"""

from __future__ import annotations


class AdapterError(Exception):
    """A CRM call failed. Carries the CRM's own answer so the audit can show it."""

    def __init__(
        self,
        message: str,
        *,
        crm: str = "",
        method: str = "",
        status: int | None = None,
        code: str | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__(message)
        self.crm = crm
        self.method = method
        self.status = status
        self.code = code
        self.description = description

    def __str__(self) -> str:
        parts = [super().__str__()]
        if self.method:
            parts.append(f"method={self.method}")
        if self.status is not None:
            parts.append(f"http={self.status}")
        if self.code:
            parts.append(f"code={self.code}")
        if self.description:
            parts.append(f"description={self.description!r}")
        return " ".join(parts)


class RetriableError(AdapterError):
    """Transient: the same request may succeed later."""


class RateLimited(RetriableError):
    """The CRM refused because of its rate limit; ``retry_after`` seconds if it said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class MalformedAnswer(RetriableError):
    """A read answered 2xx with a body that cannot be decoded (truncated, not the API's
    envelope): the same read may succeed later."""


class MethodSuspended(RateLimited):
    """One method of the CRM is blocked for ``retry_after`` seconds (its server-time budget is
    spent); the CRM's other methods go on, so the request budget is not touched and the call is
    not retried in place: the wait is long, the caller reschedules."""


class AmbiguousWriteError(RetriableError):
    """A write whose answer was lost (timeout, reset, 5xx): it may have taken effect.

    The caller must look for its own earlier write before trying again.
    """


class FatalError(AdapterError):
    """The request is wrong or not allowed: retrying cannot help."""


class AuthError(FatalError):
    """The CRM refused our credentials or scope."""


class NotFoundError(FatalError):
    """The object does not exist (any more)."""


class AccessDenied(FatalError):
    """The CRM accepts our credentials but refuses us this one object (its permissions)."""


class WebhookError(Exception):
    """An incoming webhook is refused; ``status`` is the HTTP answer to give."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedWebhook(WebhookError):
    status = 400


class WebhookUnauthorized(WebhookError):
    """Missing or wrong credentials (HTTP Basic): 401."""

    status = 401


class WebhookForbidden(WebhookError):
    """A token that does not match: 403."""

    status = 403


class UnsupportedMediaType(WebhookError):
    status = 415
