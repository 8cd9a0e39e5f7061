"""The HTTP client every CRM client is built on: one request pipeline, CRM-specific hooks.

Like django-anymail's requests backend and singer-sdk's REST streams, the base owns what does
not depend on the CRM:

* the ``requests`` session and a timeout on every request;
* waiting for the rate limit (``admit``: our side's ``Throttle`` by default), with the wait
  counted in ``crmc_rate_limit_wait_seconds_total``;
* tenacity retries (``RetryPolicy``) and ``interrupt``/``close`` for a stopping process;
* the call metrics and log line (``adapters.metrics``: the method, never the URL, which may
  hold a secret);
* the one rule of lost answers: a read whose answer was lost is retried; a write whose
  answer was lost (a timeout, a reset, a 5xx) raises ``AmbiguousWriteError`` for the caller
  to reconcile; a refused call (a rate limit, a connection refused) had no effect and may
  be resent, write or not.

A CRM's client supplies the hooks: an ``Authenticator`` (a header, Basic auth, or nothing
when the secret is in the URL's path), ``decode`` (the CRM's envelope to the body, or a
typed error) and ``classify`` (an error answer to ``RateLimited``, ``RetriableError`` or
``AmbiguousWriteError``, ``AuthError``, ``NotFoundError`` or ``FatalError``).
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import requests

from adapters.causes import network_cause
from adapters.metrics import RATE_LIMIT_WAIT, crm_call
from adapters.retrying import RetryPolicy
from adapters.throttle import Throttle
from domain.errors import AdapterError, AmbiguousWriteError, MalformedAnswer, RetriableError

# --- authentication ------------------------------------------------------------------------------


class Authenticator:
    """How a client proves who it is. This one adds nothing: the secret is in the URL's path,
    as in a Bitrix24 inbound webhook."""

    def headers(self) -> dict[str, str]:
        return {}

    def __repr__(self) -> str:  # never the secret
        return f"{type(self).__name__}()"


class TokenHeader(Authenticator):
    """A token in a request header (Pipedrive's ``x-api-token``), never in the URL, so it cannot
    end up in access logs."""

    def __init__(self, name: str, token: str) -> None:
        self._headers = {name: token}

    def headers(self) -> dict[str, str]:
        return dict(self._headers)


class BasicAuth(Authenticator):
    """HTTP Basic with the credentials encoded as UTF-8 (1C logins are often Cyrillic)."""

    def __init__(self, username: str, password: str) -> None:
        self._header = basic_auth_utf8(username, password)

    def headers(self) -> dict[str, str]:
        return {"Authorization": self._header}


def basic_auth_utf8(username: str, password: str) -> str:
    """``Basic …`` with the credentials encoded as UTF-8 (``requests`` would use latin-1 and fail
    on a Cyrillic login such as «Интеграция»)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


# --- requests and answers --------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiRequest:
    """One request as the pipeline sends it; ``label`` names it in logs and metrics instead of
    the URL. ``units`` is how many API calls it carries (a Bitrix24 ``batch``: its commands),
    counted in ``commands_sent``; against the rate limit every request costs one hit."""

    method: str
    url: str
    label: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] | None = None
    units: int = 1


@dataclass(frozen=True)
class ErrorAnswer:
    """What a CRM's error answer said, taken apart by the client's ``decode``. ``enveloped`` is
    False when the body was not the CRM's own error envelope (a page from a proxy or CDN)."""

    status: int
    code: str | None = None
    description: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    enveloped: bool = True


@dataclass
class Admission:
    """A request's turn under the rate limit: the seconds it waited, and whatever the limiter
    needs back when the answer arrives."""

    waited: float = 0.0
    ticket: Any = None


def never_sent(exc: requests.RequestException) -> bool:
    """True when the request certainly never reached the server (refused connection)."""
    return isinstance(exc, requests.ConnectTimeout) or (
        isinstance(exc, requests.ConnectionError) and "refused" in str(exc).lower()
    )


# --- the client -----------------------------------------------------------------------------------


