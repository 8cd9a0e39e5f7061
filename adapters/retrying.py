"""The retries of the HTTP client base (``adapters.http``): tenacity with backoff, rate-limit
waits, and waits that a stopping process can cut short.

Each client decides what is retriable by the errors it raises (``RetriableError`` and its
kinds); this runs the attempts. A non-idempotent write is retried only on ``RateLimited``
(a refused call had no effect): any other lost answer is the caller's to reconcile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential_jitter,
)

from adapters.throttle import Throttle
from domain.errors import MethodSuspended, RateLimited, RetriableError

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryPolicy:
    """Retries for one client; ``sleep`` is the interruptible wait its throttle uses too."""

    def __init__(
        self,
        crm: str,
        label: str,
        *,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        jitter: float | None = None,
    ) -> None:
        self.crm = crm
        self.label = label
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.jitter = jitter
        self.interrupted = threading.Event()
        self.throttle: Throttle | None = None  # told when the server refused us anyway

    def interrupt(self) -> None:
        """Wake every retry or throttle wait and give up further retries (process stopping)."""
        self.interrupted.set()

    def sleep(self, seconds: float) -> None:
        self.interrupted.wait(seconds)

    def run(self, send: Callable[[], T], *, idempotent: bool) -> T:
        """Call ``send`` until it succeeds, a non-retriable error, the attempts run out, or
        the process stops."""
        retryable: tuple[type[BaseException], ...] = (RetriableError,) if idempotent else (RateLimited,)
        retrying = Retrying(
            # A suspended method waits minutes: the caller reschedules instead of holding a thread.
            retry=retry_if_exception_type(retryable) & retry_if_not_exception_type(MethodSuspended),
            stop=stop_after_attempt(self.max_attempts) | stop_when_event_set(self.interrupted),
            wait=self.wait,
            sleep=self.sleep,
            reraise=True,
            before_sleep=self._log,
        )
        for attempt in retrying:
            with attempt:
                return send()
        raise AssertionError("unreachable")  # pragma: no cover

    def wait(self, state: RetryCallState) -> float:
        """Exponential backoff with jitter; a rate limit waits at least what the server said."""
        exc = state.outcome.exception() if state.outcome else None
        jitter = {} if self.jitter is None else {"jitter": self.jitter}
        base = float(wait_exponential_jitter(multiplier=self.backoff_initial, max=self.backoff_max, **jitter)(state))
        if isinstance(exc, RateLimited):
            if self.throttle is not None:
                self.throttle.penalise()
            if exc.retry_after:
                # Waiting less than the server said only earns another refusal.
                return max(base, min(exc.retry_after, self.backoff_max))
        return base

    def _log(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s retry crm=%s attempt=%s error=%s", self.label, self.crm, state.attempt_number, exc)
