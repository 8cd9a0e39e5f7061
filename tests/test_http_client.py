"""The HTTP client base through a toy CRM client: retries by idempotency, lost and refused
answers, interrupts, rate-limit waits, authentication and the call log, against mocked HTTP."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests
import responses
from prometheus_client import REGISTRY

from adapters.http import Admission, ApiRequest, BasicAuth, ErrorAnswer, HttpClient, TokenHeader
from adapters.throttle import Throttle
from domain.errors import AdapterError, AmbiguousWriteError, FatalError, RateLimited, RetriableError

SECRET = "s3cret-path-code"
BASE = f"https://toy.example/api/{SECRET}"


class ToyClient(HttpClient):
    """A CRM whose secret sits in the URL and whose errors are ``{"error": code}``."""

    vendor = "Toy"
    log_label = "toy"

    def __init__(self, **kw: Any) -> None:
        super().__init__(
            crm="toy",
            timeout=7.0,
            max_attempts=3,
            backoff_initial=0.001,
            backoff_max=0.01,
            auth=TokenHeader("x-key", "header-token"),
            headers={"Accept": "application/json"},
            **kw,
        )
        self.released: list[tuple[bool, int | None]] = []

    def call(self, method: str, path: str, *, idempotent: bool = True) -> Any:
        return self.send(ApiRequest(method, BASE + path, f"{method} {path}", json={}), idempotent=idempotent)

    def release(self, admission: Admission, response: requests.Response | None, *, sent: bool = True) -> None:
        self.released.append((sent, response.status_code if response is not None else None))

    def decode(self, request: ApiRequest, response: requests.Response, *, idempotent: bool) -> Any:
        if response.status_code == 200:
            return response.json()
        answer = ErrorAnswer(response.status_code, str(response.json().get("error")), "refused")
        raise self.classify(request.label, answer, idempotent=idempotent)

    def classify(self, label: str, answer: ErrorAnswer, *, idempotent: bool) -> AdapterError:
        kw = self.error_details(label, answer)
        if answer.status == 429:
            return RateLimited("toy limit", **kw)
        if answer.status >= 500:
            return self.lost_answer(idempotent)("toy server error", **kw)
        return FatalError("toy error", **kw)


@responses.activate
def test_a_read_whose_answer_was_lost_is_retried() -> None:
    responses.get(BASE + "/deals", body=requests.ConnectionError("Connection reset by peer"))
    responses.get(BASE + "/deals", json={"error": "busy"}, status=502)
    responses.get(BASE + "/deals", json={"ok": 1})
    c = ToyClient()
    assert c.call("GET", "/deals") == {"ok": 1}
    assert c.requests_sent == 3 and c.released == [(True, None), (True, 502), (True, 200)]


@responses.activate
def test_a_write_whose_answer_was_lost_is_ambiguous_and_sent_once() -> None:
    responses.post(BASE + "/tasks", body=requests.ReadTimeout("read timed out"))
    with pytest.raises(AmbiguousWriteError) as err:
        ToyClient().call("POST", "/tasks", idempotent=False)
    assert str(err.value).startswith("ReadTimeout calling Toy") and len(responses.calls) == 1
    responses.reset()
    responses.post(BASE + "/tasks", json={"error": "oops"}, status=500)
    with pytest.raises(AmbiguousWriteError):
        ToyClient().call("POST", "/tasks", idempotent=False)
    assert len(responses.calls) == 1


@responses.activate
def test_a_refused_write_had_no_effect() -> None:
    responses.post(BASE + "/tasks", json={"error": "limit"}, status=429)
    responses.post(BASE + "/tasks", json={"id": 5})
    assert ToyClient().call("POST", "/tasks", idempotent=False) == {"id": 5}  # resent
    responses.reset()
    responses.post(BASE + "/tasks", body=requests.ConnectionError("[Errno 111] Connection refused"))
    with pytest.raises(RetriableError) as err:
        ToyClient().call("POST", "/tasks", idempotent=False)
    assert not isinstance(err.value, AmbiguousWriteError)  # never arrived: nothing to reconcile
    assert len(responses.calls) == 1  # a write is resent by the dispatcher later, not here


@responses.activate
def test_a_stopping_process_sends_nothing() -> None:
    c = ToyClient()
    c.interrupt()
    with pytest.raises(RetriableError, match="not sent"):
        c.call("POST", "/tasks", idempotent=False)
    assert len(responses.calls) == 0 and c.requests_sent == 0 and c.released == [(False, None)]


@responses.activate
def test_every_request_has_the_timeout_and_the_authenticators_headers() -> None:
    responses.get(BASE + "/deals", json={})
    ToyClient().call("GET", "/deals")
    call = responses.calls[0]
    assert call.request.headers["x-key"] == "header-token"
    assert call.request.headers["Accept"] == "application/json"
    assert call.request.req_kwargs["timeout"] == 7.0  # type: ignore[attr-defined]


def test_authenticators_keep_their_secrets_out_of_repr() -> None:
    basic = BasicAuth("Интеграция", "пароль")
    assert basic.headers() == {"Authorization": "Basic 0JjQvdGC0LXQs9GA0LDRhtC40Y860L/QsNGA0L7Qu9GM"}
    token = TokenHeader("x-api-token", "tok-123")
    assert "tok-123" not in repr(token) and "0JjQ" not in repr(basic)
    assert SECRET not in repr(ToyClient())


@responses.activate
def test_the_call_log_and_metrics_name_the_method_never_the_url(caplog: pytest.LogCaptureFixture) -> None:
    responses.get(BASE + "/deals/42", json={"error": "nope"}, status=400)
    before = REGISTRY.get_sample_value(
        "crmc_crm_calls_total", {"crm": "toy", "method": "GET /deals/{id}", "outcome": "nope"}
    )
    with caplog.at_level(logging.INFO, logger="connector.crm"), pytest.raises(FatalError):
        ToyClient().call("GET", "/deals/42")
    [line] = [r.getMessage() for r in caplog.records if r.name == "connector.crm"]
    assert "method=GET /deals/{id}" in line and "http=400" in line and "outcome=nope" in line  # the CRM's code
    assert SECRET not in caplog.text
    after = REGISTRY.get_sample_value(
        "crmc_crm_calls_total", {"crm": "toy", "method": "GET /deals/{id}", "outcome": "nope"}
    )
    assert (after or 0) - (before or 0) == 1


@responses.activate
def test_the_throttle_wait_is_counted() -> None:
    responses.get(BASE + "/deals", json={})
    c = ToyClient()
    slept: list[float] = []
    c.throttle = Throttle(1.0, 2.0, clock=lambda: 0.0, sleep=slept.append)  # 1 unit/s, one at a time
    before = REGISTRY.get_sample_value("crmc_rate_limit_wait_seconds_total", {"crm": "toy"}) or 0.0
    c.call("GET", "/deals")
    c.call("GET", "/deals")
    assert slept == [1.0]
    assert REGISTRY.get_sample_value("crmc_rate_limit_wait_seconds_total", {"crm": "toy"}) == before + 1.0