class HttpClient(ABC):
    """The request pipeline: admit under the rate limit, send with a timeout, measure, decode,
    classify errors, retry what may be retried. Subclasses build ``ApiRequest``s and supply
    ``decode`` and ``classify``; ``admit``/``release`` when their limiter needs more than a
    leaky bucket."""

    vendor: ClassVar[str]  # the CRM's name in error messages ("calling Bitrix24")
    log_label: ClassVar[str]  # its name in the retry log line

    def __init__(
        self,
        *,
        crm: str,
        timeout: float,
        max_attempts: int,
        backoff_initial: float,
        backoff_max: float,
        jitter: float | None = None,
        auth: Authenticator | None = None,
        headers: Mapping[str, str] | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.crm = crm
        self.timeout = timeout
        self.retry = RetryPolicy(
            crm,
            self.log_label,
            max_attempts=max_attempts,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            jitter=jitter,
        )
        self.throttle: Throttle | None = None
        self.session = session or requests.Session()
        self._headers = {**(auth or Authenticator()).headers(), **(headers or {})}
        self.requests_sent = 0  # HTTP requests, for call-economy figures
        self.commands_sent = 0  # units: a Bitrix24 batch counts each of its commands

    def __repr__(self) -> str:  # the URL may hold a secret (a Bitrix24 webhook's code)
        return f"{type(self).__name__}(crm={self.crm!r})"

    def interrupt(self) -> None:
        """Wake every retry or throttle wait and give up further retries (process stopping)."""
        self.retry.interrupt()

    def close(self) -> None:
        """Stop waiting and close the connection pool."""
        self.interrupt()
        self.session.close()

    def _interruptible_sleep(self, seconds: float) -> None:
        self.retry.interrupted.wait(seconds)

    def use_throttle(self, rate: float, burst: float) -> Throttle:
        """Pace the calls with a leaky bucket mirroring the CRM's; a refusal fills it."""
        self.throttle = self.retry.throttle = Throttle(rate, burst, sleep=self._interruptible_sleep)
        return self.throttle

    # --- the pipeline -----------------------------------------------------------------------------

    def send(self, request: ApiRequest, *, idempotent: bool = True) -> Any:
        """Send ``request`` until it succeeds, fails for good, the attempts run out or the process
        stops; return what ``decode`` made of the answer.

        Rate limits are always retried (a refused call had no effect); other transient
        failures only when ``idempotent``: a write whose answer was lost raises
        ``AmbiguousWriteError`` for the caller to reconcile.
        """
        return self.retry.run(lambda: self._attempt(request, idempotent=idempotent), idempotent=idempotent)

    def _attempt(self, request: ApiRequest, *, idempotent: bool) -> Any:
        admission = self.admit(request)
        if admission.waited:
            RATE_LIMIT_WAIT.labels(self.crm).inc(admission.waited)
        if self.retry.interrupted.is_set():  # never sent: safe to retry later, even for a write
            self.release(admission, None, sent=False)
            raise RetriableError("connector stopping; call not sent", crm=self.crm, method=request.label)
        self.requests_sent += 1
        self.commands_sent += request.units
        headers = {**self._headers, **request.headers} if request.headers else self._headers
        with crm_call(self.crm, request.label) as call:
            try:
                response = self.session.request(
                    request.method,
                    request.url,
                    params=request.params,
                    json=request.json,
                    headers=headers or None,
                    timeout=self.timeout,
                )
            except BaseException as exc:
                self.release(admission, None)  # it may have arrived: it counts as sent
                if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
                    cls = self.lost_answer(idempotent or never_sent(exc))
                    # The cause (the host that did not resolve, refused, timed out) goes into
                    # the message: every log line and audit entry that shows it names it.
                    raise cls(
                        f"{type(exc).__name__} calling {self.vendor}{network_cause(exc)}",
                        crm=self.crm,
                        method=request.label,
                    ) from exc
                raise
            self.release(admission, response)
            call["status"] = response.status_code
            return self.decode(request, response, idempotent=idempotent)

    # --- hooks ----------------------------------------------------------------------------------

    def admit(self, request: ApiRequest) -> Admission:
        """Wait for the request's turn under the rate limit (our side's leaky bucket, if any)."""
        return Admission(self.throttle.acquire(1) if self.throttle is not None else 0.0)

    def release(self, admission: Admission, response: requests.Response | None, *, sent: bool = True) -> None:  # noqa: B027
        """The request's answer arrived (``response``), it failed without one, or it was never
        ``sent``; a limiter that counts requests in flight takes its slot back here."""

    @abstractmethod
    def decode(self, request: ApiRequest, response: requests.Response, *, idempotent: bool) -> Any:
        """The body of a successful answer; raise ``classify``'s error for any other."""

    @abstractmethod
    def classify(self, label: str, answer: ErrorAnswer, *, idempotent: bool) -> AdapterError:
        """The typed error for an error answer (use ``lost_answer`` for a server failure)."""

    # --- helpers for the hooks ----------------------------------------------------------------------

    @staticmethod
    def lost_answer(idempotent: bool) -> type[RetriableError]:
        """The error for a request whose answer was lost: retried when it is a read, the
        caller's to reconcile when it is a write (it may have taken effect)."""
        return RetriableError if idempotent else AmbiguousWriteError

    def undecodable(self, label: str, status: int, *, idempotent: bool) -> RetriableError:
        """The error for a success answer whose body cannot be decoded (cut short on the way, a
        proxy's page): a read is retried; a write may have taken effect, so it is reconciled."""
        cls = MalformedAnswer if idempotent else AmbiguousWriteError
        return cls(f"{self.vendor} answer could not be decoded", crm=self.crm, method=label, status=status)

    def error_details(self, label: str, answer: ErrorAnswer) -> dict[str, Any]:
        """The keyword arguments of an ``AdapterError`` describing ``answer``."""
        return {
            "crm": self.crm,
            "method": label,
            "status": answer.status,
            "code": answer.code,
            "description": answer.description,
        }
